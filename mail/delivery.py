"""The delivery worker: takes due messages from the spool and hands them on by SMTP.

Per message and recipient domain: the route is the hosted domain's next hop (inbound mail),
else the domain's MX hosts in preference order (mail.dns); each host is tried until one takes
the transaction.  STARTTLS when offered (or required, per policy); connections are kept and
reused for further messages to the same host; at most ``per_destination_concurrency``
connections per host.  Per recipient: 2xx delivered, 5xx failed, 4xx or a connection problem
deferred and retried on the schedule (mail.retry) until the queue lifetime, then failed.
Failures (and delay warnings, and NOTIFY=SUCCESS) produce RFC 3464 reports queued back into
the spool (mail.bounce); a message with a null sender never gets one.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiosmtplib

from mail import retry
from mail.bounce import build_dsn, recipients_to_report
from mail.config import MailConfig
from mail.directory import Directory
from mail.dkim_sign import DkimSigner
from mail.dns import DnsPermanent, DnsTemporary, MxResolver, Target
from mail.metrics import MailMetrics
from mail.policy import domain_of
from mail.spool import Envelope, Recipient, Spool, SpoolError, envelope_stub

log = logging.getLogger("mail.delivery")


class Deferred(Exception):
    pass


@dataclass
class Route:
    targets: list[tuple[Target, int]]  # (host, port)
    tls_required: bool


@dataclass
class Pool:
    """Idle connections per (address, port), and a limit of open ones per destination."""

    per_destination: int
    idle: dict[tuple[str, int], list[aiosmtplib.SMTP]] = field(default_factory=dict)
    limits: dict[tuple[str, int], asyncio.Semaphore] = field(default_factory=dict)

    def limit(self, key: tuple[str, int]) -> asyncio.Semaphore:
        return self.limits.setdefault(key, asyncio.Semaphore(self.per_destination))

    def take(self, key: tuple[str, int]) -> aiosmtplib.SMTP | None:
        conns = self.idle.get(key, [])
        while conns:
            c = conns.pop()
            if c.is_connected:
                return c
        return None

    def give_back(self, key: tuple[str, int], conn: aiosmtplib.SMTP) -> None:
        if conn.is_connected:
            self.idle.setdefault(key, []).append(conn)

    async def close(self) -> None:
        for conns in self.idle.values():
            for c in conns:
                try:
                    await asyncio.wait_for(c.quit(), 2)
                except Exception:
                    c.close()
        self.idle.clear()


class DeliveryWorker:
    def __init__(self, config: MailConfig, spool: Spool, directory: Directory, mx: MxResolver, metrics: MailMetrics,
                 dkim: DkimSigner, clock: Callable[[], float] = time.time):
        self.config, self.spool, self.directory, self.mx = config, spool, directory, mx
        self.metrics, self.dkim, self.clock = metrics, dkim, clock
        self.pool = Pool(config.per_destination_concurrency)
        self._total = asyncio.Semaphore(config.total_concurrency)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._cooldown: dict[str, float] = {}  # messages whose last attempt crashed: not before

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="mail-delivery")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        tasks = list(self._inflight.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.pool.close()

    def wake(self) -> None:
        """Look at the spool now (a message was just queued, or the queue CLI flushed)."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                self._start_due()
            except Exception:
                log.exception("spool scan failed")
            self.metrics.queue_size.set(self.spool.count())
            try:
                await asyncio.wait_for(self._wake.wait(), self.config.scan_interval)
            except TimeoutError:
                pass

    def _start_due(self) -> None:
        now = self.clock()
        for env in self.spool.envelopes():
            if env.id in self._inflight or env.hold or env.next_try > now or not env.pending:
                continue
            if self._cooldown.get(env.id, 0.0) > now:
                continue
            task = asyncio.create_task(self._attempt(env.id), name=f"deliver-{env.id}")
            self._inflight[env.id] = task
            task.add_done_callback(lambda t, i=env.id: self._inflight.pop(i, None))

    # -- one attempt of one message ---------------------------------------------------------

    async def _attempt(self, queue_id: str) -> None:
        try:
            await self._attempt_unguarded(queue_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug or an unexpected failure: keep the message, log it, retry later (not in a loop).
            log.exception("delivery attempt failed unexpectedly; will retry", extra={"queue_id": queue_id})
            self._cooldown[queue_id] = self.clock() + self.config.retry_first

    async def _attempt_unguarded(self, queue_id: str) -> None:
        self._cooldown.pop(queue_id, None)
        async with self._total:
            try:
                env = self.spool.load(queue_id)  # reread: the queue CLI may have changed it
            except FileNotFoundError:
                return
            if env.hold:
                return
            try:
                content = self.spool.content(queue_id)
            except FileNotFoundError:
                return
            by_domain: dict[str, list[Recipient]] = {}
            for r in env.pending:
                by_domain.setdefault(domain_of(r.address), []).append(r)
            before = {r.address: r.status for r in env.recipients}
            signed = self._sign(env, content)
            await asyncio.gather(*(self._deliver_domain(env, signed, d, rs) for d, rs in by_domain.items()))
            await self._settle(env, content, before)

    def _sign(self, env: Envelope, content: bytes) -> bytes:
        if env.inbound or env.is_bounce or not env.mail_from:
            return content
        try:
            return self.dkim.sign(content, domain_of(env.mail_from))
        except Exception:
            log.exception("DKIM signing failed; sending unsigned", extra={"queue_id": env.id})
            return content

    async def _route(self, env: Envelope, domain: str) -> Route:
        hosted = self.directory.hosted(domain)
        policy = self.config.tls_policy_domains.get(domain, self.config.tls_policy)
        port = self.config.remote_smtp_port
        if hosted is not None:
            hop = hosted.next_hop
            if not hop:
                raise DnsPermanent("5.3.5", f"no next hop configured for hosted domain {domain}")
            if hop.startswith("mx:"):
                targets = await self.mx.targets(hop[3:])
                return Route([(t, port) for t in targets], policy == "required")
            host, _, p = hop.rpartition(":")
            addresses = [host.strip("[]")] if _is_ip(host.strip("[]")) else await self.mx.addresses(host)
            if not addresses:
                raise DnsTemporary(f"no address for next hop {host}")
            return Route([(Target(host, a), int(p)) for a in addresses], policy == "required")
        return Route([(t, port) for t in await self.mx.targets(domain)], policy == "required")

    async def _deliver_domain(self, env: Envelope, content: bytes, domain: str, rcpts: list[Recipient]) -> None:
        try:
            route = await self._route(env, domain)
        except DnsPermanent as e:
            for r in rcpts:
                r.status, r.last_error = "failed", f"550 {e}"
            return
        except DnsTemporary as e:
            for r in rcpts:
                r.last_error = f"451 4.4.3 {e}"
            return
        last_error = "451 4.4.1 no mail host answered"
        for target, port in route.targets:
            try:
                await self._deliver_to(env, content, target, port, route.tls_required, rcpts)
                return
            except Deferred as e:
                last_error = str(e)
                log.info("host deferred", extra={"queue_id": env.id, "host": target.host, "error": last_error})
        for r in rcpts:
            if r.status == "pending":
                r.last_error = last_error

    async def _connect(self, target: Target, port: int, tls_required: bool) -> aiosmtplib.SMTP:
        c = aiosmtplib.SMTP(hostname=target.address, port=port, timeout=self.config.command_timeout,
                            local_hostname=self.config.hostname, start_tls=False, use_tls=False)
        try:
            await asyncio.wait_for(c.connect(), self.config.connect_timeout)
            await c.ehlo()
            if c.supports_extension("starttls"):
                ctx = ssl.create_default_context()
                if not (tls_required and self.config.tls_verify_required):
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
                await c.starttls(tls_context=ctx, server_hostname=target.host)
                await c.ehlo()
            elif tls_required:
                c.close()
                raise Deferred(f"454 4.7.4 TLS is required for {target.host} but it does not offer STARTTLS")
        except (aiosmtplib.SMTPException, OSError, TimeoutError, ssl.SSLError) as e:
            c.close()
            raise Deferred(f"451 4.4.1 connection to {target.host} [{target.address}]:{port} failed: {e}") from None
        return c

    async def _deliver_to(self, env: Envelope, content: bytes, target: Target, port: int, tls_required: bool,
                          rcpts: list[Recipient]) -> None:
        key = (target.address, port)
        async with self.pool.limit(key):
            conn = self.pool.take(key)
            if conn is not None:
                try:
                    await conn.rset()
                except (aiosmtplib.SMTPException, OSError, TimeoutError):
                    conn.close()
                    conn = None
            if conn is None:
                conn = await self._connect(target, port, tls_required)
            try:
                await self._transaction(conn, env, content, target, rcpts)
            except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError, TimeoutError) as e:
                conn.close()
                raise Deferred(f"451 4.4.2 connection to {target.host} lost: {e}") from None
            self.pool.give_back(key, conn)

    async def _transaction(self, conn: aiosmtplib.SMTP, env: Envelope, content: bytes, target: Target,
                           rcpts: list[Recipient]) -> None:
        mail_options = []
        needs_utf8 = env.smtputf8 or not env.mail_from.isascii() or any(not r.address.isascii() for r in rcpts)
        if needs_utf8:
            if not conn.supports_extension("smtputf8"):
                for r in rcpts:
                    r.status, r.remote_mta = "failed", target.host
                    r.last_error = f"553 5.6.7 {target.host} does not accept internationalised (SMTPUTF8) mail"
                return
            mail_options.append("SMTPUTF8")
        if env.body_8bit and conn.supports_extension("8bitmime"):
            mail_options.append("BODY=8BITMIME")
        dsn = conn.supports_extension("dsn")
        if dsn and env.ret:
            mail_options.append(f"RET={env.ret}")
        if dsn and env.envid:
            mail_options.append(f"ENVID={env.envid}")
        try:
            await conn.mail(env.mail_from, options=mail_options, encoding="utf-8" if needs_utf8 else "ascii")
        except aiosmtplib.SMTPResponseException as e:
            self._all(rcpts, e.code, e.message, target)
            await _rset(conn)
            return
        accepted = []
        for r in rcpts:
            options = []
            if dsn and r.notify:
                options.append("NOTIFY=" + ",".join(r.notify))
            if dsn and r.orcpt:
                options.append(f"ORCPT={r.orcpt}")
            try:
                await conn.rcpt(r.address, options=options, encoding="utf-8" if needs_utf8 else "ascii")
                accepted.append(r)
            except aiosmtplib.SMTPResponseException as e:
                self._one(r, e.code, e.message, target)
        if not accepted:
            await _rset(conn)
            return
        try:
            response = await conn.data(content)
        except aiosmtplib.SMTPResponseException as e:
            self._all(accepted, e.code, e.message, target)
            return
        for r in accepted:
            r.status, r.remote_mta, r.last_error = "delivered", target.host, f"{response.code} {response.message}"
            self.metrics.deliveries.labels("delivered").inc()
        log.info("delivered", extra={"queue_id": env.id, "host": target.host, "recipients": len(accepted)})

    def _one(self, r: Recipient, code: int, message: str, target: Target) -> None:
        r.remote_mta = target.host
        r.last_error = f"{code} {' '.join(message.split())}"
        if 500 <= code < 600:
            r.status = "failed"

    def _all(self, rcpts: list[Recipient], code: int, message: str, target: Target) -> None:
        for r in rcpts:
            self._one(r, code, message, target)

    # -- after an attempt --------------------------------------------------------------------

    async def _settle(self, env: Envelope, content: bytes, before: dict[str, str]) -> None:
        now = self.clock()
        env.attempts += 1
        if env.pending:
            nxt = retry.next_retry_at(env.attempts, now, env.received_at, self.config.retry_first,
                                      self.config.retry_max, self.config.max_queue_lifetime)
            if nxt is None:
                days = self.config.max_queue_lifetime / 86400
                for r in env.pending:
                    r.status = "failed"
                    r.last_error = f"{r.last_error or '451 4.4.7'} (gave up after {days:g} days in the queue)"
            else:
                env.next_try = nxt
                env.last_error = env.pending[0].last_error
                self.metrics.deliveries.labels("deferred").inc(len(env.pending))
                if now - env.received_at >= self.config.delay_warning:
                    late = [r for r in recipients_to_report(env, "delayed")
                            if r.status == "pending" and not r.delay_warned]
                    if late:
                        await self._report(env, content, late, "delayed")
                        for r in late:
                            r.delay_warned = True
        newly = {s: [r for r in env.recipients if r.status == s and before.get(r.address) != s]
                 for s in ("failed", "delivered")}
        self.metrics.deliveries.labels("failed").inc(len(newly["failed"]))
        for action, status in (("failed", "failed"), ("delivered", "delivered")):
            report = [r for r in recipients_to_report(env, action) if r in newly[status]]
            if report:
                await self._report(env, content, report, action)
        if env.pending:
            await self.spool.save(env)
        else:
            await self.spool.remove(env.id)
            log.info("message done", extra={"queue_id": env.id, "attempts": env.attempts})

    async def _report(self, env: Envelope, content: bytes, rcpts: list[Recipient], action: str) -> None:
        if not env.mail_from or env.is_bounce:
            return  # never a bounce of a bounce
        data = build_dsn(env, content, rcpts, action, self.config.hostname, self.config.postmaster)
        report = envelope_stub(mail_from="", recipients=[Recipient(env.mail_from)], is_bounce=True,
                               smtputf8=env.smtputf8)
        try:
            await self.spool.commit(report, data)
        except SpoolError:
            log.exception("could not queue a delivery report", extra={"queue_id": env.id})
            return
        log.info("delivery report queued", extra={"queue_id": env.id, "report_id": report.id, "action": action})
        self.wake()


async def _rset(conn: aiosmtplib.SMTP) -> None:
    try:
        await conn.rset()
    except (aiosmtplib.SMTPException, OSError, TimeoutError):
        conn.close()


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False
