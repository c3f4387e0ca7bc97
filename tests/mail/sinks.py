"""Stand-ins for remote mail hosts: aiosmtpd servers on 127.0.0.N, all on one port.

Behaviours: "accept", "tempfail_once" (451 then 250), "reject" (550 at RCPT), "hang"
(accepts the connection and never answers), with or without STARTTLS.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    mail_options: list[str]
    peer: Any
    tls: bool


@dataclass
class SinkHandler:
    behaviour: str = "accept"
    messages: list[Received] = field(default_factory=list)
    connections: int = 0
    tempfailed: set[str] = field(default_factory=set)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    hanging: int = 0  # "hang" connections still open
    hang_closed: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]) -> str:
        if self.behaviour == "reject":
            return "550 5.1.1 No such user here"
        if self.behaviour == "tempfail_once" and address not in self.tempfailed:
            self.tempfailed.add(address)
            return "451 4.3.0 Try again later"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.messages.append(Received(envelope.mail_from or "", list(envelope.rcpt_tos),
                                      envelope.original_content or b"", list(envelope.mail_options),
                                      session.peer, session.ssl is not None))
        self.arrived.set()
        return "250 2.0.0 Accepted by sink"


class _Silent(asyncio.Protocol):
    """The "hang" behaviour: takes the connection and never says a word (counts it while open)."""

    def __init__(self, handler: SinkHandler):
        self.handler = handler

    def connection_made(self, transport: Any) -> None:
        self.handler.hanging += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.handler.hanging -= 1
        self.handler.hang_closed.set()


class Sink:
    def __init__(self, address: str, port: int, behaviour: str = "accept", tls: ssl.SSLContext | None = None):
        self.address, self.port = address, port
        self.handler = SinkHandler(behaviour)
        self.tls = tls
        self.server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        handler = self.handler

        def factory() -> Any:
            handler.connections += 1
            if handler.behaviour == "hang":
                return _Silent(handler)
            return SMTP(handler, hostname=f"sink-{self.address}", tls_context=self.tls, enable_SMTPUTF8=True,
                        decode_data=False)

        self.server = await loop.create_server(factory, self.address, self.port)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()

    async def wait_messages(self, n: int, timeout: float = 20.0) -> list[Received]:
        async def wait() -> None:
            while len(self.handler.messages) < n:
                self.handler.arrived.clear()
                await self.handler.arrived.wait()

        await asyncio.wait_for(wait(), timeout)
        return self.handler.messages


def free_port() -> int:
    """A port free on 127.0.0.1 for the sinks (each binds its own 127.0.0.N on it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
