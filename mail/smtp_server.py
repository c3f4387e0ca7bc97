"""The SMTP listeners: aiosmtpd's protocol engine with a few additions.

``RelaySMTP`` (a subclass of aiosmtpd's ``SMTP``):
- takes RFC 3461 DSN parameters off MAIL/RCPT before aiosmtpd's parser (which refuses
  parameters it does not know) and leaves them in ``self.pending_dsn`` for the handler;
- refuses AUTH with 454 4.7.0 for a client address with too many recent failures;
- counts AUTH outcomes;
- reads DATA in bulk instead of line by line, with the strict-input checks done on the whole
  message at once (``data_problem``): bare CR or LF (SMTP smuggling, CVE-2023-51764 class),
  over-long lines, the SIZE limit (552 5.3.4, and nothing beyond the limit is buffered);
- builds each connection's protocol object without aiosmtpd's per-connection introspection.
Listeners run on the service's own event loop (``loop.create_server``), not in
aiosmtpd's Controller thread.

Where aiosmtpd internals are touched (all of it in this module, aiosmtpd pinned to 1.4.6 in
pyproject.toml, covered by tests/mail/test_smtp_engine.py which fails loudly on an upgrade):
``__init__`` (a copy of ``SMTP.__init__`` for the options we use, with the method tables
computed once per class and handler instead of with ``inspect.getmembers`` per connection),
``_getaddr`` (a fast path for plain ``<local@domain>``; anything else goes to aiosmtpd's
parser), ``smtp_DATA`` (the bulk reader), asyncio's ``StreamReader`` buffer in
``read_data`` (the same three private members ``readuntil`` itself uses), and the module
function ``aiosmtpd.smtp.sanitized_log``, replaced by one that skips dropped log lines.

CHUNKING (RFC 3030 BDAT) is not advertised: aiosmtpd 1.4.6 has no BDAT command, and adding
one would mean reimplementing its DATA state machine here; clients fall back to DATA.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import ssl
import weakref
from typing import Any

import aiosmtpd.smtp
import numpy as np
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, LoginPassword, _AuthMechAttr, syntax

from mail import policy
from mail.directory import Directory
from mail.metrics import MailMetrics

# aiosmtpd logs every command and reply at INFO on "mail.log" (a child of our "mail" logger);
# at relay rates that is most of a session's CPU.  The handler logs accepted messages.
logging.getLogger("mail.log").setLevel(logging.WARNING)


def _sanitized_log_if_enabled(func: Any, msg: Any, *args: Any, **kwargs: Any) -> None:
    """aiosmtpd's ``sanitized_log`` (two calls per command line) builds its sanitised copy of
    the arguments before the logger decides to drop the line; ask the logger first."""
    logger = getattr(func, "__self__", None)
    if isinstance(logger, logging.Logger) and not logger.isEnabledFor(_LEVELS.get(func.__name__, logging.CRITICAL)):
        return
    _aiosmtpd_sanitized_log(func, msg, *args, **kwargs)


_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_aiosmtpd_sanitized_log = aiosmtpd.smtp.sanitized_log
aiosmtpd.smtp.sanitized_log = _sanitized_log_if_enabled

# aiosmtpd counts a DATA line with its CRLF, before dot-unstuffing, and refuses > 1001 bytes.
LINE_LIMIT = SMTP.line_length_limit
END_OF_DATA = b"\r\n.\r\n"
# While reading DATA the stream may buffer this much before pausing the socket (aiosmtpd's
# 1001-byte command-line limit would pause and resume it for every few kilobytes).
DATA_READ_LIMIT = 256 * 1024

REPLY_TOO_BIG = "552 5.3.4 Message too big for system (see the SIZE in our EHLO reply)"
# aiosmtpd's answer to MAIL FROM with a SIZE= over the limit, and ours instead (enhanced code).
_AIOSMTPD_SIZE_REPLY = "552 Error: message size exceeds fixed maximum message size"
REPLY_SIZE_DECLARED_TOO_BIG = "552 5.3.4 Message size exceeds fixed maximum message size"
REPLY_LINE_TOO_LONG = "500 5.5.6 Line too long (see RFC5321 4.5.3.1.6)"
REPLY_BARE_CR_LF = "550 5.6.0 Message refused: bare CR or LF in the message (lines must end with CRLF)"


# --- DATA: pure checks on the raw bytes between "354" and CRLF.CRLF -------------------------

# Below this size data_problem uses bytes methods: numpy's fixed cost per call (array set-up,
# several passes, temporaries) is more than the scans of a few kilobytes.
SMALL_DATA = 16 * 1024


def data_problem(raw: bytes) -> tuple[str, str] | None:
    """(metrics reason, reply) refusing a DATA block (before unstuffing, terminator excluded).

    ``raw`` ends with CRLF (the terminator's first CRLF belongs to the last line)."""
    if not raw:
        return None
    return _small_data_problem(raw) if len(raw) <= SMALL_DATA else _large_data_problem(raw)


def _small_data_problem(raw: bytes) -> tuple[str, str] | None:
    """``data_problem`` with bytes methods (fast on small messages)."""
    # Every CR is in a CRLF and so is every LF exactly when all three counts agree.
    crlf = raw.count(b"\r\n")
    if raw.count(b"\r") != crlf or raw.count(b"\n") != crlf:
        return "bare_cr_lf", REPLY_BARE_CR_LF
    # A line's length counts its CRLF; split on LF leaves each line with its CR.
    if len(raw) > LINE_LIMIT and max(map(len, raw.split(b"\n"))) + 1 > LINE_LIMIT:
        return "line_too_long", REPLY_LINE_TOO_LONG
    return None


def _large_data_problem(raw: bytes) -> tuple[str, str] | None:
    """``data_problem`` vectorised with numpy: ``bytes.count`` walks a 100 KB message byte by
    byte in C, several times over."""
    a = np.frombuffer(raw, np.uint8)
    lf = a == 10
    cr = a == 13
    # Every CR followed by LF and every LF preceded by CR: else another server could read a
    # different end of data in it (SMTP smuggling).
    if lf[0] or cr[-1] or not np.array_equal(cr[:-1], lf[1:]):
        return "bare_cr_lf", REPLY_BARE_CR_LF
    if len(raw) > LINE_LIMIT:
        ends = np.flatnonzero(lf)  # last byte of each line; raw ends with one
        if ends[0] + 1 > LINE_LIMIT or (len(ends) > 1 and int(np.diff(ends).max()) > LINE_LIMIT):
            return "line_too_long", REPLY_LINE_TOO_LONG
    return None


def unstuff(raw: bytes) -> bytes:
    """RFC 5321 4.5.2: remove the leading dot of every line that has one."""
    if b"\r\n." in raw:
        raw = raw.replace(b"\r\n.", b"\r\n")
    if raw[:1] == b".":
        raw = raw[1:]
    return raw


async def read_data(reader: asyncio.StreamReader, max_size: int | None) -> tuple[bytes | None, int]:
    """Read a DATA block up to CRLF.CRLF, leaving pipelined commands after it in the stream.

    Returns ``(raw, size)``: ``raw`` is everything before the terminator's ``.CRLF`` (so it
    ends with CRLF, or is empty) and is None when ``size`` went over ``max_size``; then the
    rest was read and thrown away without being kept.  Works on the reader's buffer directly,
    as ``StreamReader.readuntil`` does, but with one search over each chunk instead of one
    call per line; the CRLF that ended the DATA command starts the first line, so a message
    may end at once with ``.CRLF``."""
    buf: bytearray = reader._buffer  # type: ignore[attr-defined]
    saved_limit = reader._limit  # type: ignore[attr-defined]
    reader._limit = max(saved_limit, DATA_READ_LIMIT)  # type: ignore[attr-defined]
    try:
        at_start, scanned, dropped = True, 0, 0
        while True:
            if at_start and len(buf) >= 3:
                at_start = False
                if buf[:3] == b".\r\n":
                    del buf[:3]
                    return b"", 0
            if not at_start:
                end = buf.find(END_OF_DATA, scanned)
                if end >= 0:
                    size = dropped + end + 2
                    raw = None if dropped or (max_size and size > max_size) else bytes(buf[:end + 2])
                    del buf[:end + 5]
                    return raw, size
                scanned = max(0, len(buf) - 4)
                if max_size and dropped + len(buf) > max_size + 4:
                    # Over the limit: keep only what could be the start of the terminator.
                    dropped += len(buf) - 4
                    del buf[:-4]
                    scanned = 0
            if reader.at_eof() or reader._eof:  # type: ignore[attr-defined]
                raise ConnectionResetError("connection closed during DATA")
            await reader._wait_for_data("read_data")  # type: ignore[attr-defined]
    finally:
        reader._limit = saved_limit  # type: ignore[attr-defined]
        reader._maybe_resume_transport()  # type: ignore[attr-defined]


# --- MAIL/RCPT addresses -----------------------------------------------------------------

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
# "<dot-atom@dot-atom-domain>" then parameters: aiosmtpd's parser returns exactly these parts
# for such input (tests/mail/test_smtp_engine.py compares them); anything else goes to it.
_PLAIN_ADDRESS = re.compile(
    rf"<({_ATEXT}+(?:\.{_ATEXT}+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>[ \t]*(?![(\s])(.*)\Z", re.S)


# --- the protocol ------------------------------------------------------------------------

# Per handler object, per protocol class: (smtp_ methods, auth mechanisms, handle_ hooks).
_TABLES: weakref.WeakKeyDictionary[Any, dict[type, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]] = (
    weakref.WeakKeyDictionary())


class _BoundMethods(dict):  # type: ignore[type-arg]
    """aiosmtpd's ``_smtp_methods`` (command -> method), binding on use: it calls only get()
    (each command) and items() (HELP), so a connection need not bind twenty methods."""

    def __init__(self, functions: dict[str, Any], obj: Any):
        super().__init__(functions)
        self._obj = obj

    def get(self, name: str, default: Any = None) -> Any:
        f = dict.get(self, name)
        return default if f is None else f.__get__(self._obj)

    def __getitem__(self, name: str) -> Any:
        return dict.__getitem__(self, name).__get__(self._obj)

    def values(self) -> list[Any]:  # type: ignore[override]
        return [f.__get__(self._obj) for f in dict.values(self)]

    def items(self) -> list[tuple[str, Any]]:  # type: ignore[override]
        return [(k, f.__get__(self._obj)) for k, f in dict.items(self)]


class OpenSessions:
    """The SMTP connections open in this process (all its listeners share one count)."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


class RelaySMTP(SMTP):
    def __init__(self, handler: Any, *, throttle: policy.FailureThrottle, metrics: MailMetrics,
                 sessions: OpenSessions | None = None, implicit_tls: bool = False, hostname: str | None = None, ident: str | None = None,
                 data_size_limit: int | None = 2**25, enable_SMTPUTF8: bool = False,
                 tls_context: ssl.SSLContext | None = None, require_starttls: bool = False,
                 timeout: float = 300, auth_required: bool = False, auth_require_tls: bool = True,
                 auth_exclude_mechanism: list[str] | None = None, authenticator: Any = None):
        # A copy of aiosmtpd 1.4.6's SMTP.__init__ for these options (no PROXY protocol, no
        # call limits, no decode_data, no auth_callback), with its method tables taken from a
        # per-(class, handler) cache: aiosmtpd builds them with inspect.getmembers and dir()
        # on every connection, a large share of a short session's CPU.
        self.__ident__ = ident or "Lien thong relay"
        self.loop = asyncio.get_running_loop()
        asyncio.StreamReaderProtocol.__init__(
            self, asyncio.StreamReader(loop=self.loop, limit=self.line_length_limit),
            client_connected_cb=self._cb_client_connected, loop=self.loop)
        self.event_handler = handler
        self.data_size_limit = data_size_limit
        self.enable_SMTPUTF8 = enable_SMTPUTF8
        self._decode_data = False
        self.hostname = hostname or socket.getfqdn()
        self.tls_context = tls_context
        self.require_starttls = tls_context and require_starttls
        self._timeout_duration = timeout
        self._timeout_handle = None
        self._deadline = 0.0
        self._tls_handshake_okay = True
        self._tls_protocol = None
        self._original_transport = None
        self.session = None
        self.envelope = None
        self.transport = None
        self._handler_coroutine = None
        self._auth_require_tls = auth_require_tls
        self._proxy_timeout = None
        self._authenticator = authenticator
        self._auth_callback = None
        self._auth_required = auth_required
        self._enforce_call_limit = False
        per_class = _TABLES.setdefault(handler, {})
        tables = per_class.get(type(self))
        if tables is None:
            tables = per_class[type(self)] = self._method_tables(handler)
        smtp_methods, auth_methods, hooks = tables
        self._smtp_methods = _BoundMethods(smtp_methods, self)
        self._auth_methods = {
            name: _AuthMechAttr(f.__get__(self), True) if builtin else _AuthMechAttr(f, False)
            for name, (f, builtin) in auth_methods.items() if name not in (auth_exclude_mechanism or ())}
        self._handle_hooks = hooks
        self._ehlo_hook_ver = "new" if "EHLO" in hooks else None

        self.pending_dsn: dict[str, str] = {}
        self._sessions = sessions
        self._counted = False  # in self._sessions (connection_made runs again after STARTTLS)
        self._throttle = throttle
        self._metrics = metrics
        self._implicit_tls = implicit_tls

    @classmethod
    def _method_tables(cls, handler: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """What aiosmtpd's __init__ derives by introspection, as unbound functions."""
        smtp_methods = {name[5:]: getattr(cls, name) for name in dir(cls) if name.startswith("smtp_")}
        auth_methods: dict[str, Any] = {}
        for obj, builtin in ((cls, True), (handler, False)):
            for name in dir(obj):
                if name.startswith("auth_"):
                    f = getattr(obj, name)
                    if callable(f):
                        mech = getattr(f, "__auth_mechanism_name__", name.replace("auth_", "").replace("__", "-"))
                        auth_methods[mech] = (f, builtin)
        hooks = {name[7:]: getattr(handler, name) for name in dir(handler) if name.startswith("handle_")}
        return smtp_methods, auth_methods, hooks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._sessions is not None and not self._counted:
            self._sessions.count += 1
            self._counted = True
        if self._implicit_tls and self._tls_protocol is None and transport.get_extra_info("ssl_object") is not None:
            # aiosmtpd only knows TLS begun by STARTTLS; on the implicit-TLS listener the whole
            # connection is TLS, so AUTH (auth_require_tls) must be offered.  aiosmtpd tests
            # ``self._tls_protocol`` for truth only outside STARTTLS: the one private attribute
            # touched here (tests/mail/test_submission.py::test_implicit_tls_submission covers it).
            self._tls_protocol = transport  # type: ignore[assignment]
            assert self.session is not None
            self.session.ssl = {"ssl_object": transport.get_extra_info("ssl_object")}

    def connection_lost(self, error: Exception | None) -> None:
        if self._counted:
            assert self._sessions is not None
            self._sessions.count -= 1
            self._counted = False
        super().connection_lost(error)

    def _reset_timeout(self, duration: float | None = None) -> None:
        # aiosmtpd cancels and re-creates a timer on every command; here the deadline moves and
        # the one timer, when it fires early, re-arms itself for the rest.
        self._deadline = self.loop.time() + (duration or self._timeout_duration)
        if self._timeout_handle is None or self._timeout_handle.cancelled():
            self._timeout_handle = self.loop.call_at(self._deadline, self._timeout_cb)

    def _timeout_cb(self) -> None:
        if self.loop.time() < self._deadline:
            self._timeout_handle = self.loop.call_at(self._deadline, self._timeout_cb)
            return
        super()._timeout_cb()  # type: ignore[no-untyped-call]  # (aiosmtpd is untyped)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        m = _PLAIN_ADDRESS.match(arg)
        if m is None or self.local_part_limit:
            return super()._getaddr(arg)
        return m.group(1), m.group(2)

    async def push(self, status: Any) -> None:
        if status == _AIOSMTPD_SIZE_REPLY:
            status = REPLY_SIZE_DECLARED_TOO_BIG
        await super().push(status)

    async def smtp_MAIL(self, arg: str) -> None:
        arg, self.pending_dsn = policy.split_params(arg or "", policy.DSN_MAIL)
        await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg: str) -> None:
        arg, self.pending_dsn = policy.split_params(arg or "", policy.DSN_RCPT)
        await super().smtp_RCPT(arg)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd 1.4.6's smtp_DATA with the bulk reader and strict checks (module docstring)."""
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        raw, _size = await read_data(self._reader, self.data_size_limit)
        problem = ("too_big", REPLY_TOO_BIG) if raw is None else data_problem(raw)
        if problem is not None:
            self._metrics.rejected.labels(problem[0]).inc()
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            await self.push(problem[1])
            return
        assert raw is not None
        content = unstuff(raw)
        self.envelope.content = content
        self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push("250 OK" if status is MISSING else status)

    async def smtp_AUTH(self, arg: str) -> None:
        peer = self._peer_address()
        if not self._throttle.allowed(peer):
            self._metrics.auth.labels("throttled").inc()
            await self.push("454 4.7.0 Too many failed authentication attempts; try again later")
            return
        await super().smtp_AUTH(arg)
        assert self.session is not None
        if self.session.authenticated:
            self._metrics.auth.labels("ok").inc()
        elif arg and arg.split()[0].upper() in ("PLAIN", "LOGIN") and self.session.auth_data is None:
            self._throttle.record(peer)
            self._metrics.auth.labels("failed").inc()

    def _peer_address(self) -> str:
        peer = self.session.peer if self.session else None
        return str(peer[0]) if isinstance(peer, tuple) else str(peer)


