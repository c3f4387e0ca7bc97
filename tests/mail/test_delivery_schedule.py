"""The delivery worker's scheduling over a real spool and real SMTP on loopback: the O(1)
hand-off of accepted messages (no spool scan), the queue tools' edits noticed while running,
worker processes (scans_spool=False) handing retries to the scanning one, and the pure retry
schedule."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from lienthong.store.mail import HostedDomain
from mail import retry
from mail.config import MailConfig
from mail.delivery import DeliveryWorker
from mail.directory import Directory
from mail.dkim_sign import DkimSigner
from mail.dns import MxResolver, make_resolver
from mail.metrics import MailMetrics
from mail.spool import Recipient, Spool, envelope_stub
from tests.mail.conftest import mail_config, start_relay, stop_relay
from tests.mail.dnsserver import DnsServer
from tests.mail.sinks import Sink, free_port
from tests.mail.test_delivery import ZONE, submit

BODY = b"From: a@agency.test\r\nSubject: lich hop\r\n\r\nNoi dung.\r\n"


async def until(condition: object, timeout: float = 15.0) -> None:
    """Wait for ``condition()`` (the worker offers no event for these outside observations)."""
    async def poll() -> None:
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)


async def test_accepted_message_is_delivered_without_any_spool_scan(tmp_path: Path) -> None:
    dns = DnsServer(dict(ZONE))
    await dns.start()
    port = free_port()
    sink = Sink("127.0.0.2", port)
    await sink.start()
    relay = await start_relay(mail_config(tmp_path, dns, remote_smtp_port=port, scan_interval=3600.0))
    try:
        for i in range(3):  # the only scan ran at start-up, on an empty spool
            await submit(relay, [f"r{i}@far.example"], subject=f"thư {i}")
        got = await sink.wait_messages(3)
        assert sorted(m.rcpt_tos[0] for m in got) == ["r0@far.example", "r1@far.example", "r2@far.example"]
        await until(lambda: relay.service.spool.count() == 0)  # removed in a batch, without a scan
    finally:
        await stop_relay(relay)
        await sink.stop()
        dns.stop()


async def test_queue_edits_are_noticed_by_the_running_worker(tmp_path: Path) -> None:
    dns = DnsServer(dict(ZONE))
    await dns.start()
    port = free_port()
    relay = await start_relay(mail_config(tmp_path, dns, remote_smtp_port=port, retry_first=3600, retry_max=3600))
    spool, worker = relay.service.spool, relay.service.worker
    sink = Sink("127.0.0.6", port)
    try:
        await submit(relay, ["a@retry.example"], subject="flush me")  # nobody listens yet: deferred
        await submit(relay, ["b@retry.example"], subject="hold me")
        await until(lambda: sum(1 for e in spool.envelopes() if e.attempts) == 2)
        first, second = sorted(spool.ids())
        await sink.start()
        # What `lienthong mail queue flush ID` / `hold ID` do: rewrite the envelope on disk.
        flushed = spool.load(first)
        flushed.next_try = 0.0
        await spool.save(flushed)
        held = spool.load(second)
        held.hold, held.next_try = True, 0.0
        await spool.save(held)
        worker.wake()
        (got,) = await sink.wait_messages(1)
        assert b"Subject: flush me" in got.content
        # The same scan saw both edits: the held message stays (and is not in delivery).
        await until(lambda: spool.ids() == [second])
        assert worker._messages[second].state == "held"
        released = spool.load(second)
        released.hold = False
        await spool.save(released)
        worker.wake()
        got2 = await sink.wait_messages(2)
        assert b"Subject: hold me" in got2[1].content
    finally:
        await stop_relay(relay)
        await sink.stop()
        dns.stop()


@dataclass
class Bench:
    spool: Spool
    directory: Directory
    config: MailConfig
    port: int
    tmp: Path

    def worker(self, **kw: object) -> DeliveryWorker:
        return DeliveryWorker(self.config, self.spool, self.directory, MxResolver(make_resolver(["127.0.0.1:9"])),
                              MailMetrics(CollectorRegistry()), DkimSigner(self.tmp / "dkim", "s"), **kw)  # type: ignore[arg-type]

    async def queue(self, notify: DeliveryWorker | None = None) -> str:
        env = envelope_stub(mail_from="a@agency.test", recipients=[Recipient("u@hosted.test")], inbound=True)
        await self.spool.commit(env, BODY)
        if notify is not None:
            notify.notify(env.id, env, (BODY,))
        return env.id


@pytest.fixture
async def bench(tmp_path: Path) -> AsyncIterator[Bench]:
    port = free_port()
    directory = Directory()
    directory.load([HostedDomain("hosted.test", "agency", f"127.0.0.9:{port}")], [])
    cfg = MailConfig(scan_interval=0.05, retry_first=0.05, retry_max=0.05, connect_timeout=2, command_timeout=2)
    spool = Spool(tmp_path / "spool")
    spool.open()
    yield Bench(spool, directory, cfg, port, tmp_path)
    spool.close()


async def test_a_worker_process_hands_its_retries_to_the_scanning_worker(bench: Bench) -> None:
    primary = bench.worker()
    child = bench.worker(scans_spool=False)
    await primary.start()
    await child.start()
    sink = Sink("127.0.0.9", bench.port)
    try:
        queue_id = await bench.queue(notify=child)  # nothing listens: the child's attempt fails
        await until(lambda: queue_id in primary._messages)  # the saved envelope told the primary
        assert queue_id not in child._messages  # the child forgot it
        assert bench.spool.load(queue_id).attempts >= 1  # the primary may have retried already
        await sink.start()
        (got,) = await sink.wait_messages(1)  # delivered by the primary's retry
        assert got.rcpt_tos == ["u@hosted.test"]
        await until(lambda: not bench.spool.ids())
    finally:
        await child.stop()
        await primary.stop()
        await sink.stop()


async def test_the_scanning_worker_leaves_another_process_fresh_message_alone(bench: Bench) -> None:
    old = await bench.queue()  # on disk before start: the start-up scan takes it
    primary = bench.worker()
    await primary.start()
    try:
        assert old in primary._messages
        fresh = await bench.queue()  # committed by another process, which makes its first attempt
        primary._scan()
        assert fresh not in primary._messages
        late = bench.worker(first_attempt_grace=0.0)  # past the grace it is taken
        await late.start()
        late._scan()
        assert fresh in late._messages
        await late.stop()
    finally:
        await primary.stop()


async def test_a_deleted_deferred_message_is_forgotten_at_the_next_scan(bench: Bench) -> None:
    worker = bench.worker()
    await worker.start()
    try:
        queue_id = await bench.queue(notify=worker)  # nothing listens: deferred
        await until(lambda: queue_id in worker._messages and worker._messages[queue_id].state == "waiting")
        await bench.spool.remove(queue_id)  # `lienthong mail queue delete ID`
        worker._scan()
        assert queue_id not in worker._messages
    finally:
        await worker.stop()


# -- the pure schedule ------------------------------------------------------------------------


def test_retry_delays_double_up_to_the_cap() -> None:
    assert [retry.retry_delay(n, 300, 4 * 3600) for n in range(1, 8)] == [300, 600, 1200, 2400, 4800, 9600, 14400]
    assert retry.retry_delay(60, 300, 4 * 3600) == 4 * 3600


def test_next_retry_never_beyond_the_lifetime_and_none_after_it() -> None:
    day = 86400.0
    assert retry.next_retry_at(1, now=1000.0, received_at=1000.0, first=300, cap=3600, lifetime=5 * day) == 1300.0
    assert retry.next_retry_at(9, now=5 * day - 10, received_at=0.0, first=300, cap=3600, lifetime=5 * day) == 5 * day
    assert retry.next_retry_at(9, now=5 * day, received_at=0.0, first=300, cap=3600, lifetime=5 * day) is None
