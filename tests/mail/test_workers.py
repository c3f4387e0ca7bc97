"""``mail.workers = 2``: a child process accepts on the same ports (SO_REUSEPORT) into the same
spool; everything accepted by either process is delivered; the child stops with the service."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiosmtplib

from tests.mail.conftest import mail_config, start_relay, stop_relay
from tests.mail.sinks import Sink, free_port


async def test_two_accept_processes_deliver_everything(tmp_path: Path) -> None:
    sink_port = free_port()
    sink = Sink("127.0.0.9", sink_port)
    await sink.start()
    relay = await start_relay(mail_config(tmp_path, workers=2), next_hop=f"127.0.0.9:{sink_port}")
    try:
        (child,) = relay.service.accept_workers.procs
        assert child.returncode is None

        async def send(i: int) -> None:
            # One connection per message, as smtp-source does: the kernel spreads them.
            await aiosmtplib.send(f"From: a@far.example\r\nSubject: m{i}\r\n\r\nbody {i}\r\n".encode(),
                                  sender="a@far.example", recipients=["vanthu@dttg.gov.vn"],
                                  hostname="127.0.0.1", port=relay.port("mx"), start_tls=False)

        await asyncio.gather(*(send(i) for i in range(40)))
        messages = await sink.wait_messages(40)
        subjects = {re.search(rb"Subject: (m\d+)", m.content).group(1) for m in messages}  # type: ignore[union-attr]
        assert subjects == {f"m{i}".encode() for i in range(40)}

        # A child that dies is replaced, and the new one accepts on the same port.
        workers = relay.service.accept_workers
        workers.started.clear()
        child.kill()
        await asyncio.wait_for(workers.started.wait(), 60)
        (child,) = workers.procs
        assert child.returncode is None
        await asyncio.gather(*(send(i) for i in range(40, 50)))
        await sink.wait_messages(50)
    finally:
        await stop_relay(relay)
        await sink.stop()
    assert child.returncode is not None  # stopped with the service


async def test_children_counters_reach_the_primary(tmp_path: Path) -> None:
    relay = await start_relay(mail_config(tmp_path, workers=2), next_hop="127.0.0.9:9")
    try:
        await asyncio.gather(*(aiosmtplib.send(b"Subject: x\r\n\r\nx\r\n", sender="a@far.example",
                                               recipients=["vanthu@dttg.gov.vn"], hostname="127.0.0.1",
                                               port=relay.port("mx"), start_tls=False) for _ in range(20)))
    finally:
        await stop_relay(relay)  # children report their counters at their stop
    assert relay.service.metrics.accepted.labels("mx")._value.get() == 20


def test_counter_deltas_add_up_per_child() -> None:
    from prometheus_client import CollectorRegistry

    from mail.metrics import MailMetrics
    from mail.workers import add_counter_deltas, counter_snapshot

    primary, child = MailMetrics(CollectorRegistry()), MailMetrics(CollectorRegistry())
    primary.accepted.labels("mx").inc(3)
    seen: dict = {}  # type: ignore[type-arg]
    child.accepted.labels("mx").inc(2)
    child.rejected.labels("relay_denied").inc()
    add_counter_deltas(primary, seen, counter_snapshot(child))
    child.accepted.labels("mx").inc(4)
    add_counter_deltas(primary, seen, counter_snapshot(child))
    add_counter_deltas(primary, seen, counter_snapshot(child))  # nothing new: nothing added
    assert primary.accepted.labels("mx")._value.get() == 3 + 6
    assert primary.rejected.labels("relay_denied")._value.get() == 1
    fresh: dict = {}  # type: ignore[type-arg]  # a replacement child counts from zero again
    restarted = MailMetrics(CollectorRegistry())
    restarted.accepted.labels("mx").inc()
    add_counter_deltas(primary, fresh, counter_snapshot(restarted))
    assert primary.accepted.labels("mx")._value.get() == 10


def test_workers_zero_means_one_per_core(tmp_path: Path) -> None:
    import os

    cfg = mail_config(tmp_path, workers=0)
    assert cfg.mail.accept_processes() == (os.cpu_count() or 1)
    assert ("workers", "0 (one per CPU core) or a number of processes from 1 to 64") in \
        mail_config(tmp_path, workers=-1).mail.validate()


async def test_separate_delivery_children_accept_and_the_main_process_delivers(tmp_path: Path) -> None:
    """``separate_delivery``: every accept process is a child; the main process holds the ports
    without listening, and delivers all the children queue (their ids over the pipe)."""
    sink_port = free_port()
    sink = Sink("127.0.0.9", sink_port)
    await sink.start()
    relay = await start_relay(mail_config(tmp_path, workers=2, separate_delivery=True),
                              next_hop=f"127.0.0.9:{sink_port}")
    try:
        service = relay.service
        workers = service.accept_workers
        assert len(workers.procs) == 2 and service.servers == {}
        assert service.worker is not None and service.worker.scans_spool

        async def send(i: int) -> None:
            await aiosmtplib.send(f"From: a@far.example\r\nSubject: m{i}\r\n\r\nbody {i}\r\n".encode(),
                                  sender="a@far.example", recipients=["vanthu@dttg.gov.vn"],
                                  hostname="127.0.0.1", port=relay.port("mx"), start_tls=False)

        for i in range(5):  # one session at a time: each child commits inline
            await send(i)
        await asyncio.gather(*(send(i) for i in range(5, 30)))  # concurrent: the spool's threads
        messages = await sink.wait_messages(30)
        subjects = {re.search(rb"Subject: (m\d+)", m.content).group(1) for m in messages}  # type: ignore[union-attr]
        assert subjects == {f"m{i}".encode() for i in range(30)}
        assert service.metrics.deliveries.labels("delivered")._value.get() == 30  # all by this process

        # A replaced child listens on the held port again.
        workers.started.clear()
        workers.procs[0].kill()
        await asyncio.wait_for(workers.started.wait(), 60)
        await asyncio.gather(*(send(i) for i in range(30, 40)))
        await sink.wait_messages(40)
    finally:
        await stop_relay(relay)
        await sink.stop()
    metrics = relay.service.metrics
    assert metrics.deliveries.labels("delivered")._value.get() == 40
    # The children's counters (the killed one's unreported part is lost with it).
    assert 10 <= metrics.accepted.labels("mx")._value.get() <= 40
    assert all(p.returncode is not None for p in workers.procs)


def test_accept_children_count(tmp_path: Path) -> None:
    assert mail_config(tmp_path, workers=2).mail.accept_children() == 1
    assert mail_config(tmp_path, workers=2, separate_delivery=True).mail.accept_children() == 2
    assert mail_config(tmp_path, workers=1, separate_delivery=True).mail.accept_children() == 1
    assert mail_config(tmp_path, workers=1).mail.accept_children() == 0


async def test_submission_with_starttls_and_implicit_tls_through_child_processes(tmp_path: Path) -> None:
    """Children run on uvloop (when installed): aiosmtpd's STARTTLS switches the transport's
    protocol under it, and implicit TLS is uvloop's own TLS; both must work there."""
    from tests.mail.conftest import DOMAIN, PASSWORD, client_tls

    sink_port = free_port()
    sink = Sink("127.0.0.9", sink_port)
    await sink.start()
    relay = await start_relay(mail_config(tmp_path, workers=2, separate_delivery=True),
                              next_hop=f"127.0.0.9:{sink_port}")
    try:
        assert relay.service.servers == {}  # every session below is a child's

        async def submit(i: int, implicit: bool) -> None:
            msg = f"From: vanthu@{DOMAIN}\r\nSubject: t{i}\r\n\r\nx\r\n".encode()
            c = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.port("smtps" if implicit else "submission"),
                                use_tls=implicit, start_tls=not implicit, tls_context=client_tls())
            await c.connect()
            await c.login("vanthu", PASSWORD)
            await c.sendmail(f"vanthu@{DOMAIN}", [f"vanthu@{DOMAIN}"], msg)
            await c.quit()

        await asyncio.gather(*(submit(i, implicit=i % 2 == 1) for i in range(8)))
        messages = await sink.wait_messages(8)
        assert {re.search(rb"Subject: (t\d)", m.content).group(1) for m in messages} == {  # type: ignore[union-attr]
            f"t{i}".encode() for i in range(8)}
        assert all(b"with ESMTPSA id" in m.content for m in messages)
    finally:
        await stop_relay(relay)
        await sink.stop()
