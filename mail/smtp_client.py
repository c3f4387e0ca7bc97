"""Outbound SMTP: one reusable client connection to a remote host, and the pool of them.

aiosmtplib does the connection, EHLO, STARTTLS and the reply parsing.  A transaction
(MAIL, RCPT..., DATA) goes through its protocol's ``write`` and ``read_response`` directly
(``OutboundConnection._exchange``, the one place touching aiosmtplib internals), not through
``mail``/``rcpt``/``data``:
- with PIPELINING (RFC 2920) MAIL, the RCPTs and DATA go in one write and their replies are
  read together: two round trips per message instead of four (aiosmtplib does not pipeline);
- addresses are ours, already checked at accept (no CR/LF, no spaces): no e-mail address
  parsing per command;
- content is already CRLF-clean (the accept side refuses bare CR/LF; our reports are
  generated with CRLF), so ``dot_stuff`` is two ``bytes`` scans instead of aiosmtplib's two
  regular-expression passes, and the data and the final dot go in one write;
- no RSET before each message on a reused connection: a completed DATA ends the transaction
  (RFC 5321 4.1.1.4); RSET is sent only after a transaction given up midway.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiosmtplib
import numpy as np
from aiosmtplib import SMTPResponse

# What a connection problem looks like from aiosmtplib or the socket layer.
CONNECTION_ERRORS = (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError, TimeoutError,
                     ssl.SSLError, ConnectionError)


class ConnectFailed(Exception):
    """No usable session with the host (refused, timed out, TLS refused); ``str`` is a 4xx reply."""


class ConnectionLost(Exception):
    """The session broke during a transaction; ``str`` is a 4xx reply."""


class StaleConnection(ConnectionLost):
    """A reused connection was found closed at the transaction's first command (nothing sent)."""


def _command(verb_and_address: bytes, options: Sequence[bytes]) -> bytes:
    """One command line.  Addresses were checked at accept; an option with a control
    character (never from our own parsing) is left out rather than sent."""
    parts = [verb_and_address, *(o for o in options if not _CONTROL.search(o))]
    line = b" ".join(parts)
    if _CONTROL.search(verb_and_address):
        raise ValueError("control character in an SMTP address")
    return line + b"\r\n"


_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")


def dot_stuff(content: bytes | Sequence[bytes], crlf_clean: bool = False) -> bytes:
    """The DATA payload for ``content`` (bytes, or parts to concatenate): CRLF line ends,
    leading dots doubled, ending CRLF.CRLF.

    ``crlf_clean``: the caller knows there is no bare CR or LF (spool content, checked at
    accept; reports we generate), which spares the three scans that would look for one."""
    if not crlf_clean:
        content = _crlf(content if isinstance(content, bytes) else b"".join(content))
    parts = [p for p in ((content,) if isinstance(content, bytes) else content) if p]
    if any(_has_dot_line(p) for p in parts) or any(
            a.endswith(b"\n") and b[:1] == b"." for a, b in zip(parts, parts[1:])):
        joined = b"".join(parts)
        joined = joined.replace(b"\r\n.", b"\r\n..")
        parts = [b"." + joined if joined[:1] == b"." else joined]
    elif parts and parts[0][:1] == b".":
        parts[0] = b"." + parts[0]
    if parts and ((parts[-2][-1:] if len(parts) > 1 else b"") + parts[-1][-2:])[-2:] != b"\r\n":
        parts.append(b"\r\n")
    parts.append(b".\r\n")
    return b"".join(parts)


def _crlf(data: bytes) -> bytes:
    n = data.count(b"\n")
    if n != data.count(b"\r\n") or data.count(b"\r") != n:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    return data


def _has_dot_line(data: bytes) -> bool:
    """Whether a line after the first starts with a dot (CRLF content)."""
    if len(data) < 16384:
        return b"\n." in data
    # A byte-wise search hits every CRLF; one vector pass over the dots is several times faster.
    a = np.frombuffer(data, dtype=np.uint8)
    dots = np.flatnonzero(a[1:] == 46)
    return bool(dots.size) and bool((a[dots] == 10).any())


@dataclass
class TlsContexts:
    """SSL contexts made once (loading the CA store costs tens of milliseconds each time)."""

    _unverified: ssl.SSLContext | None = None
    _verified: ssl.SSLContext | None = None

    def get(self, verify: bool) -> ssl.SSLContext:
        if verify:
            if self._verified is None:
                self._verified = ssl.create_default_context()
            return self._verified
        if self._unverified is None:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            self._unverified = ctx
        return self._unverified


