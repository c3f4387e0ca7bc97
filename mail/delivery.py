"""The delivery worker: hands queued messages on by SMTP, retries, reports.

Scheduling.  The worker keeps every spooled message it knows in memory: a just-accepted one
comes by ``notify`` (O(1): no spool scan per message, and its content straight from memory
within ``MEMORY_BUDGET``), others by a spool scan, done at start-up and every
``scan_interval`` (or soon after ``wake()``).  A scan lists the queue folder and reads only
what it does not know, or what changed on disk behind its back (the queue CLI rewrites an
envelope for hold/release/flush, or deletes a message).  Deferred messages wait in a heap of
next-try times.  At most ``total_concurrency`` messages are in delivery at once.

Per message and recipient domain: the route is the hosted domain's next hop (inbound mail),
else the domain's MX hosts in preference order (mail.dns); each host is tried until one takes
the transaction.  STARTTLS when offered (or required, per policy); connections are kept and
reused for further messages to the same host (mail.smtp_client); at most
``per_destination_concurrency`` connections per host.  Per recipient: 2xx delivered, 5xx
failed, 4xx or a connection problem deferred and retried on the schedule (mail.retry) until
the queue lifetime, then failed.  Failures (and delay warnings, and NOTIFY=SUCCESS) produce
RFC 3464 reports queued back into the spool (mail.bounce); a message with a null sender never
gets one.  Finished messages leave the spool in batches (``Spool.remove_many`` when the spool
has it): a crash before the removal only means the message is delivered again.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import ipaddress
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mail import retry
from mail.bounce import build_dsn, recipients_to_report
from mail.config import MailConfig
from mail.directory import Directory
from mail.dkim_sign import DkimSigner
from mail.dns import DnsPermanent, DnsTemporary, MxResolver, Target
from mail.metrics import MailMetrics
from mail.policy import domain_of
from mail.smtp_client import ConnectFailed, ConnectionLost, ConnectionPool, OutboundConnection, StaleConnection, \
    TlsContexts, TransactionResult, dot_stuff
from mail.spool import Envelope, Recipient, Spool, SpoolError, envelope_stub

log = logging.getLogger("mail.delivery")

# Content of just-accepted messages kept in memory for their first attempt, at most this many
# bytes in all; beyond it (a backlog), the first attempt reads the spool file like a retry.
MEMORY_BUDGET = 64 * 1024 * 1024
# A spool-scanning worker leaves alone a never-tried message it was not told about for this
# long: another process (mail.workers > 1) accepted it and makes its first attempt.
FIRST_ATTEMPT_GRACE = 600.0
# Finished messages are removed from the spool (and logged) in batches gathered this long.
REMOVAL_WINDOW = 0.02
# Idle connections to remote hosts are closed after this many seconds.
IDLE_TIMEOUT = 10.0

Stamp = tuple[int, int] | None  # (inode, mtime in ns) of a message's .env file; None: none yet


@dataclass
class Route:
    targets: list[tuple[Target, int]]  # (host, port)
    tls_required: bool


@dataclass
class Queued:
    """A spooled message as the worker holds it."""

    env: Envelope
    content: tuple[bytes, ...] | None  # parts, in memory until the first attempt (notify); None: read the file
    stamp: Stamp  # the .env the worker last read or wrote, to notice the queue CLI's edits
    state: str = "new"  # ready | waiting (in the heap, until ``due``) | running | held
    due: float = 0.0


def _stamp(path: str) -> Stamp:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns)


class DeliveryWorker:
    def __init__(self, config: MailConfig, spool: Spool, directory: Directory, mx: MxResolver, metrics: MailMetrics,
                 dkim: DkimSigner, clock: Callable[[], float] = time.time, scans_spool: bool = True,
                 first_attempt_grace: float = FIRST_ATTEMPT_GRACE):
        """``scans_spool=False``: a worker process's delivery, which only makes the first attempt
        of what its own process accepted (``notify``) and leaves retries, with the envelope
        saved, to the process that scans the spool.  That one, after its start-up scan, leaves
        a message it was not told about alone while it is fresh (never tried, queued less than
        ``first_attempt_grace`` seconds ago): another process is making its first attempt."""
        self.config, self.spool, self.directory, self.mx = config, spool, directory, mx
        self.metrics, self.dkim, self.clock = metrics, dkim, clock
        self.scans_spool, self.first_attempt_grace = scans_spool, first_attempt_grace
        self.pool = ConnectionPool(config.per_destination_concurrency, IDLE_TIMEOUT)
        self.tls = TlsContexts()
        self._messages: dict[str, Queued] = {}  # every message known, whatever its state
        self._ready: deque[str] = deque()  # due now, waiting for a delivery slot
        self._timers: list[tuple[float, str]] = []  # (next try, id); stale entries skipped
        self._running: dict[str, asyncio.Task[None]] = {}
        self._removing: set[str] = set()  # finished, removal from the spool under way
        self._removals: list[str] = []
        self._delivered_log: dict[str, list[str]] = {}  # host -> ids, logged with their removal
        self._memory = 0  # bytes of content held in Queued.content
        self._wake = asyncio.Event()
        self._removal_wake = asyncio.Event()
        self._scan_requested = False
        self._task: asyncio.Task[None] | None = None
        self._remover: asyncio.Task[None] | None = None
        self._delivered = metrics.deliveries.labels("delivered")
        self._deferred = metrics.deliveries.labels("deferred")
        self._failed = metrics.deliveries.labels("failed")

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self.scans_spool:
            # Before this returns, so before any other process starts accepting: the start-up
            # scan takes every message on disk, fresh or not.
            self._scan(startup=True)
        self._task = asyncio.create_task(self._run(), name="mail-delivery")
        self._remover = asyncio.create_task(self._remove_batches(), name="mail-delivery-removals")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        tasks = list(self._running.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._remover is not None:
            self._remover.cancel()
            await asyncio.gather(self._remover, return_exceptions=True)
            self._remover = None
        await self._remove_pending()
        await self.pool.close()

    # -- hand-offs -----------------------------------------------------------------------------

    def notify(self, queue_id: str, envelope: Envelope, content: bytes | Sequence[bytes] | None = None) -> None:
        """A message was just durably queued: deliver it now.  O(1); ``content`` (bytes, or the
        parts written after the spool header) spares reading it back from the spool."""
        if queue_id in self._messages or queue_id in self._removing:
            return
        parts: tuple[bytes, ...] | None = None
        if content is not None:
            parts = (content,) if isinstance(content, bytes) else tuple(content)
            size = sum(map(len, parts))
            if self._memory + size > MEMORY_BUDGET:
                parts = None
            else:
                self._memory += size
        q = Queued(envelope, parts, None)
        self._messages[queue_id] = q
        self._schedule(q)

    def wake(self) -> None:
        """Scan the spool soon (the queue CLI changed it, or a test wants no wait)."""
        if self.scans_spool:
            self._scan_requested = True
            self._wake.set()

    # -- scheduling ----------------------------------------------------------------------------

    def _schedule(self, q: Queued) -> None:
        env = q.env
        if env.hold:
            q.state = "held"
            self._drop_content(q)
        elif not env.pending:
            self._finish(q)  # nothing left to do (a crash cut it between delivery and removal)
        elif env.next_try <= self.clock():
            q.state = "ready"
            self._ready.append(env.id)
            self._start_ready()
        elif not self.scans_spool:
            self._forget(env.id)  # its retries belong to the process that scans the spool
        else:
            q.state, q.due = "waiting", env.next_try
            heapq.heappush(self._timers, (q.due, env.id))
            self._drop_content(q)
            self._wake.set()  # the loop's sleep may need to be shorter

    def _start_ready(self) -> None:
        limit = self.config.total_concurrency
        while self._ready and len(self._running) < limit:
            queue_id = self._ready.popleft()
            q = self._messages.get(queue_id)
            if q is None or q.state != "ready":
                continue  # a stale entry: forgotten or rescheduled meanwhile
            q.state = "running"
            task = asyncio.create_task(self._attempt(q), name=f"deliver-{queue_id}")
            self._running[queue_id] = task
            task.add_done_callback(functools.partial(self._attempt_done_callback, queue_id))

    def _attempt_done_callback(self, queue_id: str, task: asyncio.Task[None]) -> None:
        self._attempt_done(queue_id)

    def _attempt_done(self, queue_id: str) -> None:
        task = self._running.pop(queue_id, None)
        q = self._messages.get(queue_id)
        if q is not None and q.state == "running" and task is not None and not task.cancelled():
            # Every way out of an attempt reschedules or forgets the message; never leave it stuck.
            log.error("delivery attempt ended without a decision; retrying later", extra={"queue_id": queue_id})
            q.env.next_try = self.clock() + self.config.retry_first
            self._schedule(q)
        if self._ready:
            self._start_ready()

    async def _run(self) -> None:
        next_scan = self.clock() + self.config.scan_interval if self.scans_spool else float("inf")
        self._scan_requested = False
        next_idle_close = time.monotonic() + IDLE_TIMEOUT
        while True:
            self._wake.clear()
            now = self.clock()
            if self._scan_requested or now >= next_scan:
                self._scan_requested = False
                try:
                    self._scan()
                except OSError:
                    log.exception("spool scan failed")
                next_scan = now + self.config.scan_interval
            while self._timers and self._timers[0][0] <= now:
                due, queue_id = heapq.heappop(self._timers)
                q = self._messages.get(queue_id)
                if q is not None and q.state == "waiting" and q.due == due:
                    q.state = "ready"
                    self._ready.append(queue_id)
            self._start_ready()
            self.metrics.queue_size.set(len(self._messages))
            if time.monotonic() >= next_idle_close:
                await self.pool.close_idle()
                next_idle_close = time.monotonic() + IDLE_TIMEOUT / 2
            wait = min(next_scan - now, IDLE_TIMEOUT / 2)
            if self._timers:
                wait = min(wait, self._timers[0][0] - now)
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.0, wait))
            except TimeoutError:
                pass

    def _scan(self, startup: bool = False) -> None:
        """Reconcile with the spool folder: new files, envelopes edited by the queue CLI, deletions."""
        queue = str(self.spool.queue)
        on_disk: set[str] = set()
        stamps: dict[str, Stamp] = {}
        with os.scandir(queue) as entries:
            for entry in entries:
                name = entry.name
                if name.endswith(".msg"):
                    on_disk.add(name[:-4])
                elif name.endswith(".env"):
                    try:
                        st = entry.stat()
                    except FileNotFoundError:
                        continue
                    stamps[name[:-4]] = (st.st_ino, st.st_mtime_ns)
        for queue_id in [i for i, q in self._messages.items() if i not in on_disk and q.state != "running"]:
            self._forget(queue_id)  # deleted with the queue CLI
        fresh_since = self.clock() - self.first_attempt_grace
        for queue_id in on_disk:
            if queue_id in self._removing:
                continue
            q = self._messages.get(queue_id)
            stamp = stamps.get(queue_id)
            if q is not None and (q.stamp == stamp or q.state == "running"):
                continue
            try:
                env = self.spool.load(queue_id)
            except (FileNotFoundError, ValueError, TypeError, KeyError):
                continue  # removed meanwhile, or being replaced
            if q is None and not startup and env.attempts == 0 and env.received_at > fresh_since:
                continue  # another process accepted it and is making its first attempt
            if q is not None:
                self._unschedule(q)
                q.env, q.stamp = env, stamp
            else:
                q = self._messages[queue_id] = Queued(env, None, stamp)
            self._schedule(q)

    def _unschedule(self, q: Queued) -> None:
        q.state = "new"  # its heap or ready-queue entry, if any, is now stale

    def _forget(self, queue_id: str) -> None:
        q = self._messages.pop(queue_id, None)
        if q is not None:
            self._unschedule(q)
            self._drop_content(q)

    def _drop_content(self, q: Queued) -> None:
        if q.content is not None:
            self._memory -= sum(map(len, q.content))
            q.content = None

    def _finish(self, q: Queued) -> None:
        """The message is done: forget it and remove it from the spool (batched)."""
        queue_id = q.env.id
        self._forget(queue_id)
        self._removing.add(queue_id)
        self._removals.append(queue_id)
        self._removal_wake.set()

    async def _remove_batches(self) -> None:
        while True:
            await self._removal_wake.wait()
            # A short window gathers the messages finishing meanwhile into the same batch.
            await asyncio.sleep(REMOVAL_WINDOW)
            self._removal_wake.clear()
            await self._remove_pending()

    async def _remove_pending(self) -> None:
        batch, self._removals = self._removals, []
        if not batch:
            return
        try:
            remove_many = getattr(self.spool, "remove_many", None)
            if remove_many is not None:
                await remove_many(batch)
            else:
                await asyncio.gather(*(self.spool.remove(i) for i in batch))
        except SpoolError:
            log.exception("removing delivered messages from the spool failed; they may be delivered again",
                          extra={"messages": len(batch)})
        finally:
            self._removing.difference_update(batch)
            done, self._delivered_log = self._delivered_log, {}
            for host, ids in done.items():
                log.info("delivered", extra={"host": host, "messages": len(ids), "queue_ids": ",".join(ids)})

    # -- one attempt of one message --------------------------------------------------------------

    async def _attempt(self, q: Queued) -> None:
        queue_id = q.env.id
        try:
            await self._attempt_unguarded(q)
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug or an unexpected failure: keep the message, log it, retry later (not in a loop).
            log.exception("delivery attempt failed unexpectedly; will retry", extra={"queue_id": queue_id})
            if self._messages.get(queue_id) is q:
                q.env.next_try = self.clock() + self.config.retry_first
                self._schedule(q)

    def _current(self, q: Queued) -> bool:
        """Pick up the queue CLI's edits before an attempt; False: do not attempt now."""
        stamp = _stamp(f"{self.spool.queue}/{q.env.id}.env")
        if stamp == q.stamp:
            return True
        try:
            env = self.spool.load(q.env.id)
        except (FileNotFoundError, ValueError, TypeError, KeyError):
            self._forget(q.env.id)
            return False
        q.env, q.stamp = env, stamp
        if env.hold or not env.pending or env.next_try > self.clock():
            self._schedule(q)
            return False
        return True

    async def _attempt_unguarded(self, q: Queued) -> None:
        if not self._current(q):
            return
        env = q.env
        content = q.content
        if content is None:
            try:
                content = (self.spool.content(env.id),)
            except FileNotFoundError:
                self._forget(env.id)
                return
        else:
            self._drop_content(q)
        before = {r.address: r.status for r in env.recipients}
        # Spool content was checked for bare CR/LF at accept; reports and signatures we make use CRLF.
        payload = dot_stuff(self._sign(env, content), crlf_clean=True)
        by_domain: dict[str, list[Recipient]] = {}
        for r in env.pending:
            by_domain.setdefault(domain_of(r.address), []).append(r)
        if len(by_domain) == 1:
            ((domain, rcpts),) = by_domain.items()
            await self._deliver_domain(env, payload, domain, rcpts)
        else:
            await asyncio.gather(*(self._deliver_domain(env, payload, d, rs) for d, rs in by_domain.items()))
        await self._settle(q, content, before)

    def _sign(self, env: Envelope, content: tuple[bytes, ...]) -> tuple[bytes, ...]:
        if env.inbound or env.is_bounce or not env.mail_from:
            return content
        domain = domain_of(env.mail_from)
        if self.dkim.key_for(domain) is None:
            return content
        try:
            return (self.dkim.signature(b"".join(content), domain), *content)
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
            bare = host.strip("[]")
            addresses = [bare] if _is_ip(bare) else await self.mx.addresses(host)
            if not addresses:
                raise DnsTemporary(f"no address for next hop {host}")
            return Route([(Target(host, a), int(p)) for a in addresses], policy == "required")
        return Route([(t, port) for t in await self.mx.targets(domain)], policy == "required")

    async def _deliver_domain(self, env: Envelope, payload: bytes, domain: str, rcpts: list[Recipient]) -> None:
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
                await self._deliver_to(env, payload, target, port, route.tls_required, rcpts)
                return
            except (ConnectFailed, ConnectionLost) as e:
                last_error = str(e)
                log.info("host deferred", extra={"queue_id": env.id, "host": target.host, "error": last_error})
        for r in rcpts:
            if r.status == "pending":
                r.last_error = last_error

    async def _deliver_to(self, env: Envelope, payload: bytes, target: Target, port: int, tls_required: bool,
                          rcpts: list[Recipient]) -> None:
        # Connections opened under a required (verified) TLS policy are pooled apart.
        key = (target.address, port, tls_required)
        conn = await self.pool.acquire(key)
        try:
            if conn is not None:
                try:
                    await self._send(conn, env, payload, target, rcpts)
                    return
                except StaleConnection:
                    conn = None  # the host closed it while idle: once more on a fresh one
            conn = await OutboundConnection.open(
                target.host, target.address, port, local_hostname=self.config.hostname,
                connect_timeout=self.config.connect_timeout, command_timeout=self.config.command_timeout,
                tls_required=tls_required, tls=self.tls, verify_required=self.config.tls_verify_required)
            await self._send(conn, env, payload, target, rcpts)
        finally:
            self.pool.release(key, conn)

    async def _send(self, conn: OutboundConnection, env: Envelope, payload: bytes, target: Target,
                    rcpts: list[Recipient]) -> None:
        needs_utf8 = env.smtputf8 or not env.mail_from.isascii() or any(not r.address.isascii() for r in rcpts)
        mail_options: list[bytes] = []
        if needs_utf8:
            if not conn.smtputf8:
                for r in rcpts:
                    r.status, r.remote_mta = "failed", target.host
                    r.last_error = f"553 5.6.7 {target.host} does not accept internationalised (SMTPUTF8) mail"
                return
            mail_options.append(b"SMTPUTF8")
        if env.body_8bit and conn.eightbitmime:
            mail_options.append(b"BODY=8BITMIME")
        dsn = conn.dsn
        if dsn and env.ret:
            mail_options.append(f"RET={env.ret}".encode("ascii"))
        if dsn and env.envid:
            mail_options.append(f"ENVID={env.envid}".encode("ascii"))
        encoding = "utf-8" if needs_utf8 else "ascii"
        commands = []
        for r in rcpts:
            options = []
            if dsn and r.notify:
                options.append(("NOTIFY=" + ",".join(r.notify)).encode("ascii"))
            if dsn and r.orcpt:
                options.append(f"ORCPT={r.orcpt}".encode("utf-8"))
            commands.append((r.address.encode(encoding), options))
        result = await conn.transaction(env.mail_from.encode(encoding), mail_options, commands, payload)
        self._record(result, rcpts, target)

    def _record(self, result: TransactionResult, rcpts: list[Recipient], target: Target) -> None:
        if result.mail.code != 250:
            for r in rcpts:
                _outcome(r, result.mail.code, result.mail.message, target)
            return
        accepted = []
        for r, reply in zip(rcpts, result.rcpts):
            if reply is not None and reply.code in (250, 251):
                accepted.append(r)
            elif reply is not None:
                _outcome(r, reply.code, reply.message, target)
        data = result.data
        if data is None:
            return
        if data.code != 250:
            for r in accepted:
                _outcome(r, data.code, data.message, target)
            return
        text = f"{data.code} {' '.join(data.message.split())}"
        for r in accepted:
            r.status, r.remote_mta, r.last_error = "delivered", target.host, text
        self._delivered.inc(len(accepted))

    # -- after an attempt --------------------------------------------------------------------

    async def _settle(self, q: Queued, content: tuple[bytes, ...], before: dict[str, str]) -> None:
        env = q.env
        now = self.clock()
        env.attempts += 1
        pending = env.pending
        if pending:
            nxt = retry.next_retry_at(env.attempts, now, env.received_at, self.config.retry_first,
                                      self.config.retry_max, self.config.max_queue_lifetime)
            if nxt is None:
                days = self.config.max_queue_lifetime / 86400
                for r in pending:
                    r.status = "failed"
                    r.last_error = f"{r.last_error or '451 4.4.7'} (gave up after {days:g} days in the queue)"
                pending = []
            else:
                env.next_try = nxt
                env.last_error = pending[0].last_error
                self._deferred.inc(len(pending))
                if now - env.received_at >= self.config.delay_warning:
                    late = [r for r in recipients_to_report(env, "delayed")
                            if r.status == "pending" and not r.delay_warned]
                    if late:
                        await self._report(env, content, late, "delayed")
                        for r in late:
                            r.delay_warned = True
        failed = [r for r in env.recipients if r.status == "failed" and before.get(r.address) != "failed"]
        if failed:
            self._failed.inc(len(failed))
        if env.mail_from and not env.is_bounce and (failed or any(r.notify for r in env.recipients)):
            delivered = [r for r in env.recipients if r.status == "delivered" and before.get(r.address) != "delivered"]
            for action, newly in (("failed", failed), ("delivered", delivered)):
                report = [r for r in recipients_to_report(env, action) if r in newly] if newly else []
                if report:
                    await self._report(env, content, report, action)
        if self._messages.get(env.id) is not q:
            return  # deleted with the queue CLI during the attempt
        if pending:
            try:
                await self.spool.save(env)
            except SpoolError:
                log.exception("could not save delivery state; retrying from the previous one",
                              extra={"queue_id": env.id})
            q.stamp = _stamp(f"{self.spool.queue}/{env.id}.env")
            log.info("message deferred", extra={"queue_id": env.id, "attempts": env.attempts,
                                                "recipients": len(pending), "error": env.last_error})
            self._schedule(q)
        else:
            self._finish(q)
            failed = [r for r in env.recipients if r.status == "failed"]
            if failed:
                log.info("message done with failures", extra={
                    "queue_id": env.id, "attempts": env.attempts, "failed": len(failed),
                    "delivered": len(env.recipients) - len(failed), "error": failed[0].last_error})
            else:
                # One log line per host and removal batch, naming every message (a log line
                # per message cost a fifth of the delivery path's CPU).
                host = env.recipients[0].remote_mta if env.recipients else ""
                self._delivered_log.setdefault(host, []).append(env.id)

    async def _report(self, env: Envelope, content: tuple[bytes, ...], rcpts: list[Recipient], action: str) -> None:
        if not env.mail_from or env.is_bounce:
            return  # never a bounce of a bounce
        data = build_dsn(env, b"".join(content), rcpts, action, self.config.hostname, self.config.postmaster)
        report = envelope_stub(mail_from="", recipients=[Recipient(env.mail_from)], is_bounce=True,
                               smtputf8=env.smtputf8)
        try:
            await self.spool.commit(report, data)
        except SpoolError:
            log.exception("could not queue a delivery report", extra={"queue_id": env.id})
            return
        log.info("delivery report queued", extra={"queue_id": env.id, "report_id": report.id, "action": action})
        self.notify(report.id, report, data)


def _outcome(r: Recipient, code: int, message: str, target: Target) -> None:
    r.remote_mta = target.host
    r.last_error = f"{code} {' '.join(message.split())}"
    if 500 <= code < 600:
        r.status = "failed"


@functools.lru_cache(maxsize=1024)
def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False
