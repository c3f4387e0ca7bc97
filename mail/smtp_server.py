"""The SMTP listeners: aiosmtpd's protocol engine with three small additions.

``RelaySMTP`` (a subclass of aiosmtpd's ``SMTP``):
- takes RFC 3461 DSN parameters off MAIL/RCPT before aiosmtpd's parser (which refuses
  parameters it does not know) and leaves them in ``self.pending_dsn`` for the handler;
- refuses AUTH with 454 4.7.0 for a client address with too many recent failures;
- counts AUTH outcomes.
Listeners run on the service's own event loop (``loop.create_server``), not in
aiosmtpd's Controller thread.

CHUNKING (RFC 3030 BDAT) is not advertised: aiosmtpd 1.4.6 has no BDAT command, and adding
one would mean reimplementing its DATA state machine here; clients fall back to DATA.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from mail import policy
from mail.directory import Directory
from mail.metrics import MailMetrics


class RelaySMTP(SMTP):
    def __init__(self, handler: Any, *, throttle: policy.FailureThrottle, metrics: MailMetrics,
                 implicit_tls: bool = False, **kw: Any):
        super().__init__(handler, **kw)
        self.pending_dsn: dict[str, str] = {}
        self._throttle = throttle
        self._metrics = metrics
        self._implicit_tls = implicit_tls

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._implicit_tls and self._tls_protocol is None and transport.get_extra_info("ssl_object") is not None:
            # aiosmtpd only knows TLS begun by STARTTLS; on the implicit-TLS listener the whole
            # connection is TLS, so AUTH (auth_require_tls) must be offered.  aiosmtpd tests
            # ``self._tls_protocol`` for truth only outside STARTTLS: the one private attribute
            # touched here (tests/mail/test_submission.py::test_implicit_tls_submission covers it).
            self._tls_protocol = transport  # type: ignore[assignment]
            assert self.session is not None
            self.session.ssl = {"ssl_object": transport.get_extra_info("ssl_object")}

    async def smtp_MAIL(self, arg: str) -> None:
        arg, self.pending_dsn = policy.split_params(arg or "", policy.DSN_MAIL)
        await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg: str) -> None:
        arg, self.pending_dsn = policy.split_params(arg or "", policy.DSN_RCPT)
        await super().smtp_RCPT(arg)

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


async def start_listener(listen: str, factory: Any, ssl_context: ssl.SSLContext | None = None) -> asyncio.Server:
    host, port = parse_listen(listen)
    loop = asyncio.get_running_loop()
    return await loop.create_server(factory, host, port, ssl=ssl_context)
