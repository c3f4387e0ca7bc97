"""A reference lean forwarder for ``bench.sfu``: the floor the SFU core can aim at.

Not the SFU.  It does the minimum an SRTP packet forwarder must do per packet, in its own
process pinned to one core: receive SRTP on a UDP socket, unprotect once, and per subscriber
rewrite SSRC and sequence number with ``struct``, protect with that subscriber's session and
``sendto``.  No ICE, no DTLS (fixed test keys), no RTCP: so its CPU per outgoing packet is a
lower bound, and the send-to-receive latency through it, minus a direct loopback path, is the
floor of what a forwarding hop adds.
"""

from __future__ import annotations

import asyncio
import multiprocessing.connection
import os
import struct

from pylibsrtp import Policy, Session

KEY = bytes(range(30))  # AES128_CM_SHA1_80 master key + salt; test traffic on loopback only


def session(direction: int) -> Session:
    return Session(policy=Policy(key=KEY, ssrc_type=direction))


class _Forwarder(asyncio.DatagramProtocol):
    def __init__(self, subscribers: list[tuple[str, int]]) -> None:
        self.inbound = session(Policy.SSRC_ANY_INBOUND)
        # One outbound session per subscriber, as a real SFU has (own keys per DTLS association).
        self.outbound = [(session(Policy.SSRC_ANY_OUTBOUND), addr, i) for i, addr in enumerate(subscribers)]
        self.transport: asyncio.DatagramTransport | None = None
        self.seq: dict[tuple[int, int], int] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        plain = bytearray(self.inbound.unprotect(data))
        (ssrc,) = struct.unpack_from("!I", plain, 8)
        sendto = self.transport.sendto  # type: ignore[union-attr]
        for out, dest, i in self.outbound:
            key = (ssrc, i)
            seq = self.seq.get(key, 0)
            self.seq[key] = seq + 1
            struct.pack_into("!HxxxxI", plain, 2, seq & 0xFFFF, ssrc ^ (i + 1))
            sendto(out.protect(bytes(plain)), dest)


async def _serve(conn: multiprocessing.connection.Connection, subscribers: list[tuple[str, int]]) -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: _Forwarder(subscribers), local_addr=("127.0.0.1", 0))
    conn.send(transport.get_extra_info("sockname")[1])
    await loop.run_in_executor(None, conn.recv)  # parent says stop
    transport.close()


def run(conn: multiprocessing.connection.Connection, subscribers: list[tuple[str, int]], cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    asyncio.run(_serve(conn, subscribers))
