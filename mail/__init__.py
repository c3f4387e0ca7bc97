"""The shared mail relay.  Public face used by lienthong:

- ``MailService(config, store, ssl_context, registry)``: ``start()`` opens the spool (cleaning
  what a crash left half-written), loads agencies and accounts, starts the delivery worker and
  the listeners (submission with STARTTLS + AUTH, implicit-TLS submission, inbound MX);
  ``stop(timeout)`` stops accepting, lets sessions finish within the timeout, stops delivery.
  ``ports`` maps listener names to the bound ports (port 0 in config: any free port).
  With ``mail.workers`` > 1 it also starts child accept processes on the same ports
  (mail.workers) and stops them first at shutdown; with ``mail.separate_delivery`` only the
  children accept and this process delivers.
- ``register_cli(sub, config_args)``: ``lienthong mail ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import logging
import os
import socket
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
                 registry: CollectorRegistry, *, role: str = "primary", listen_ports: dict[str, int] | None = None):
        """``role="worker"`` and ``listen_ports`` are for mail.workers' child processes only."""
        from mail.directory import Directory
        from mail.metrics import MailMetrics
        from mail.spool import Spool

        assert role in ("primary", "worker")
        self.config = config
        self.cfg = config.mail
        self.store = store
        self.ssl_context = ssl_context
        self.role = role
        self.listen_ports = listen_ports or {}
        self.metrics = MailMetrics(registry)
        self.spool = Spool(config.state_file(self.cfg.spool_dir))
        self.directory = Directory()
        self.worker: Any = None
        self.accept_workers: Any = None
        self.servers: dict[str, asyncio.base_events.Server] = {}
        self.ports: dict[str, int] = {}
        self._refresh: asyncio.Task[None] | None = None
        self._handlers: list[Any] = []  # RelayHandler per listener mode
        self._reserved: list[socket.socket] = []  # ports held for the children (separate_delivery)

    async def reload_directory(self) -> None:
        self.directory.load(await self.store.mail.domains(), await self.store.mail.accounts())

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(DIRECTORY_REFRESH)
            try:
                await self.reload_directory()
            except Exception:
                log.exception("reloading agencies and accounts failed; keeping the previous ones")

    def _make_delivery(self) -> Any:
        """This process's DeliveryWorker, or None in a child whose deliveries the primary makes."""
        from mail.delivery import DeliveryWorker
        from mail.dkim_sign import DkimSigner
        from mail.dns import MxResolver, make_resolver

        extra: dict[str, Any] = {}
        if self.role == "worker":
            if self.cfg.separate_delivery or "scans_spool" not in inspect.signature(DeliveryWorker).parameters:
                return None
            extra["scans_spool"] = False  # only the primary scans the spool (retries, start-up)
        return DeliveryWorker(self.cfg, self.spool, self.directory, MxResolver(make_resolver(self.cfg.dns_servers)),
                              self.metrics, DkimSigner(self.config.state_path / "dkim", self.cfg.dkim_selector),
                              **extra)

    def _hand_off(self) -> Callable[[Any, tuple[bytes, ...]], None]:
        """What the handlers call once a message is durably queued: the fastest hand-off to
        delivery this process has."""
        worker = self.worker
        if worker is None:  # a child without delivery: the primary's worker takes the id
            def to_primary(envelope: Any, parts: tuple[bytes, ...]) -> None:
                try:
                    os.write(1, f"Q {envelope.id}\n".encode())
                except OSError:
                    pass  # the primary is gone; its restart's spool scan delivers the message
            return to_primary
        notify = getattr(worker, "notify", None)
        if notify is None:
            return lambda envelope, parts: worker.wake()
        if len(inspect.signature(notify).parameters) >= 3:
            return lambda envelope, parts: notify(envelope.id, envelope, parts)
        return lambda envelope, parts: notify(envelope.id, envelope)

    def _queued_in_child(self, queue_id: str) -> None:
        notify = getattr(self.worker, "notify", None)
        if notify is None:
            self.worker.wake()
        else:
            # One read for the envelope and the content: delivery then needs no second one.
            notify(queue_id, *self.spool.load_accepted(queue_id))

    async def start(self) -> None:
        from mail import policy
        from mail.handler import RelayHandler
        from mail.smtp_server import OpenSessions, RelaySMTP, make_authenticator, reserve_port, start_listener

        if self.role == "primary":
            removed = self.spool.open()
            if removed:
                log.warning("removed half-written spool files left by a crash", extra={"files": len(removed)})
        else:
            self.spool.open(clean=False)
        await self.reload_directory()
        self._refresh = asyncio.create_task(self._refresh_loop(), name="mail-directory-refresh")
        self.worker = self._make_delivery()
        if self.worker is not None:
            await self.worker.start()
        rate = policy.RateLimiter(self.cfg.rate_messages_per_minute, 60.0)
        throttle = policy.FailureThrottle(self.cfg.auth_fail_limit, self.cfg.auth_fail_window)
        # A child accept process runs nothing but mail: there a lone session's commit may block
        # the loop (RelayHandler).  The main process also runs the SFU and the web server.
        sessions = OpenSessions() if self.role == "worker" else None
        common: dict[str, Any] = dict(
            hostname=self.cfg.hostname, ident="Lien thong relay", enable_SMTPUTF8=True,
            data_size_limit=self.cfg.max_message_size, throttle=throttle, metrics=self.metrics,
            timeout=300, sessions=sessions)
        on_queued = self._hand_off()

        def handler(mode: str) -> RelayHandler:
            return RelayHandler(mode, self.directory, self.spool, self.cfg.hostname, self.metrics, rate,
                                self.cfg.max_recipients, on_queued=on_queued, lone_session_commits_inline=sessions)

        submission, mx = handler("submission"), handler("mx")
        self._handlers = [submission, mx]
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
        children = self.cfg.accept_children()
        shared = children > 0 or self.role == "worker"
        try:
            for name, listen, factory, server_ssl in plans:
                if self.role == "primary" and self.cfg.separate_delivery:
                    # Only the children accept; this socket just holds the port for them (and
                    # for a child started again), bound but not listening, so the kernel never
                    # hands it a connection.
                    reserved = reserve_port(listen)
                    self._reserved.append(reserved)
                    self.ports[name] = reserved.getsockname()[1]
                    continue
                server = await start_listener(listen, factory, server_ssl, reuse_port=shared,
                                              port=self.listen_ports.get(name))
                self.servers[name] = server
                self.ports[name] = server.sockets[0].getsockname()[1]
                log.info("mail listener started", extra={"listener": name, "port": self.ports[name]})
            if children and self.role == "primary":
                from mail.workers import AcceptWorkers

                self.accept_workers = AcceptWorkers(self.config, dict(self.ports), children,
                                                    self._queued_in_child, self.metrics)
                await self.accept_workers.start()
                if self._reserved:  # the children listen on the held ports from now on
                    for name in self.ports:
                        log.info("mail listener started", extra={"listener": name, "port": self.ports[name],
                                                                 "accept_processes": children})
        except BaseException:
            await self.stop(5)
            raise

    async def stop(self, timeout: float) -> None:
        for server in self.servers.values():
            server.close()
        if self.accept_workers is not None:
            await self.accept_workers.stop(timeout)
            self.accept_workers = None
        for server in self.servers.values():
            try:
                await asyncio.wait_for(server.wait_closed(), timeout)
            except TimeoutError:
                log.warning("SMTP sessions still open at shutdown; they are cut (nothing un-acked is lost)")
        self.servers.clear()
        for reserved in self._reserved:
            reserved.close()
        self._reserved.clear()
        for handler in self._handlers:
            handler.flush_accept_log()
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
