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
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
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

REPO = Path(__file__).resolve().parents[2]

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


# -- disk full: the spool cannot write a message ----------------------------------------------------

# The server's largest file.  The store (SQLite: about 200 KB with its WAL at start, growing only
# with panel and meeting data) and the TLS files stay far below it, so only a message file can
# exceed it: the big message below, and nothing else the server writes.
FILE_SIZE_LIMIT = 2 * 1024 * 1024
BIG = 3 * 1024 * 1024  # over the file-size limit, under the SMTP size limit
SMTP_SIZE_LIMIT = 8 * 1024 * 1024


def _limit_file_size() -> None:
    """In the server process before exec: writes past the limit fail with EFBIG (as on a full
    disk) instead of killing the process with SIGXFSZ.  Needs no privilege, and binds root too."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


@dataclass
class ServerProcess:
    proc: subprocess.Popen[str]
    mx_port: int
    output: list[str]  # its log lines so far (a thread keeps reading them)


def _serve(config: Path) -> ServerProcess:
    """``lienthong serve`` as a subprocess with the lowered file-size limit; waits for its MX port."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "lienthong", "serve", "--config", str(config)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=_limit_file_size)
    assert proc.stdout is not None
    output: list[str] = []
    deadline = time.monotonic() + 60
    for line in proc.stdout:
        output.append(line)
        m = re.search(r"mail listener started listener=mx port=(\d+)", line)
        if m:
            threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True).start()  # type: ignore[arg-type]
            return ServerProcess(proc, int(m.group(1)), output)
        if time.monotonic() > deadline:
            break
    proc.kill()
    proc.wait()
    raise AssertionError("server did not start:\n" + "".join(output))


def _message(subject: str, body_size: int) -> bytes:
    line = b"Noi dung cong van, dong nay dai bay muoi sau ky tu de du mot dong thu dien tu.\r\n"
    body = line * (body_size // len(line) + 1)
    return (f"From: nguoi.gui@far.example\r\nTo: vanthu@dttg.gov.vn\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject}@far.example>\r\n\r\n").encode() + body


def _spool_files(spool: Path) -> tuple[dict[str, int], list[str]]:
    """Sizes of the files in queue/, and the names in tmp/."""
    queue = {p.name: p.stat().st_size for p in (spool / "queue").iterdir()}
    return queue, sorted(os.listdir(spool / "tmp"))


def _complete(path: Path) -> bool:
    """A spool message as long as its header line says (``LTSPOOL1 <length> <envelope>``)."""
    data = path.read_bytes()
    header, _, content = data.partition(b"\n")
    fields = header.split(b" ", 2)
    return fields[0] == b"LTSPOOL1" and fields[1].isdigit() and int(fields[1]) == len(content)


@pytest.mark.parametrize("workers", [1, 2])
async def test_spool_write_failure_answers_452_and_leaves_nothing_half_written(tmp_path: Path, workers: int) -> None:
    """A message the spool cannot write (EFBIG past RLIMIT_FSIZE, like a full disk) gets
    452 4.3.1; the session goes on (a following message gets 250); queue/ and tmp/ hold no
    trace of it.  With workers=2 the session may land in an accept child: same answer."""
    sink = Sink("127.0.0.9", free_port())
    await sink.start()
    state = tmp_path / "state"
    config = tmp_path / "lienthong.toml"
    config.write_text(f"""
[general]
state_dir = "{state}"
[web]
port = 0
[mail]
hostname = "relay.test"
submission_listen = "127.0.0.1:0"
smtps_listen = ""
mx_listen = "127.0.0.1:0"
max_message_size = {SMTP_SIZE_LIMIT}
workers = {workers}
""", encoding="utf-8")
    subprocess.run([sys.executable, "-m", "lienthong", "mail", "agency", "add", "bo-dttg", "--domain", "dttg.gov.vn",
                    "--next-hop", f"127.0.0.9:{sink.port}", "--config", str(config)],
                   env={**os.environ, "PYTHONPATH": str(REPO)}, check=True, capture_output=True)
    server = await asyncio.to_thread(_serve, config)
    spool = state / "spool"
    try:
        c = aiosmtplib.SMTP(hostname="127.0.0.1", port=server.mx_port, start_tls=False, timeout=30)
        await c.connect()
        rcpt = ["vanthu@dttg.gov.vn"]
        _, first = await c.sendmail("nguoi.gui@far.example", rcpt, _message("nho-1", 2000))
        accepted = [re.search(r"Queued as (\w+)", first).group(1)]  # type: ignore[union-attr]

        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await c.sendmail("nguoi.gui@far.example", rcpt, _message("lon", BIG))
        assert refused.value.code == 452 and refused.value.message.startswith("4.3.1"), refused.value
        queue, tmp = _spool_files(spool)
        assert tmp == [], tmp
        assert {name.rpartition(".")[0] for name in queue} <= set(accepted), queue
        assert all(size < FILE_SIZE_LIMIT for size in queue.values()), queue

        _, third = await c.sendmail("nguoi.gui@far.example", rcpt, _message("nho-2", 2000))  # same session
        accepted.append(re.search(r"Queued as (\w+)", third).group(1))  # type: ignore[union-attr]
        await c.quit()

        got = await sink.wait_messages(2)
        subjects = sorted(re.search(rb"Subject: (\S+)", m.content).group(1) for m in got)  # type: ignore[union-attr]
        assert subjects == [b"nho-1", b"nho-2"]
        queue, tmp = _spool_files(spool)
        assert tmp == [], tmp
        assert {name.rpartition(".")[0] for name in queue} <= set(accepted), queue
        assert all(_complete(spool / "queue" / n) for n in queue if n.endswith(".msg")), queue
        assert any("spool refused a message" in line and "File too large" in line for line in server.output), \
            "".join(server.output)
    finally:
        if server.proc.poll() is None:
            server.proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(server.proc.wait, 30)
        await sink.stop()