def make_authenticator(directory: Directory) -> Any:
    def authenticator(server: SMTP, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        if mechanism not in ("PLAIN", "LOGIN") or not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        try:
            username = auth_data.login.decode("utf-8")
            password = auth_data.password.decode("utf-8")
        except UnicodeDecodeError:
            return AuthResult(success=False, handled=False)
        identity = directory.authenticate(username, password)
        if identity is None:
            return AuthResult(success=False, handled=False)
        return AuthResult(success=True, auth_data=identity)

    return authenticator


def parse_listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


def reserve_port(listen: str) -> socket.socket:
    """A socket bound to ``listen`` ("host:port", port 0: any free one) with SO_REUSEPORT and
    not listening: it keeps the port for the processes that listen on it (start_listener with
    ``reuse_port``) and takes no connection itself."""
    host, port = parse_listen(listen)
    family, kind, proto, _, address = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


async def start_listener(listen: str, factory: Any, ssl_context: ssl.SSLContext | None = None, *,
                         reuse_port: bool = False, port: int | None = None) -> asyncio.Server:
    """Listen on ``listen`` ("host:port"); ``port`` overrides its port (accept workers bind
    the primary's actual port, which may have been 0 in the config); ``reuse_port``: several
    processes listen on it and the kernel spreads connections among them."""
    host, configured = parse_listen(listen)
    loop = asyncio.get_running_loop()
    return await loop.create_server(factory, host, configured if port is None else port, ssl=ssl_context,
                                    reuse_port=reuse_port or None)