@dataclass
class TransactionResult:
    """Replies of one transaction; ``rcpts[i]`` for the i-th recipient (None: not sent)."""

    mail: SMTPResponse
    rcpts: list[SMTPResponse | None]
    data: SMTPResponse | None  # None when DATA was not reached


class OutboundConnection:
    """One client session with a remote host, reused for several transactions."""

    def __init__(self, smtp: aiosmtplib.SMTP, host: str, timeout: float):
        self.smtp, self.host, self.timeout = smtp, host, timeout
        self.last_used = time.monotonic()
        self.transactions = 0
        self._read_extensions()

    def _read_extensions(self) -> None:
        ext = self.smtp.esmtp_extensions
        self.smtputf8 = "smtputf8" in ext
        self.eightbitmime = "8bitmime" in ext
        self.dsn = "dsn" in ext
        self.pipelining = "pipelining" in ext
        self.tls = self.smtp.get_transport_info("sslcontext") is not None

    @classmethod
    async def open(cls, host: str, address: str, port: int, *, local_hostname: str, connect_timeout: float,
                   command_timeout: float, tls_required: bool, tls: TlsContexts, verify_required: bool
                   ) -> OutboundConnection:
        """Connect, EHLO, STARTTLS when offered (or required).  Raises ConnectFailed."""
        smtp = aiosmtplib.SMTP(hostname=address, port=port, timeout=command_timeout, local_hostname=local_hostname,
                               start_tls=False, use_tls=False)
        try:
            await asyncio.wait_for(smtp.connect(), connect_timeout)
            await smtp.ehlo()
            if smtp.supports_extension("starttls"):
                await smtp.starttls(tls_context=tls.get(tls_required and verify_required), server_hostname=host)
                await smtp.ehlo()
            elif tls_required:
                smtp.close()
                raise ConnectFailed(f"454 4.7.4 TLS is required for {host} but it does not offer STARTTLS")
        except (aiosmtplib.SMTPException, *CONNECTION_ERRORS) as e:
            smtp.close()
            # wait_for's TimeoutError has no text: say what timed out (a host that never greets).
            reason = str(e) or (f"timed out after {connect_timeout:g} s (no SMTP greeting)"
                                if isinstance(e, TimeoutError) else e.__class__.__name__)
            raise ConnectFailed(f"451 4.4.1 connection to {host} [{address}]:{port} failed: {reason}") from None
        return cls(smtp, host, command_timeout)

    @property
    def is_connected(self) -> bool:
        return self.smtp.is_connected

    async def _exchange(self, commands: bytes, replies: int) -> list[SMTPResponse]:
        """Write ``commands`` (one, or a PIPELINING group) and read ``replies`` replies.

        The one place that reads aiosmtplib's protocol buffer: its ``data_received`` parses
        only the first reply of a segment and keeps the rest in ``_buffer``, so replies
        already there are taken with ``_read_response_from_buffer`` before waiting for more.
        ``read_response`` is awaited without its own timeout (``asyncio.timeout`` covers the
        exchange), so this task runs before the next segment's ``data_received``, which
        would otherwise drop a segment arriving while no reply is awaited.
        (tests/mail/test_smtp_client.py fails loudly when an aiosmtplib upgrade changes this.)"""
        protocol = self.smtp.protocol
        out: list[SMTPResponse] = []
        try:
            if protocol is None:
                raise aiosmtplib.SMTPServerDisconnected("connection lost")
            protocol.write(commands)
            async with asyncio.timeout(self.timeout):
                while len(out) < replies:
                    reply = protocol._read_response_from_buffer() if protocol._buffer else None
                    if reply is None:
                        reply = await protocol.read_response(timeout=None)
                    out.append(reply)
        except (aiosmtplib.SMTPResponseException, *CONNECTION_ERRORS) as e:
            self.close()  # a reply we gave up on would pair with the next command
            raise ConnectionLost(f"451 4.4.2 connection to {self.host} lost: {e or e.__class__.__name__}") from None
        if any(r.code == 421 for r in out):
            self.close()  # the host is closing the session
        return out

    async def transaction(self, mail_from: bytes, mail_options: Sequence[bytes],
                          rcpts: Sequence[tuple[bytes, Sequence[bytes]]], payload: bytes) -> TransactionResult:
        """One transaction; ``payload`` comes from ``dot_stuff``.  Raises ConnectionLost.

        Addresses are already encoded (UTF-8 only with SMTPUTF8 in the options).  With
        PIPELINING (RFC 2920), MAIL, the RCPTs and DATA go in one write."""
        self.last_used = time.monotonic()
        reused = self.transactions > 0
        self.transactions += 1
        mail_cmd = _command(b"MAIL FROM:<" + mail_from + b">", mail_options)
        rcpt_cmds = [_command(b"RCPT TO:<" + address + b">", options) for address, options in rcpts]
        replies: list[SMTPResponse | None]
        try:
            if self.pipelining:
                got = await self._exchange(b"".join((mail_cmd, *rcpt_cmds, b"DATA\r\n")), len(rcpt_cmds) + 2)
                mail, replies, start = got[0], list(got[1:-1]), got[-1]
            else:
                (mail,) = await self._exchange(mail_cmd, 1)
                if mail.code != 250:
                    await self._reset()
                    return TransactionResult(mail, [None] * len(rcpts), None)
                replies = [(await self._exchange(c, 1))[0] for c in rcpt_cmds]
                start = None
        except ConnectionLost as e:
            raise (StaleConnection(str(e)) if reused else e) from None
        if mail.code == 421 and reused:
            raise StaleConnection(f"421 {mail.message}")  # the host closed the session it kept idle
        accepted = mail.code == 250 and any(r is not None and r.code in (250, 251) for r in replies)
        if start is None and accepted:
            (start,) = await self._exchange(b"DATA\r\n", 1)
        if start is None or start.code != 354:
            await self._reset()
            return TransactionResult(mail, replies, start if accepted else None)
        if not accepted:
            # A pipelined DATA the host took although no recipient was: end it empty (RFC 2920 3.1).
            await self._exchange(b".\r\n", 1)
            await self._reset()
            return TransactionResult(mail, replies, None)
        (done,) = await self._exchange(payload, 1)
        self.last_used = time.monotonic()
        return TransactionResult(mail, replies, done)

    async def _reset(self) -> None:
        """RSET after a transaction given up midway; a connection that fails it is closed."""
        if not self.is_connected:
            return
        try:
            (reply,) = await self._exchange(b"RSET\r\n", 1)
        except ConnectionLost:
            return
        if reply.code != 250:
            self.close()

    def close(self) -> None:
        self.smtp.close()

    async def quit(self) -> None:
        try:
            await asyncio.wait_for(self.smtp.quit(), 2)
        except (aiosmtplib.SMTPException, *CONNECTION_ERRORS):
            pass
        self.smtp.close()


