"""A tiny real DNS server on 127.0.0.1 (UDP, port 0) answering from a dict, built with dnspython.

    zone = {("mx.example.", "MX"): ["10 mx1.example.", "20 mx2.example."],
            ("mx1.example.", "A"): ["127.0.0.2"]}
Names not in the zone get NXDOMAIN; known names without the type get an empty answer (NoAnswer).
"""

from __future__ import annotations

import asyncio
from typing import Any

import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer):
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            query = dns.message.from_wire(data)
        except Exception:
            return
        response = self.server.answer(query)
        assert self.transport is not None
        self.transport.sendto(response.to_wire(), addr)


class DnsServer:
    def __init__(self, zone: dict[tuple[str, str], list[str]]):
        self.zone = zone
        self.queries: list[tuple[str, str]] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0

    def answer(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        q = query.question[0]
        name = q.name.to_text().lower()
        rdtype = dns.rdatatype.to_text(q.rdtype)
        self.queries.append((name, rdtype))
        records = self.zone.get((name, rdtype))
        if records:
            response.answer.append(dns.rrset.from_text_list(q.name, 300, dns.rdataclass.IN, q.rdtype, records))
        elif not any(n == name for n, _ in self.zone):
            response.set_rcode(dns.rcode.NXDOMAIN)
        return response

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), local_addr=("127.0.0.1", 0))
        self.transport = transport  # type: ignore[assignment]
        self.port = transport.get_extra_info("sockname")[1]

    def stop(self) -> None:
        if self.transport is not None:
            self.transport.close()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"
