"""Accept worker processes: more than one core for the SMTP listeners (``mail.workers``).

Python runs one event loop on one core; Postfix spreads a relay over many processes.  With
``workers = N > 1`` the primary MailService (in ``lienthong serve``) opens and cleans the
spool, binds its listeners with SO_REUSEPORT and starts N-1 children
(``python -m mail.workers``).  Each child binds the same ports with SO_REUSEPORT (the kernel
spreads new connections over all N sockets) and runs a MailService in the "worker" role:
the same handlers, spool and directory (loaded from the same store), but it never cleans
the spool (another process's file may be a commit in progress), and its counters reach
/metrics through the primary (below).

With ``mail.separate_delivery`` the primary does not accept: it holds each port with a bound,
non-listening SO_REUSEPORT socket and starts N children, which accept everything.

A child runs on uvloop when it is installed (``run_event_loop``).  It runs nothing but mail,
so a session that is the only one open in it commits its message on the event loop itself
(mail.handler), without the hop to a spool thread.

Delivery of what a child accepted: with ``separate_delivery`` (or a DeliveryWorker without
``scans_spool``) the child writes each queue id to the primary on its stdout pipe, and the
primary's worker takes it from there (one read of the spool file: Spool.load_accepted).
Otherwise the child runs its own worker with ``scans_spool=False`` and delivers what it
accepted (notify); only the primary scans the spool for retries.

The primary talks to a child over two pipes: on stdin, the child's settings (a pickled
``(Config, ports, log level)``, length-prefixed), then nothing: EOF on stdin (the primary
stopping, or dying even by ``kill -9``) makes the child stop.  On stdout the child says
``READY`` once listening, then ``Q <id>`` per accepted message when it has no delivery.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pickle
import signal
import struct
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lienthong.config import Config
    from mail.metrics import MailMetrics

log = logging.getLogger("mail.workers")

START_TIMEOUT = 60.0
RESTART_DELAY = 1.0  # seconds before a dead child is replaced (no tight crash loop)


class AcceptWorkers:
    """The primary's handle on its child accept processes: start them, relay their ids,
    start a new one when one dies (as Postfix's master does), stop them."""

    def __init__(self, config: Config, ports: dict[str, int], count: int, on_queued_id: Callable[[str], None],
                 metrics: MailMetrics | None = None):
        self.config, self.ports, self.count = config, ports, count
        self.on_queued_id = on_queued_id
        self.metrics = metrics  # the primary's counters, which add up the children's
        self.procs: list[asyncio.subprocess.Process] = []
        self.started = asyncio.Event()  # set whenever a child (re)starts; tests wait on it
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    async def start(self) -> None:
        for i in range(self.count):
            self.procs.append(await self._spawn(i))
            self._tasks.append(asyncio.create_task(self._supervise(i), name=f"mail-accept-worker-{i + 1}"))

    async def _spawn(self, i: int) -> asyncio.subprocess.Process:
        settings = pickle.dumps((self.config, self.ports, logging.getLogger().level))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mail.workers", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, env={**os.environ, "LIENTHONG_MAIL_WORKER": str(i + 1)})
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(struct.pack("!Q", len(settings)) + settings)
            await proc.stdin.drain()
            line = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT)
        except BaseException:
            proc.kill()
            await proc.wait()
            raise
        if line.strip() != b"READY":
            await proc.wait()
            raise RuntimeError(f"mail accept worker {i + 1} did not start (exit code {proc.returncode}); see its log")
        log.info("mail accept worker started", extra={"worker": i + 1, "pid": proc.pid})
        self.started.set()
        return proc

    async def _supervise(self, i: int) -> None:
        while True:
            proc = self.procs[i]
            assert proc.stdout is not None
            seen: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}  # this child's counters so far
            while line := await proc.stdout.readline():
                if line.startswith(b"Q "):
                    try:
                        self.on_queued_id(line[2:].strip().decode("ascii"))
                    except Exception:
                        log.exception("handing an accepted message to delivery failed; the spool scan will find it")
                elif line.startswith(b"M ") and self.metrics is not None:
                    try:
                        add_counter_deltas(self.metrics, seen, json.loads(line[2:]))
                    except (ValueError, KeyError, TypeError):
                        log.exception("bad metrics line from a mail accept worker")
            code = await proc.wait()
            while not self._stopping:
                log.error("mail accept worker exited; starting a new one", extra={"worker": i + 1, "exit_code": code})
                await asyncio.sleep(RESTART_DELAY)
                try:
                    self.procs[i] = await self._spawn(i)
                    break
                except Exception:
                    log.exception("starting a mail accept worker failed; retrying")
            if self._stopping:
                return

    async def stop(self, timeout: float) -> None:
        """EOF on each child's stdin, wait for them to finish their sessions, kill stragglers."""
        self._stopping = True
        for proc in self.procs:
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), timeout + 5)
            except TimeoutError:
                log.warning("mail accept worker did not stop in time; killing it", extra={"pid": proc.pid})
                proc.kill()
                await proc.wait()
        # The supervisors end by themselves once they have read the children's last lines
        # (their final counters); cancel only what is still running after that.
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()


