"""The shared mail relay.  Public face used by lienthong:

- ``MailService(config, store, ssl_context, registry)``: ``start()`` opens the spool (cleaning
  what a crash left half-written), loads agencies and accounts, starts the delivery worker and
  the listeners (submission with STARTTLS + AUTH, implicit-TLS submission, inbound MX);
  ``stop(timeout)`` stops accepting, lets sessions finish within the timeout, stops delivery.
  ``ports`` maps listener names to the bound ports (port 0 in config: any free port).
- ``register_cli(sub, config_args)``: ``lienthong mail ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import ssl
from typing import TYPE_CHECKING, Any, Callable

from prometheus_client import CollectorRegistry

if TYPE_CHECKING:
    from lienthong.config import Config
    from lienthong.store import Store

log = logging.getLogger("mail")

DIRECTORY_REFRESH = 60.0


class MailService:
    name = "mail"

    def __init__(self, config: Config, store: Store, ssl_context: ssl.SSLContext | None,
                 registry: CollectorRegistry):
        from mail.directory import Directory
        from mail.metrics import MailMetrics
        from mail.spool import Spool

        self.config = config
        self.cfg = config.mail
        self.store = store
        self.ssl_context = ssl_context
        self.metrics = MailMetrics(registry)
        self.spool = Spool(config.state_file(self.cfg.spool_dir))
        self.directory = Directory()
        self.worker: Any = None
        self.servers: dict[str, asyncio.base_events.Server] = {}
        self.ports: dict[str, int] = {}
        self._refresh: asyncio.Task[None] | None = None

    async def reload_directory(self) -> None:
        self.directory.load(await self.store.mail.domains(), await self.store.mail.accounts())

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(DIRECTORY_REFRESH)
            try:
                await self.reload_directory()
            except Exception:
                log.exception("reloading agencies and accounts failed; keeping the previous ones")

    async def start(self) -> None:
        from mail import policy
        from mail.delivery import DeliveryWorker
        from mail.dkim_sign import DkimSigner
        from mail.dns import MxResolver, make_resolver
        from mail.handler import RelayHandler
        from mail.smtp_server import RelaySMTP, make_authenticator, start_listener

        removed = self.spool.open()
        if removed:
            log.warning("removed half-written spool files left by a crash", extra={"files": len(removed)})
        await self.reload_directory()
        self._refresh = asyncio.create_task(self._refresh_loop(), name="mail-directory-refresh")
        self.worker = DeliveryWorker(self.cfg, self.spool, self.directory, MxResolver(make_resolver(self.cfg.dns_servers)),
                                     self.metrics, DkimSigner(self.config.state_path / "dkim", self.cfg.dkim_selector))
        await self.worker.start()
        rate = policy.RateLimiter(self.cfg.rate_messages_per_minute, 60.0)
        throttle = policy.FailureThrottle(self.cfg.auth_fail_limit, self.cfg.auth_fail_window)
        common = dict(hostname=self.cfg.hostname, ident="Lien thong relay", enable_SMTPUTF8=True,
                      data_size_limit=self.cfg.max_message_size, throttle=throttle, metrics=self.metrics,
                      timeout=300)

        worker = self.worker
        notify = getattr(worker, "notify", None)

        def on_queued(envelope: Any) -> None:
            # The delivery side's O(1) hand-off when it has one, else a wake-up and a rescan.
            if notify is not None:
                notify(envelope.id, envelope)
            else:
                worker.wake()

        def handler(mode: str) -> RelayHandler:
            return RelayHandler(mode, self.directory, self.spool, self.cfg.hostname, self.metrics, rate,
                                self.cfg.max_recipients, on_queued=on_queued)

        submission, mx = handler("submission"), handler("mx")
        auth = make_authenticator(self.directory)
        plans: list[tuple[str, str, Callable[[], Any], ssl.SSLContext | None]] = []
        if self.cfg.submission_listen:
            plans.append(("submission", self.cfg.submission_listen, lambda: RelaySMTP(
                submission, tls_context=self.ssl_context, require_starttls=True, auth_required=True,
                auth_require_tls=True, authenticator=auth, **common), None))
        if self.cfg.smtps_listen and self.ssl_context is not None:
            plans.append(("smtps", self.cfg.smtps_listen, lambda: RelaySMTP(
                submission, auth_required=True, auth_require_tls=True, authenticator=auth, implicit_tls=True,
                **common),
                self.ssl_context))
        if self.cfg.mx_listen:
            plans.append(("mx", self.cfg.mx_listen, lambda: RelaySMTP(
                mx, tls_context=self.ssl_context, auth_exclude_mechanism=["LOGIN", "PLAIN"], **common), None))
        try:
            for name, listen, factory, server_ssl in plans:
                server = await start_listener(listen, factory, server_ssl)
                self.servers[name] = server
                self.ports[name] = server.sockets[0].getsockname()[1]
                log.info("mail listener started", extra={"listener": name, "port": self.ports[name]})
        except BaseException:
            await self.stop(5)
            raise

    async def stop(self, timeout: float) -> None:
        for server in self.servers.values():
            server.close()
        for server in self.servers.values():
            try:
                await asyncio.wait_for(server.wait_closed(), timeout)
            except TimeoutError:
                log.warning("SMTP sessions still open at shutdown; they are cut (nothing un-acked is lost)")
        self.servers.clear()
        if self._refresh is not None:
            self._refresh.cancel()
            await asyncio.gather(self._refresh, return_exceptions=True)
            self._refresh = None
        if self.worker is not None:
            await self.worker.stop()
            self.worker = None
        self.spool.close()


def register_cli(sub: Any, config_args: Callable[[argparse.ArgumentParser], None]) -> None:
    from mail.cli import register

    register(sub, config_args)
