"""A reference lean forwarder for ``bench.sfu``: the floor the SFU core can aim at.

Not the SFU.  It does the minimum an SRTP packet forwarder must do per packet, in its own
process pinned to one core: receive SRTP on a UDP socket, unprotect once, and per subscriber
rewrite SSRC and sequence number, protect with that subscriber's session and ``sendto``.  No
ICE, no DTLS (fixed test keys, the SRTP profile aiortc negotiates: AEAD_AES_256_GCM), no RTCP:
so its CPU per outgoing packet is a lower bound, and the send-to-receive latency through it,
minus a direct loopback path, is the floor of what a forwarding hop adds.

Two versions of the per-subscriber step: in Python (``struct`` rewrite, pylibsrtp ``protect``,
asyncio ``sendto``), and ``compiled``: one call per outgoing packet into ``media._fastpath``'s
``Sender`` (header write, libsrtp protect and ``sendto`` in C), the SFU's own send path.  The
compiled one leaves little but the kernel's UDP work and SRTP: what any forwarder pays.
"""

from __future__ import annotations

import asyncio
import atexit
import multiprocessing.connection
import os
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from pylibsrtp import Policy, Session

# AEAD_AES_256_GCM master key (32) + salt (12); test traffic on loopback only
KEY = bytes(range(44))
PROFILE = Policy.SRTP_PROFILE_AEAD_AES_256_GCM


def session(direction: int) -> Session:
    return Session(policy=Policy(key=KEY, ssrc_type=direction, srtp_profile=PROFILE))


def compiled_available() -> bool:
    from media import rtc_adapter

    return getattr(rtc_adapter, "_fastpath", None) is not None


FLOOR_SOURCE = Path(__file__).with_name("_sfu_floor.c")
_native: Path | None = None


def native_skipped() -> str | None:
    """Why the all-C floor (``_sfu_floor.c``) cannot be built here, or None."""
    if shutil.which("cc") is None:
        return "no C compiler (cc)"
    if not Path("/usr/include/srtp2/srtp.h").exists():
        return "libsrtp2 headers missing (Debian: apt-get install libsrtp2-dev)"
    return None


def native_binary() -> Path:
    """Build ``_sfu_floor.c`` once per process into a temporary directory; its path."""
    global _native
    if _native is None or not _native.exists():
        reason = native_skipped()
        if reason:
            raise RuntimeError(reason)
        build_dir = tempfile.mkdtemp(prefix="lienthong-floor-")
        atexit.register(shutil.rmtree, build_dir, ignore_errors=True)
        out = Path(build_dir) / "sfu_floor"
        subprocess.run(["cc", "-O2", "-o", str(out), str(FLOOR_SOURCE), "-lsrtp2"], check=True,
                       capture_output=True, text=True)
        _native = out
    return _native


def _compiled_sender(out: Session, sock: Any, addr: tuple[str, int]) -> Any:
    """The SFU's own compiled sender (``media.rtc_adapter`` builds it: pylibsrtp's internals
    stay there) on ``out``, for a fixed destination: its "nominated pair" never changes."""
    from media import rtc_adapter

    def slow(head: Any, rest: Any) -> bool:
        raise AssertionError("the reference forwarder's sender has no slow path")

    pair = object()
    sender = rtc_adapter._Srtp(out).compiled_sender(slow, sock, addr, {1: pair}, pair)
    if sender is None:
        raise RuntimeError("media._fastpath is not built")
    return sender


class _Forwarder(asyncio.DatagramProtocol):
    def __init__(self, subscribers: list[tuple[str, int]], compiled: bool = False) -> None:
        self.inbound = session(Policy.SSRC_ANY_INBOUND)
        # One outbound session per subscriber, as a real SFU has (own keys per DTLS association).
        self.outbound = [(session(Policy.SSRC_ANY_OUTBOUND), addr, i) for i, addr in enumerate(subscribers)]
        self.compiled = compiled
        self.senders: list[tuple[Any, int]] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.seq: dict[tuple[int, int], int] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.compiled:
            sock = transport.get_extra_info("socket")
            self.senders = [(_compiled_sender(out, sock, addr), i) for out, addr, i in self.outbound]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.compiled:
            self._forward_compiled(data)
            return
        plain = bytearray(self.inbound.unprotect(data))
        ts, ssrc = struct.unpack_from("!II", plain, 4)
        sendto = self.transport.sendto  # type: ignore[union-attr]
        for out, dest, i in self.outbound:
            key = (ssrc, i)
            seq = self.seq.get(key, 0)
            self.seq[key] = seq + 1
            struct.pack_into("!HII", plain, 2, seq & 0xFFFF, ts, ssrc ^ (i + 1))   # (the timestamp kept)
            sendto(out.protect(bytes(plain)), dest)

    def _forward_compiled(self, data: bytes) -> None:
        plain = self.inbound.unprotect(data)
        ts, ssrc = struct.unpack_from("!II", plain, 4)
        head, rest, b1 = plain[:12], memoryview(plain)[12:], plain[1]
        seqs = self.seq
        for sender, i in self.senders:
            key = (ssrc, i)
            seq = seqs.get(key, 0)
            seqs[key] = seq + 1
            sender.send_rewritten(head, rest, b1, seq & 0xFFFF, ts, ssrc ^ (i + 1), -1, 0)


async def _serve(conn: multiprocessing.connection.Connection, subscribers: list[tuple[str, int]], compiled: bool) -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: _Forwarder(subscribers, compiled),
                                                       local_addr=("127.0.0.1", 0))
    conn.send(transport.get_extra_info("sockname")[1])
    await loop.run_in_executor(None, conn.recv)  # parent says stop
    transport.close()


def run(conn: multiprocessing.connection.Connection, subscribers: list[tuple[str, int]], cpu: int | None,
        compiled: bool = False) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    asyncio.run(_serve(conn, subscribers, compiled))
