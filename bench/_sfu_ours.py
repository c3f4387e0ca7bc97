"""Our SFU in a child process for ``bench.sfu``: ``media.MediaService`` directly, no web layer.

The child pins itself to one core, builds a ``MediaService`` whose ICE host candidates are on
127.0.0.1, and serves a small request/response protocol over a ``multiprocessing`` pipe (what
web.signalling would do over WebSockets): join a participant, apply its SDP offer, trickle its
candidates, call a chair control, read the SFU's own counters.  Events the service pushes to a
participant that the load generator needs (slots, floor, closed, layers) flow back up the same pipe.

Parent side: ``SfuProcess`` (async; the pipe is read with ``loop.add_reader``, so the load
generator's event loop is never blocked)::

    async with SfuProcess(cpu=0) as sfu:
        info = await sfu.join("site-1", "Site 1", "site")      # {"id", "layout", "snapshot"}
        answer_sdp = await sfu.answer(info["id"], offer_sdp)
        await sfu.add_ice_candidate(info["id"], {"candidate": "candidate:...", "sdpMid": "0",
                                                 "sdpMLineIndex": 0})
        await sfu.call(chair_id, "set_floor", site_id)
        sfu.slots[info["id"]]                                   # latest slots event
        sfu.cpu_seconds()                                       # utime + stime of the child
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import multiprocessing
import multiprocessing.connection
import os
import traceback
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

ROOM_ID = "bench-room"
# Events the load generator reads; the rest (participants, speaker, hands...) stay in the child.
FORWARDED_EVENTS = frozenset({"slots", "floor", "closed", "layers"})
CLK_TCK = os.sysconf("SC_CLK_TCK")


class SfuError(RuntimeError):
    """A request the SFU refused or failed: ``code`` is MediaError's code, else "error"."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


# ---------------------------------------------------------------------------------------------
# Child side


class _Server:
    def __init__(self, conn: multiprocessing.connection.Connection, gallery: int, audio_slots: int) -> None:
        from prometheus_client import CollectorRegistry

        import media
        from lienthong.config import Config

        config = Config()
        config.media.candidate_addresses = ["127.0.0.1"]
        config.media.gallery_slots = gallery
        config.media.audio_slots = audio_slots
        self.conn = conn
        self.registry = CollectorRegistry()
        self.service = media.MediaService(config, self.registry)
        self.media = media
        self.participants: dict[str, Any] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.stopped = asyncio.Event()

    def _send(self, message: tuple[Any, ...]) -> None:
        with contextlib.suppress(OSError, ValueError):  # parent gone: the child is stopping anyway
            self.conn.send(message)

    def on_readable(self) -> None:
        while not self.stopped.is_set() and self.conn.poll():
            try:
                request = self.conn.recv()
            except EOFError:
                self.stopped.set()
                return
            task = asyncio.get_running_loop().create_task(self._handle(*request))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _handle(self, req_id: int, command: str, args: tuple[Any, ...]) -> None:
        try:
            result = await getattr(self, f"do_{command}")(*args)
        except self.media.MediaError as exc:
            self._send(("reply", req_id, False, (exc.code, exc.message)))
        except Exception as exc:  # reported to the parent, which raises SfuError with it
            self._send(("reply", req_id, False, ("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")))
        else:
            self._send(("reply", req_id, True, result))

    async def do_join(self, site_id: str, site_name: str, role: str) -> dict[str, Any]:
        holder: dict[str, str] = {}

        async def on_event(event: dict[str, Any]) -> None:
            if event.get("type") in FORWARDED_EVENTS:
                self._send(("event", holder["id"], event))

        p = await self.service.join_room(room_id=ROOM_ID, site_id=site_id, site_name=site_name, role=role,  # type: ignore[arg-type]
                                         on_event=on_event)
        holder["id"] = p.id
        self.participants[p.id] = p
        return {"id": p.id, "layout": p.layout(), "snapshot": p.snapshot()}

    async def do_answer(self, pid: str, sdp: str) -> str:
        answer: str = await self.participants[pid].answer(sdp)
        return answer

    async def do_ice(self, pid: str, candidate: dict[str, Any] | None) -> None:
        await self.participants[pid].add_ice_candidate(candidate)

    async def do_call(self, pid: str, method: str, args: tuple[Any, ...]) -> Any:
        return await getattr(self.participants[pid], method)(*args)

    async def do_snapshot(self, pid: str) -> dict[str, Any]:
        snapshot: dict[str, Any] = self.participants[pid].snapshot()
        return snapshot

    async def do_counters(self) -> dict[str, float]:
        """The SFU's own Prometheus counters (forwarded/dropped packets, PLIs), by label."""
        out: dict[str, float] = {}
        for metric in self.registry.collect():
            if metric.name.startswith("lienthong_media_"):
                for sample in metric.samples:
                    if sample.name.endswith("_total"):
                        label = ",".join(f"{v}" for v in sample.labels.values())
                        out[sample.name + (f"{{{label}}}" if label else "")] = sample.value
        return out

    async def do_stop(self) -> None:
        await self.service.stop(5.0)
        self.stopped.set()