Destination = tuple[str, int, bool]  # (address, port, opened under a required TLS policy)


@dataclass
class ConnectionPool:
    """Connections per destination: at most ``per_destination`` in use at once, idle ones kept
    for reuse and closed after ``idle_timeout`` seconds (``close_idle``)."""

    per_destination: int
    idle_timeout: float = 10.0
    idle: dict[Destination, list[OutboundConnection]] = field(default_factory=dict)
    _limits: dict[Destination, asyncio.Semaphore] = field(default_factory=dict)
    _users: dict[Destination, int] = field(default_factory=dict)  # holding or waiting for a slot

    async def acquire(self, key: Destination) -> OutboundConnection | None:
        """Wait for a slot toward ``key``; an idle connection to reuse, or None (connect anew).
        Every acquire is followed by one ``release``."""
        sem = self._limits.get(key)
        if sem is None:
            sem = self._limits[key] = asyncio.Semaphore(self.per_destination)
        self._users[key] = self._users.get(key, 0) + 1
        try:
            await sem.acquire()
        except BaseException:
            self._drop_user(key)
            raise
        conns = self.idle.get(key)
        while conns:
            c = conns.pop()
            if c.is_connected:
                return c
        return None

    def release(self, key: Destination, conn: OutboundConnection | None) -> None:
        """Give the slot back, and ``conn`` to the idle list when it can take another message."""
        if conn is not None and conn.is_connected:
            self.idle.setdefault(key, []).append(conn)
        self._limits[key].release()
        self._drop_user(key)

    def _drop_user(self, key: Destination) -> None:
        n = self._users[key] - 1
        if n:
            self._users[key] = n
        else:
            del self._users[key]
            if key not in self.idle:
                del self._limits[key]

    async def close_idle(self, now: float | None = None) -> None:
        """QUIT connections idle for longer than ``idle_timeout``."""
        now = time.monotonic() if now is None else now
        old: list[OutboundConnection] = []
        for key, conns in list(self.idle.items()):
            keep = [c for c in conns if c.is_connected and now - c.last_used < self.idle_timeout]
            old += [c for c in conns if c not in keep]
            if keep:
                self.idle[key] = keep
            else:
                del self.idle[key]
                if key not in self._users:
                    self._limits.pop(key, None)
        await asyncio.gather(*(c.quit() for c in old))

    async def close(self) -> None:
        conns = [c for cs in self.idle.values() for c in cs]
        self.idle.clear()
        await asyncio.gather(*(c.quit() for c in conns))
