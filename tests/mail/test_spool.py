"""The spool on a real temp folder: durability layout, atomicity, crash leftovers, group commit."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from mail.spool import MAGIC, Envelope, Recipient, Spool, SpoolError, envelope_stub, new_id


def _envelope(n: int = 1) -> Envelope:
    return envelope_stub(mail_from="a@bo.gov.vn",
                         recipients=[Recipient(f"r{i}@example.org", notify=["FAILURE", "DELAY"],
                                               orcpt="rfc822;r@example.org") for i in range(n)],
                         ret="HDRS", envid="ENV1", smtputf8=True, agency="bo", account="u1", client="127.0.0.1")


def _spool(tmp_path: Path) -> Spool:
    spool = Spool(tmp_path / "spool")
    spool.open()
    return spool


async def test_commit_then_load_round_trip(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    env = _envelope(2)
    qid = await spool.commit(env, b"Subject: x\r\n\r\nhello\r\n")
    assert spool.ids() == [qid]
    assert spool.content(qid) == b"Subject: x\r\n\r\nhello\r\n"
    again = Spool(tmp_path / "spool").load(qid)
    assert again == env
    assert again.recipients[0].notify == ["FAILURE", "DELAY"]
    assert again.ret == "HDRS" and again.envid == "ENV1" and again.smtputf8
    assert list(spool.tmp.iterdir()) == []


async def test_save_updates_delivery_state_durably(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    env = _envelope(2)
    qid = await spool.commit(env, b"x\r\n")
    env.recipients[0].status = "delivered"
    env.recipients[1].last_error = "451 4.4.1 try later"
    env.attempts, env.next_try, env.hold = 1, 12345.0, True
    await spool.save(env)
    loaded = Spool(tmp_path / "spool").load(qid)
    assert [r.status for r in loaded.recipients] == ["delivered", "pending"]
    assert loaded.recipients[1].last_error == "451 4.4.1 try later"
    assert (loaded.attempts, loaded.next_try, loaded.hold) == (1, 12345.0, True)
    assert [r.address for r in loaded.pending] == ["r1@example.org"]
    assert list(spool.tmp.iterdir()) == []


async def test_remove_forgets_both_files(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    qid = await spool.commit(_envelope(), b"x\r\n")
    await spool.remove(qid)
    assert spool.ids() == [] and spool.count() == 0
    assert list(spool.queue.iterdir()) == []


async def test_remove_many_forgets_a_batch(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    ids = [await spool.commit(_envelope(), f"m{i}\r\n".encode()) for i in range(5)]
    env = spool.load(ids[0])
    env.attempts = 1
    await spool.save(env)
    await spool.remove_many(ids[:3] + ["not-there"])
    assert spool.ids() == sorted(ids[3:])
    assert sorted(p.name for p in spool.queue.iterdir()) == sorted(f"{i}.msg" for i in ids[3:])


async def test_commit_parts_are_written_in_order(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    qid = await spool.commit_parts(_envelope(), (b"Received: x\r\n", b"", b"Subject: y\r\n\r\nz\r\n"))
    assert spool.content(qid) == b"Received: x\r\nSubject: y\r\n\r\nz\r\n"
    raw = (spool.queue / f"{qid}.msg").read_bytes()
    assert raw.startswith(MAGIC + b"%d {" % len(spool.content(qid)))


async def test_concurrent_commits_all_land(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    ids = await asyncio.gather(*(spool.commit(_envelope(), f"m{i}\r\n".encode()) for i in range(50)))
    assert sorted(ids) == spool.ids() and len(set(ids)) == 50
    assert {spool.content(q) for q in ids} == {f"m{i}\r\n".encode() for i in range(50)}


def test_ids_sort_by_time() -> None:
    ids = [new_id() for _ in range(200)]
    assert ids == sorted(ids)


def test_open_removes_crash_leftovers(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    (spool.tmp / "abc.msg").write_bytes(b"half")
    (spool.tmp / "abc.env").write_bytes(b"{")
    (spool.queue / "def.msg").write_bytes(b"renamed but no envelope: never acknowledged")
    (spool.queue / "ghi.msg").write_bytes(b"kept")
    (spool.queue / "ghi.env").write_bytes(_envelope().to_json())
    env = _envelope()
    header = MAGIC + b"12 " + env.to_json() + b"\n"
    (spool.queue / "jkl.msg").write_bytes(header + b"cut short")  # crash before the sync: 9 of 12
    (spool.queue / "mno.msg").write_bytes(header[:40])  # crash inside the header
    (spool.queue / f"{env.id}.msg").write_bytes(header + b"twelve bytes")  # complete: accepted
    (spool.queue / "pqr.env").write_bytes(env.to_json())  # remove() cut between its two unlinks
    removed = Spool(tmp_path / "spool").open()
    assert sorted(removed) == ["abc.env", "abc.msg", "def.msg", "jkl.msg", "mno.msg", "pqr.env"]
    assert sorted(p.name for p in spool.queue.iterdir()) == sorted(["ghi.env", "ghi.msg", f"{env.id}.msg"])
    assert spool.load(env.id) == env and spool.content(env.id) == b"twelve bytes"
    assert list(spool.tmp.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
async def test_failed_commit_raises_and_leaves_nothing(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    spool.tmp.chmod(0o500)  # writes fail like a full or broken disk would
    try:
        with pytest.raises(SpoolError):
            await spool.commit(_envelope(), b"x\r\n")
    finally:
        spool.tmp.chmod(0o700)
    assert list(spool.tmp.iterdir()) == [] and list(spool.queue.iterdir()) == []


async def test_failed_commit_after_rename_leaves_nothing(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    spool.queue = tmp_path / "missing" / "queue"  # the rename into queue/ fails
    with pytest.raises(SpoolError):
        await spool.commit(_envelope(), b"x\r\n")
    assert list(spool.tmp.iterdir()) == []


async def test_envelopes_skips_unreadable(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    (spool.queue / "zzz.msg").write_bytes(MAGIC + b"{not json\nx\r\n")
    (spool.queue / "yyy.msg").write_bytes(b"x\r\n")
    (spool.queue / "yyy.env").write_bytes(b"{not json")
    good = _envelope()
    await spool.commit(good, b"x\r\n")
    assert [e.id for e in spool.envelopes()] == [good.id]


# -- the spool's I/O threads and the inline commit ------------------------------------------------


async def test_inline_commit_is_the_same_durable_file(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    env = _envelope(2)
    qid = await spool.commit_parts(env, (b"Received: x\r\n", b"Subject: y\r\n\r\nz\r\n"), inline=True)
    assert spool._threads is None  # no thread involved
    assert Spool(tmp_path / "spool").load(qid) == env
    assert spool.content(qid) == b"Received: x\r\nSubject: y\r\n\r\nz\r\n"
    assert spool._complete(spool.queue / f"{qid}.msg")


async def test_failed_inline_commit_raises_and_leaves_nothing(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    spool.queue = tmp_path / "missing" / "queue"
    with pytest.raises(SpoolError):
        await spool.commit_parts(_envelope(), (b"x\r\n",), inline=True)
    assert list((tmp_path / "spool" / "queue").iterdir()) == []


async def test_io_threads_return_results_and_errors() -> None:
    from mail.spool import IoThreads

    threads = IoThreads(4, "t")
    try:
        assert await threads.call(lambda a, b: a + b, 2, 3) == 5
        with pytest.raises(ZeroDivisionError):
            await threads.call(lambda: 1 / 0)
        assert await threads.call(lambda: "still working") == "still working"
    finally:
        threads.shutdown()
    assert threads._threads == []


async def test_io_threads_run_concurrent_calls_in_parallel() -> None:
    """Concurrent sessions' fsyncs must overlap (group commit): four calls that each wait for
    the other three only finish if four threads run them at once."""
    import threading

    from mail.spool import IoThreads

    threads = IoThreads(4, "t")
    barrier = threading.Barrier(4, timeout=30)
    try:
        arrivals = await asyncio.gather(*(threads.call(barrier.wait) for _ in range(4)))
        assert sorted(arrivals) == [0, 1, 2, 3]
        assert len(threads._threads) == 4
    finally:
        threads.shutdown()


async def test_io_threads_survive_a_cancelled_caller() -> None:
    import threading

    from mail.spool import IoThreads

    threads = IoThreads(2, "t")
    release = threading.Event()
    try:
        blocked = threads.call(release.wait, 30)
        blocked.cancel()  # the awaiting session went away; the work still finishes
        release.set()
        assert await threads.call(lambda: 7) == 7
    finally:
        threads.shutdown()
    await asyncio.sleep(0)  # the threads' last hand-backs, queued before they ended
    assert threads._in_flight == 0


async def test_load_accepted_reads_envelope_and_content_at_once(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    env = _envelope(2)
    qid = await spool.commit_parts(env, (b"Received: x\r\n", b"Subject: y\r\n\r\nz\r\n"))
    assert spool.load_accepted(qid) == (env, b"Received: x\r\nSubject: y\r\n\r\nz\r\n")
    path = spool.queue / f"{qid}.msg"
    path.write_bytes(path.read_bytes()[:-3])  # a commit still being written
    with pytest.raises(FileNotFoundError):
        spool.load_accepted(qid)
    (spool.queue / "nohead.msg").write_bytes(b"x\r\n")
    with pytest.raises(FileNotFoundError):
        spool.load_accepted("nohead")
