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
import logging
import signal
from typing import Protocol

from prometheus_client import CollectorRegistry

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


class Server:
    def __init__(self, config: Config):
        self.config = config
        self.store = Store(config.state_file(config.store.path))
        self.registry = CollectorRegistry()
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
    try:
        await stop.wait()
        log.info("shutting down")
    finally:
        await server.stop()
    return 0