async def _serve(conn: multiprocessing.connection.Connection, gallery: int, audio_slots: int) -> None:
    server = _Server(conn, gallery, audio_slots)
    await server.service.start()
    from lienthong.app import freeze_startup_objects

    freeze_startup_objects()   # as `lienthong serve` does once started
    loop = asyncio.get_running_loop()
    loop.add_reader(conn.fileno(), server.on_readable)
    from media import native

    conn.send(("ready", os.getpid(), native.fastpath is not None))
    try:
        await server.stopped.wait()
    finally:
        loop.remove_reader(conn.fileno())
        for task in list(server.tasks):
            if task is not asyncio.current_task():
                task.cancel()
        await asyncio.gather(*server.tasks, return_exceptions=True)
        if server.service._started:  # parent vanished without "stop"
            await server.service.stop(2.0)


def run(conn: multiprocessing.connection.Connection, cpu: int | None, gallery: int, audio_slots: int,
        compiled: bool = True) -> None:
    """Child process entry point (spawn context).  ``compiled`` False: the SFU runs without
    ``media._fastpath`` (the same steps in Python: fan-out, rewriters, send), for a same-run
    comparison.  With
    ``BENCH_SFU_PROFILE=<file>`` in the environment the SFU runs under cProfile and leaves its
    stats there (a developer's aid: the profiler itself costs CPU, so figures of such a run are
    not the SFU's)."""
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    if not compiled:
        # Everything in Python, as on a machine without a C compiler: SfuProcess.start put
        # LIENTHONG_PURE_PYTHON=1 in this child's environment, read when media is first imported
        # (which may be before this function: spawn imports the parent's main module first).
        from media import native

        if native.fastpath is not None:
            raise RuntimeError("the SFU child was asked to run without media._fastpath but has it")
    profile_to = os.environ.get("BENCH_SFU_PROFILE")
    if not profile_to:
        asyncio.run(_serve(conn, gallery, audio_slots))
        return
    import cProfile

    profiler = cProfile.Profile()
    try:
        profiler.runcall(asyncio.run, _serve(conn, gallery, audio_slots))
    finally:
        profiler.dump_stats(profile_to)


