"""Python's garbage collector stops media forwarding while it runs: the server reports its pauses
on /metrics, and ``lienthong serve`` leaves its start-up objects out of every collection."""

from __future__ import annotations

import asyncio
import gc
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from lienthong.app import GC_PAUSE_BUCKETS, Server
from tests.web.conftest import make_config

REPO = Path(__file__).resolve().parents[1]


def _samples(text: str, name: str) -> dict[str, float]:
    """``{labels: value}`` of one metric's samples in Prometheus text format."""
    found = {}
    for line in text.splitlines():
        m = re.match(rf"{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", line)
        if m:
            found[m.group(1) or ""] = float(m.group(2))
    return found


async def test_gc_pauses_are_a_histogram_per_generation_on_metrics(tmp_path: Path) -> None:
    server = Server(make_config(tmp_path))
    await server.start()
    try:
        assert server.web is not None
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as http:
            async with http.get(f"{server.web.url}/metrics") as r:
                before = _samples(await r.text(), "lienthong_gc_pause_seconds_count")
            gc.collect()
            gc.collect()
            async with http.get(f"{server.web.url}/metrics") as r:
                text = await r.text()
        after = _samples(text, "lienthong_gc_pause_seconds_count")
        assert after['{generation="2"}'] >= before['{generation="2"}'] + 2
        buckets = {labels: v for labels, v in _samples(text, "lienthong_gc_pause_seconds_bucket").items()
                   if 'generation="2"' in labels}
        counts = [buckets[f'{{generation="2",le="{bound!r}"}}'] for bound in GC_PAUSE_BUCKETS]
        assert counts == sorted(counts), "buckets are cumulative"
        assert buckets['{generation="2",le="+Inf"}'] == after['{generation="2"}']
        assert _samples(text, "lienthong_gc_pause_seconds_sum")['{generation="2"}'] > 0
        assert '{generation="0"}' in after and '{generation="1"}' in after
        # this process never froze anything (only `lienthong serve` does)
        assert _samples(text, "lienthong_gc_frozen_objects")[""] == gc.get_freeze_count()
    finally:
        await server.stop()
    assert server.gc_watch._on_gc not in gc.callbacks, "a stopped server must not keep its GC callback"


def _serve(config: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "lienthong", "serve", "--config", str(config)],
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + 60
    for line in proc.stdout:
        lines.append(line)
        m = re.search(r"is running: open (\S+?)/?$", line.strip())
        if m:
            return proc, m.group(1)
        if time.monotonic() > deadline:
            break
    proc.kill()
    proc.wait()
    raise AssertionError("server did not start:\n" + "".join(lines))


async def test_serve_leaves_its_start_up_objects_out_of_garbage_collection(tmp_path: Path) -> None:
    config = tmp_path / "lienthong.toml"
    config.write_text(f"""
[general]
state_dir = "{tmp_path / 'state'}"
[web]
port = 0
[mail]
enabled = false
[media]
candidate_addresses = ["127.0.0.1"]
""", encoding="utf-8")
    proc, url = await asyncio.to_thread(_serve, config)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as http:
            async with http.get(f"{url}/metrics") as r:
                text = await r.text()
        # modules, classes, functions, the web app: tens of thousands (about 80,000 here)
        assert _samples(text, "lienthong_gc_frozen_objects")[""] > 20000
    finally:
        proc.send_signal(signal.SIGTERM)
        output = await asyncio.to_thread(proc.communicate, timeout=30)
    assert proc.returncode == 0, output
    assert "start-up objects left out of garbage collection objects=" in output[0]
