"""Start-up and shutdown of the three services in one event loop.

Start order: state dir and store (migrations), then media, mail, and the web service last, so
nothing is accepted before everything behind it is ready.

Shutdown order (written down once, here), each step bounded by ``general.shutdown_timeout``:
1. web: stop accepting HTTP, close signalling WebSockets (sites see "meeting server restarting");
2. media: close every peer connection, stop the forwarders;
3. mail: stop accepting SMTP, let sessions in DATA finish, stop delivery workers (the spool
   keeps everything not yet delivered);
4. store: close the database.
A step that overruns its timeout is cancelled and logged; the next step still runs.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from collections.abc import Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

import mail
import media
import web
from lienthong import tls
from lienthong.config import Config
from lienthong.store import Store

log = logging.getLogger("lienthong.app")


class Service(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self, timeout: float) -> None: ...


# Pause lengths the histogram tells apart: a 20 ms audio packet, a video frame, a glitch
GC_PAUSE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)


class GcWatch(Collector):
    """Python's cyclic garbage collector stops the whole process while it runs, media
    forwarding included: ``lienthong_gc_pause_seconds{generation}`` (a histogram of its pauses)
    and ``lienthong_gc_frozen_objects`` (what :func:`freeze_startup_objects` left out of every
    collection).  The GC callback only adds numbers (no lock, no allocation a collection could
    re-enter); the metric families are built when /metrics is read."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._started = 0.0
        self._buckets = {g: [0] * len(GC_PAUSE_BUCKETS) for g in range(3)}
        self._count = [0, 0, 0]
        self._sum = [0.0, 0.0, 0.0]
        registry.register(self)
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        g = info.get("generation", 2)
        if not self._started or g not in self._buckets:
            return
        pause = time.perf_counter() - self._started
        self._started = 0.0
        self._count[g] += 1
        self._sum[g] += pause
        buckets = self._buckets[g]
        for i, bound in enumerate(GC_PAUSE_BUCKETS):
            if pause <= bound:
                buckets[i] += 1
                break

    def collect(self) -> Iterator[Any]:
        pauses = HistogramMetricFamily("lienthong_gc_pause_seconds",
                                       "Pauses of Python's garbage collector (everything, media forwarding "
                                       "included, waits meanwhile), by generation", labels=["generation"])
        for g in range(3):
            cumulative, running = [], 0
            for bound, n in zip(GC_PAUSE_BUCKETS, self._buckets[g]):
                running += n
                cumulative.append((repr(bound), running))
            cumulative.append(("+Inf", self._count[g]))
            pauses.add_metric([str(g)], cumulative, self._sum[g])
        yield pauses
        yield GaugeMetricFamily("lienthong_gc_frozen_objects",
                                "Objects left out of garbage collection: what existed once the server had started",
                                value=gc.get_freeze_count())

    def close(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)


def freeze_startup_objects() -> int:
    """Leave everything that exists once the server has started (modules, classes, functions,
    config, the web app: ~80,000 objects) out of every later garbage collection (``gc.freeze``).
    They live as long as the process, and a full collection no longer walks them: while 35
    sites joined, the longest full collection went from 77 to 50 ms (everything waits during
    one).  Only ``serve()`` calls this (one server per process); returns how many objects are
    frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class Server:
    def __init__(self, config: Config):
        self.config = config
        self.store = Store(config.state_file(config.store.path))
        self.registry = CollectorRegistry()
        self.gc_watch = GcWatch(self.registry)
        self.services: list[Service] = []
        self.web: web.WebService | None = None

    async def start(self) -> None:
        cfg = self.config
        cfg.state_path.mkdir(parents=True, exist_ok=True)
        await self.store.open()
        ssl_context = None if cfg.web.plain_http and not cfg.mail.enabled else tls.server_context(cfg)
        media_service = media.MediaService(cfg, self.registry)
        self.web = web.WebService(cfg, self.store, media_service, self.registry, ssl_context)
        self.services = [media_service]
        if cfg.mail.enabled:
            self.services.append(mail.MailService(cfg, self.store, ssl_context, self.registry))
        self.services.append(self.web)
        started: list[Service] = []
        try:
            for service in self.services:
                await service.start()
                started.append(service)
                log.info("service started", extra={"service": service.name})
        except BaseException:
            self.services = started
            await self.stop()
            raise

    async def stop(self) -> None:
        timeout = self.config.general.shutdown_timeout
        # Reverse of start order: web first (stop accepting), store last.
        for service in reversed(self.services):
            try:
                await asyncio.wait_for(service.stop(timeout), timeout + 1)
                log.info("service stopped", extra={"service": service.name})
            except TimeoutError:
                log.error("service did not stop in time; cancelled", extra={"service": service.name})
            except Exception:
                log.exception("service failed while stopping", extra={"service": service.name})
        self.services = []
        await self.store.close()
        self.gc_watch.close()


async def serve(config: Config) -> int:
    server = Server(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
    except OSError as e:
        log.error("cannot start: %s", e)
        return 1
    frozen = freeze_startup_objects()
    log.info("start-up objects left out of garbage collection", extra={"objects": frozen})
    try:
        await stop.wait()
        log.info("shutting down")
    finally:
        await server.stop()
    return 0