# ---------------------------------------------------------------------------------------------
# Parent side


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def process_wait_seconds(pid: int) -> float:
    """Time the process's threads spent runnable but waiting for a CPU (/proc/<pid>/task/*/
    schedstat, field 2): CPU contention from other processes on the SFU's core shows here."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int(stat.read_text().split()[1])
    return total / 1e9


class SfuProcess:
    """The SFU child process and its control pipe (use ``async with``)."""

    def __init__(self, cpu: int | None = 0, gallery: int = 6, audio_slots: int = 3, start_timeout: float = 30.0,
                 compiled: bool = True) -> None:
        self.cpu = cpu
        self.compiled = compiled
        self.gallery = gallery
        self.audio_slots = audio_slots
        self.start_timeout = start_timeout
        self.pid = 0
        self.native: bool | None = None    # whether the child runs media._fastpath (known once ready)
        self.slots: dict[str, dict[str, str | None]] = {}
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.on_event: Callable[[str, dict[str, Any]], None] | None = None  # called for every event
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._ready: asyncio.Future[int] | None = None
        self._proc: Any = None
        self._conn: multiprocessing.connection.Connection | None = None

    async def __aenter__(self) -> SfuProcess:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._ready = loop.create_future()
        self._proc = ctx.Process(target=run, args=(child, self.cpu, self.gallery, self.audio_slots, self.compiled), daemon=True,
                                 name="bench-sfu")
        from media.native import PURE_PYTHON_ENV

        before = os.environ.get(PURE_PYTHON_ENV)
        if not self.compiled:
            os.environ[PURE_PYTHON_ENV] = "1"   # the child's media.native reads it at import
        try:
            self._proc.start()
        finally:
            if before is None:
                os.environ.pop(PURE_PYTHON_ENV, None)
            else:
                os.environ[PURE_PYTHON_ENV] = before
        child.close()
        loop.add_reader(self._conn.fileno(), self._on_readable)
        try:
            self.pid = await asyncio.wait_for(self._ready, self.start_timeout)
        except BaseException:
            await self.stop()
            raise

    def _on_readable(self) -> None:
        conn = self._conn
        assert conn is not None
        while True:
            try:
                if not conn.poll():
                    return
                message = conn.recv()
            except (EOFError, OSError):
                asyncio.get_running_loop().remove_reader(conn.fileno())
                self._fail_all(SfuError("exited", "the SFU process exited"))
                return
            kind = message[0]
            if kind == "reply":
                _, req_id, ok, payload = message
                future = self._pending.pop(req_id, None)
                if future is not None and not future.done():
                    if ok:
                        future.set_result(payload)
                    else:
                        future.set_exception(SfuError(*payload))
            elif kind == "event":
                _, pid, event = message
                self.events.append((pid, event))
                if event.get("type") == "slots":
                    self.slots[pid] = event["slots"]
                if self.on_event is not None:
                    self.on_event(pid, event)
            elif kind == "ready" and self._ready is not None and not self._ready.done():
                self.native = bool(message[2])
                self._ready.set_result(message[1])

    def _fail_all(self, error: Exception) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(error)

    async def request(self, command: str, *args: Any, timeout: float = 30.0) -> Any:
        if self._conn is None:
            raise SfuError("exited", "the SFU process is not running")
        req_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[req_id] = future
        self._conn.send((req_id, command, args))
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(req_id, None)

    async def join(self, site_id: str, site_name: str, role: str) -> dict[str, Any]:
        info: dict[str, Any] = await self.request("join", site_id, site_name, role)
        self.slots.setdefault(info["id"], info["snapshot"]["slots"])
        return info

    async def answer(self, pid: str, sdp: str) -> str:
        answer: str = await self.request("answer", pid, sdp)
        return answer

    async def add_ice_candidate(self, pid: str, candidate: dict[str, Any] | None) -> None:
        await self.request("ice", pid, candidate)

    async def call(self, pid: str, method: str, *args: Any) -> Any:
        return await self.request("call", pid, method, args)

    async def snapshot(self, pid: str) -> dict[str, Any]:
        snapshot: dict[str, Any] = await self.request("snapshot", pid)
        return snapshot

    async def counters(self) -> dict[str, float]:
        counters: dict[str, float] = await self.request("counters")
        return counters

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.pid)

    def wait_seconds(self) -> float:
        return process_wait_seconds(self.pid)

    async def stop(self) -> None:
        """Ask the child to stop the service, then reap it (killed by PID if it hangs)."""
        loop = asyncio.get_running_loop()
        if self._conn is not None and self._proc is not None and self._proc.is_alive():
            with contextlib.suppress(Exception):
                await self.request("stop", timeout=10.0)
        if self._conn is not None:
            with contextlib.suppress(Exception):
                loop.remove_reader(self._conn.fileno())
            self._conn.close()
            self._conn = None
        if self._proc is not None:
            await loop.run_in_executor(None, self._proc.join, 10)
            if self._proc.is_alive():
                self._proc.kill()
                await loop.run_in_executor(None, self._proc.join)
            self._proc = None
        self._fail_all(SfuError("exited", "the SFU process stopped"))