COUNTERS = ("accepted", "rejected", "auth", "deliveries")  # MailMetrics counters summed over processes
METRICS_INTERVAL = 5.0  # seconds between a child's counter reports (and one at its stop)


def counter_snapshot(metrics: MailMetrics) -> list[list[Any]]:
    """``[[counter, {label: value}, total], ...]`` of a process's MailMetrics counters."""
    out: list[list[Any]] = []
    for name in COUNTERS:
        for family in getattr(metrics, name).collect():
            out.extend([name, s.labels, s.value] for s in family.samples if s.name.endswith("_total"))
    return out


def add_counter_deltas(metrics: MailMetrics, seen: dict[tuple[str, tuple[tuple[str, str], ...]], float],
                       snapshot: list[list[Any]]) -> None:
    """Add to ``metrics`` what a child counted since its previous snapshot (``seen``)."""
    for name, labels, value in snapshot:
        if name not in COUNTERS:
            continue
        key = (name, tuple(sorted(labels.items())))
        delta = float(value) - seen.get(key, 0.0)
        if delta > 0:
            counter = getattr(metrics, name)
            (counter.labels(**labels) if labels else counter).inc(delta)
        seen[key] = float(value)


# --- the child -------------------------------------------------------------------------------

async def _report_counters(metrics: MailMetrics, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), METRICS_INTERVAL)
        except TimeoutError:
            pass
        _write_counters(metrics)


def _write_counters(metrics: MailMetrics) -> None:
    try:
        os.write(1, b"M " + json.dumps(counter_snapshot(metrics)).encode() + b"\n")
    except OSError:
        pass  # the primary is gone

class _EofWatch(asyncio.Protocol):
    def __init__(self, stop: asyncio.Event):
        self.stop = stop

    def eof_received(self) -> bool | None:
        self.stop.set()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.stop.set()


async def _serve_child(config: Config, ports: dict[str, int], stdin: Any) -> int:
    from prometheus_client import CollectorRegistry

    from lienthong import tls
    from lienthong.store import Store
    from mail import MailService

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    transport, _ = await loop.connect_read_pipe(lambda: _EofWatch(stop), stdin)
    store = Store(config.state_file(config.store.path))
    await store.open()
    service = MailService(config, store, tls.server_context(config), CollectorRegistry(), role="worker",
                          listen_ports=ports)
    reporter: asyncio.Task[None] | None = None
    try:
        await service.start()
        os.write(1, b"READY\n")
        reporter = asyncio.create_task(_report_counters(service.metrics, stop), name="mail-worker-metrics")
        await stop.wait()
    finally:
        await service.stop(config.general.shutdown_timeout)
        if reporter is not None:
            reporter.cancel()
            await asyncio.gather(reporter, return_exceptions=True)
        _write_counters(service.metrics)  # what the sessions finished during stop counted too
        await store.close()
        transport.close()
    return 0


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the primary, which stops us
    stdin = sys.stdin.buffer
    (size,) = struct.unpack("!Q", stdin.read(8))
    config, ports, level = pickle.loads(stdin.read(size))
    from lienthong.logs import setup_logging

    setup_logging(logging.getLevelName(level))
    return run_event_loop(_serve_child(config, ports, stdin))


def run_event_loop(main: Any) -> int:
    """Run the child on uvloop when installed (as uvicorn does): a child runs nothing but the
    SMTP listeners, and libuv's loop and transports take about half of asyncio's time per
    loop turn and socket operation; a one-message session is a chain of such turns (accept,
    banner, each command and reply), so the loop's overhead is most of its latency.  asyncio's
    own loop otherwise."""
    try:
        import uvloop
    except ImportError:
        return int(asyncio.run(main))
    return int(uvloop.run(main))


if __name__ == "__main__":
    sys.exit(main())
