"""kill -9 of a real ``lienthong serve`` in the middle of a load: every message that got a 250 is
delivered after the restart (duplicates allowed only for deliveries in flight at the crash)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import smtplib
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.mail.sinks import Sink, free_port

REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def _config(tmp: Path, workers: int = 1, separate_delivery: bool = False) -> Path:
    cfg = tmp / "lienthong.toml"
    cfg.write_text(f"""
[general]
state_dir = "{tmp / 'state'}"
[web]
port = 0
[mail]
hostname = "relay.test"
submission_listen = "127.0.0.1:0"
smtps_listen = ""
mx_listen = "127.0.0.1:0"
scan_interval = 0.2
connect_timeout = 2.0
command_timeout = 5.0
workers = {workers}
separate_delivery = {str(separate_delivery).lower()}
""", encoding="utf-8")
    return cfg


def _start(cfg: Path) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, "-m", "lienthong", "serve", "--config", str(cfg)], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    for line in proc.stdout:
        m = re.search(r"mail listener started listener=mx port=(\d+)", line)
        if m:
            port = int(m.group(1))
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
            return proc, port
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise AssertionError("server did not start")


def _load(port: int, acked: list[str], stop: threading.Event, worker: int) -> None:
    n = 0
    while not stop.is_set():
        try:
            s = smtplib.SMTP("127.0.0.1", port, timeout=5)
            for _ in range(5):
                tag = f"w{worker}-{n}"
                n += 1
                s.sendmail("sender@far.example", ["vanthu@dttg.gov.vn"],
                           f"From: sender@far.example\r\nSubject: {tag}\r\n\r\nbody {tag}\r\n".encode())
                acked.append(tag)  # only after the 250
            s.quit()
        except (OSError, smtplib.SMTPException):
            return  # the server died under us: whatever was not acked may be lost


@pytest.mark.parametrize("workers,separate_delivery", [(1, False), (2, False), (2, True)])
async def test_kill_9_during_load_loses_nothing_acked(tmp_path: Path, workers: int, separate_delivery: bool) -> None:
    """With workers=2 the kill hits the primary; its accept child sees its pipe close and stops
    (sessions it had acked are on disk); the restarted primary delivers everything.  With
    separate_delivery every session is a child's (a lone one commits inline) and the ids the
    children sent the dead primary are found again by the restarted one's start-up scan."""
    sink_port = free_port()
    sink = Sink("127.0.0.9", sink_port)
    await sink.start()
    cfg = _config(tmp_path, workers, separate_delivery)
    subprocess.run([sys.executable, "-m", "lienthong", "mail", "agency", "add", "bo-dttg", "--domain", "dttg.gov.vn",
                    "--next-hop", f"127.0.0.9:{sink_port}", "--config", str(cfg)], env=_env(), check=True,
                   capture_output=True)
    proc, port = await asyncio.to_thread(_start, cfg)
    acked: list[str] = []
    stop = threading.Event()
    threads = [threading.Thread(target=_load, args=(port, acked, stop, w)) for w in range(4)]
    try:
        for t in threads:
            t.start()
        while len(acked) < 120:
            await asyncio.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        await asyncio.to_thread(proc.wait)
        stop.set()
        for t in threads:
            await asyncio.to_thread(t.join)
        proc, port = await asyncio.to_thread(_start, cfg)  # restart on the same spool

        def delivered() -> set[str]:
            out = set()
            for m in sink.handler.messages:
                found = re.search(rb"Subject: (w\d+-\d+)", m.content)
                if found:
                    out.add(found.group(1).decode())
            return out

        deadline = time.monotonic() + 60
        while not set(acked) <= delivered() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        missing = set(acked) - delivered()
        assert not missing, f"{len(missing)} acknowledged messages lost: {sorted(missing)[:10]}"
        assert len(acked) >= 120
    finally:
        stop.set()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(proc.wait, 30)
        await sink.stop()
