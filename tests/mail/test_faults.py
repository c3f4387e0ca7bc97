"""Faults the issue names: a remote MX that hangs, and a spool that cannot take a message.

- Hanging MX: aiosmtpd-less stand-in (tests/mail/sinks.py "hang": takes the TCP connection,
  never greets) behind a loopback DNS server, with the relay's connect/command timeouts
  shortened in its config.
- Spool error: a real ``lienthong serve`` subprocess whose file-size limit (RLIMIT_FSIZE) is
  lowered, so a write past it fails with EFBIG as on a full disk, over real SMTP.
"""

from __future__ import annotations

import argparse
import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiosmtplib
import pytest

from mail.cli import queue_list
from mail.spool import Envelope
from tests.mail.conftest import DOMAIN, PASSWORD, Relay, client_tls, mail_config, start_relay, stop_relay
from tests.mail.dnsserver import DnsServer
from tests.mail.sinks import Sink, free_port

# -- a remote MX that hangs ----------------------------------------------------------------------

# The relay's (connect_timeout, command_timeout) toward remote hosts in these tests.  With the
# connect limit shorter, asyncio's wait_for around connect + greeting fires; with the command
# limit shorter, aiosmtplib's own read of the greeting does.
SHORT = 0.3
CONNECT_FIRST = (SHORT, 2 * SHORT)
GREETING_FIRST = (2 * SHORT, SHORT)

ZONE = {
    ("stuck.example.", "MX"): ["10 mx1.stuck.example.", "20 mx2.stuck.example."],
    ("mx1.stuck.example.", "A"): ["127.0.0.3"],  # hangs
    ("mx2.stuck.example.", "A"): ["127.0.0.4"],  # accepts
    ("silent.example.", "MX"): ["10 mx.silent.example."],
    ("mx.silent.example.", "A"): ["127.0.0.3"],  # hangs, and there is no other
}


@dataclass
class HangWorld:
    dns: DnsServer
    hang: Sink
    live: Sink
    tmp: Path
    relay: Relay | None = None

    async def start_relay(self, timeouts: tuple[float, float] = CONNECT_FIRST) -> Relay:
        cfg = mail_config(self.tmp, self.dns, remote_smtp_port=self.hang.port, connect_timeout=timeouts[0],
                          command_timeout=timeouts[1], retry_first=0.2, retry_max=0.4)
        self.relay = await start_relay(cfg)
        return self.relay

    async def stop_relay(self) -> None:
        if self.relay is not None:
            relay, self.relay = self.relay, None
            await stop_relay(relay)


@pytest.fixture
async def hang_world(tmp_path: Path) -> AsyncIterator[HangWorld]:
    dns = DnsServer(dict(ZONE))
    await dns.start()
    port = free_port()
    hang = Sink("127.0.0.3", port, "hang")
    live = Sink("127.0.0.4", port)
    await hang.start()
    await live.start()
    w = HangWorld(dns, hang, live, tmp_path)
    try:
        yield w
    finally:
        await w.stop_relay()
        await hang.stop()
        await live.stop()
        dns.stop()


async def submit(relay: Relay, rcpt: str, subject: str) -> str:
    """Submission with STARTTLS and AUTH, as an agency sends; returns the queue id of the 250."""
    msg = (f"From: vanthu@{DOMAIN}\r\nTo: {rcpt}\r\nSubject: {subject}\r\n"
           f"Message-ID: <{subject.replace(' ', '.')}@{DOMAIN}>\r\n\r\nNội dung.\r\n").encode()
    c = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.port("submission"), start_tls=True, tls_context=client_tls())
    await c.connect()
    await c.login("vanthu", PASSWORD)
    _, reply = await c.sendmail(f"vanthu@{DOMAIN}", [rcpt], msg)
    await c.quit()
    m = re.search(r"Queued as (\w+)", reply)
    assert m, reply
    return m.group(1)


def deliveries(relay: Relay, outcome: str) -> float:
    (metric,) = relay.service.metrics.deliveries.collect()
    return sum(s.value for s in metric.samples if s.name.endswith("_total") and s.labels["outcome"] == outcome)


async def hang_connections_closed(sink: Sink) -> None:
    while sink.handler.hanging:
        sink.handler.hang_closed.clear()
        await sink.handler.hang_closed.wait()


async def test_hanging_first_mx_falls_back_to_the_next_in_the_same_attempt(hang_world: HangWorld) -> None:
    """MX 10 takes the connection and never greets; MX 20 gets the message in the same attempt."""
    w = hang_world
    relay = await w.start_relay()
    await submit(relay, "nguoi.nhan@stuck.example", "mx10 treo")
    (got,) = await w.live.wait_messages(1)
    assert got.rcpt_tos == ["nguoi.nhan@stuck.example"]
    assert w.hang.handler.connections >= 1  # MX 10 was tried first and timed out
    # One attempt: the timeout toward MX 10 was no deferral of the message.
    assert deliveries(relay, "deferred") == 0 and deliveries(relay, "delivered") == 1
    await asyncio.wait_for(hang_connections_closed(w.hang), 10)  # the relay gave up on it: closed


async def wait_attempts(relay: Relay, queue_id: str, n: int) -> Envelope:
    while True:
        envs = [e for e in relay.service.spool.envelopes() if e.id == queue_id]
        assert envs, "the deferred message left the spool"
        if envs[0].attempts >= n:
            return envs[0]
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("timeouts", [CONNECT_FIRST, GREETING_FIRST], ids=["connect_timeout", "command_timeout"])
async def test_only_mx_hangs_message_deferred_retried_kept_and_nothing_left_behind(
        hang_world: HangWorld, capsys: pytest.CaptureFixture[str], timeouts: tuple[float, float]) -> None:
    """Deferred with the timeout as last error (spool and ``mail queue``), retried, still queued;
    the relay stopped in the middle of an attempt leaves no task and no connection; restarted
    on the same spool once the host answers, it delivers the message."""
    w = hang_world
    before = asyncio.all_tasks()
    relay = await w.start_relay(timeouts)
    queue_id = await submit(relay, "ai.do@silent.example", "mx duy nhat treo")
    env = await asyncio.wait_for(wait_attempts(relay, queue_id, 2), 20)  # deferred, then retried
    (rcpt,) = env.recipients
    assert rcpt.status == "pending"
    assert "mx.silent.example" in rcpt.last_error and "timed out" in rcpt.last_error.lower(), rcpt.last_error
    assert env.last_error == rcpt.last_error and env.next_try > env.received_at

    # What ``lienthong mail queue`` lists (its handler, on the running relay's spool).
    capsys.readouterr()
    assert await queue_list(argparse.Namespace(), relay.config) == 0
    listing = capsys.readouterr().out
    row = next(line for line in listing.splitlines() if line.startswith(queue_id))
    assert "queued" in row and "timed out" in row.lower(), listing

    # Stop the relay while an attempt is waiting on the silent host.
    while not w.hang.handler.hanging:
        await asyncio.sleep(0.02)
    await w.stop_relay()
    left = {t for t in asyncio.all_tasks() - before if not t.done()}
    assert not left, f"tasks left after the relay stopped: {left}"
    await asyncio.wait_for(hang_connections_closed(w.hang), 10)
    assert w.hang.handler.hanging == 0 and w.live.handler.messages == []

    # Never lost: the host wakes up, the relay restarts on the same spool and delivers it.
    w.hang.handler.behaviour = "accept"
    await w.start_relay(timeouts)
    (got,) = await w.hang.wait_messages(1)
    assert got.rcpt_tos == ["ai.do@silent.example"] and b"Subject: mx duy nhat treo" in got.content
