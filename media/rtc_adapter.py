"""Packet-level access to aiortc peer connections: the ONLY module that touches aiortc/aioice
private API (pinned in pyproject.toml: aiortc>=1.16,<1.17, aioice>=0.13,<0.14; the hooks are
checked by tests/media/test_rtc_adapter.py, which names the attribute when an upgrade moves it).

aiortc decodes everything it receives and encodes everything it sends.  An SFU must do neither,
so this adapter keeps aiortc for what it does well (SDP offer/answer, ICE, DTLS handshake,
SRTP keys) and takes over the media plane:

* **ICE host candidates from config** (aioice never offers 127.0.0.1/::1 and has no API to
  choose addresses or ports): ``IcePolicy`` = candidate addresses (empty: the host's
  interfaces, as aioice would), an announced address for 1:1 NAT (advertised instead of the
  bound address), a UDP port range.  Peer connections get ``rtc_configuration(ice_servers)``:
  max-bundle, and the configured STUN/TURN list only (never aiortc's default public STUN).
  Remote ``.local`` (mDNS) candidates are ignored: ``strip_mdns_candidates(sdp)`` for SDP,
  ``PacketPeer.add_ice_candidate`` for trickle.
* **Receive without decoding**: incoming SRTP is unprotected right in the UDP socket's
  ``datagram_received`` (no asyncio queue, no task wake-up; one function per datagram,
  ``_Srtp.receiver``; every datagram queued on the socket is read per readiness event, not one
  per event-loop iteration as asyncio does: ``_drain_reader``) and handed as ``bytes`` to
  ``on_rtp(packet, mid, arrival)`` / ``on_rtcp(packet)``.  ``RTCRtpReceiver.receive`` is
  replaced so no decoder thread and no RTCP task ever start; ``RtpPacket.parse`` never runs.
* **Send without encoding**: ``PacketPeer.send_rtp(bytes)`` / ``send_rtcp(bytes)`` protect
  once with the DTLS-SRTP session and ``sendto`` the nominated candidate pair, synchronously
  (no per-packet task).  ``RTCRtpSender.send`` is replaced so no encoder task pulls frames.
  The forwarding path uses ``send_parts(head, rest)``: the packet in two pieces (what a slot
  rewrote, what it only copies) joined in libsrtp's buffer, so no joined copy is ever built.

API (everything is synchronous except negotiation and close)::

    policy = IcePolicy(candidate_addresses=("127.0.0.1",))      # or IcePolicy.from_config(cfg.media)
    pc = RTCPeerConnection(rtc_configuration([]))                # max-bundle, no default STUN
    peer = PacketPeer(pc, policy, on_rtp=handle_rtp, on_rtcp=handle_rtcp)

    # answerer (the SFU): hook after setRemoteDescription, before setLocalDescription
    await pc.setRemoteDescription(RTCSessionDescription(strip_mdns_candidates(sdp), "offer"))
    for t in pc.getTransceivers(): t.direction = "sendrecv"   # public aiortc API
    peer.attach()
    await pc.setLocalDescription(await pc.createAnswer())      # gathers on the policy's addresses
    lines = peer.negotiated()         # [MLine(index, mid, kind, direction, local_ssrc, codecs, ...)]

    # offerer (test peers, bench load generator): hook after addTransceiver, before setLocalDescription
    pc.addTransceiver("video", direction="sendrecv"); peer.attach()
    await pc.setLocalDescription(await pc.createOffer()); ...; await pc.setRemoteDescription(answer)

    await peer.wait_connected(timeout)    # DTLS-SRTP keys ready (raises ConnectionError on failure)
    peer.send_rtp(packet)                 # bytes/bytearray -> bool; SSRC: negotiated()[i].local_ssrc
    peer.send_rtcp(compound)              # -> bool
    peer.send_parts(head, rest)           # -> bool: send_rtp(head + rest) without joining them
    await peer.add_ice_candidate({"candidate": "candidate:...", "sdpMid": "0", "sdpMLineIndex": 0})
    peer.local_candidates()               # ["candidate:..."] to trickle
    peer.connected / peer.failed          # media can flow / the path died (not closed by us)
    await peer.close()                    # closes the RTCPeerConnection and its sockets

    # ICE restart (aiortc has none): same DTLS-SRTP session and SSRCs, a new ICE agent
    answer = await peer.answer_ice_restart(offer_sdp)   # None: not a re-offer of this connection
    offer = await peer.offer_ice_restart(); await peer.accept_ice_restart_answer(answer)
    await peer.wait_ice_restart(timeout)                # media moved to the new agent

Callbacks run synchronously inside the event loop's UDP callback: they must not block and must
not raise (an exception is logged and the packet dropped).  ``on_rtp(packet, mid, arrival)``:
``packet`` is the decrypted RTP packet, ``mid`` the MID of its m-line (resolved from the SSRCs
the remote SDP declared, else learned once from the RFC 8843 MID header extension, else None),
``arrival`` is ``time.monotonic()`` at reception (the event loop's clock).  ``on_rtcp(packet)``
gets a decrypted compound RTCP packet.

``send_rtp`` protects the packet in libsrtp's buffer and ``sendto``s it on the selected pair's
non-blocking socket at once: no queue, no task.  It returns False without sending when the
DTLS-SRTP session is not up, there is no selected pair, or the socket's send buffer is full (a
slow or dead link): the caller decides what a drop means (video: wait for a keyframe).
``send_parts`` is an attribute holding the send function built for the nominated pair; it
checks per packet that aioice still nominates that pair (one dict lookup) and hands over to a
slow path that rebuilds it otherwise (re-nomination, ICE restart, session closed).

When ``media._fastpath`` is built (``setup.py``; optional), that send function is a C
``Sender`` for the pair: it holds a duplicate of the socket's descriptor (closed when the pair
changes, the agent is retired by an ICE restart, or the peer closes), the remote address as a
``sockaddr``, and calls libsrtp's ``srtp_protect`` through the pointer pylibsrtp's cffi binding
exports, on pylibsrtp's own session (the only other private use of pylibsrtp besides
``_Srtp``).  ``send_rewritten(head, rest, b1, seq, ts, ssrc, pid_at, pid)`` (None until then, and
without the C module) also writes the RTP header fields and a VP8 PictureID on the way: the
forwarder's per-subscriber send in one C call.  ``tx_packets``/``tx_dropped`` count both paths.
The receive side is C too then: each ICE socket's read callback is a ``media._fastpath.Reader``
(``_drain_reader`` in C) and the peer's SRTP receive function a ``Receive`` (``_Srtp.receiver``'s
function in C, unprotecting in the Reader's buffer); ``rx_packets``/``rx_errors`` count both.

What aiortc still does: SDP, ICE connectivity checks and consent, DTLS handshake.  What it no
longer does for hooked peers: RTCP reports, NACK/PLI/REMB, jitter buffer, RTX; the caller does
them from the raw packets.  A relayed (TURN) selected pair is not supported by the sender (the
server is reachable directly: configure candidate addresses; browsers may still use TURN).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import re
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aioice.ice
import pylibsrtp
from aioice import Candidate
from aioice.candidate import candidate_foundation, candidate_priority
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCIceServer, RTCPeerConnection
from aiortc import sdp as aiortc_sdp
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcicetransport import candidate_to_aioice
from aiortc.rtcrtptransceiver import RTCRtpTransceiver

from media import native

# the packet path in C (setup.py builds it when a compiler is at hand: Sender, Receive, Reader),
# or None: the same steps run in Python (_Srtp.parts_sender, _Srtp.receiver, _drain_reader)
_fastpath = native.fastpath

if TYPE_CHECKING:
    from media.config import MediaConfig

__all__ = ["Codec", "IcePolicy", "MLine", "PacketPeer", "RtcpHandler", "RtpHandler",
           "rtc_configuration", "strip_mdns_candidates", "is_rtcp"]

log = logging.getLogger("media.rtc")

RtpHandler = Callable[[bytes, "str | None", float], None]
RtcpHandler = Callable[[bytes], None]

# Default bound of a socket's pending (unsent) bytes before send_rtp drops: ~0.25 s at 4 Mbps.
DEFAULT_MAX_BACKLOG = 128 * 1024
_MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
_SOCKET_BUFFER = 256 * 1024  # = aioice's UDP_SOCKET_BUFFER_SIZE
# How long a DTLS session outlives a dead ICE agent, waiting for an ICE restart.
ICE_RESTART_GRACE = 30.0


def is_rtcp(packet: bytes) -> bool:
    """RFC 5761 demultiplexing: RTCP packet types 192..223 in the second byte."""
    return len(packet) > 1 and 192 <= packet[1] <= 223


# ---------------------------------------------------------------------------------------------
# ICE policy and configuration


@dataclass(frozen=True)
class IcePolicy:
    """Which host candidates the SFU offers.  Empty ``candidate_addresses``: the host's
    interfaces (aioice's own choice, loopback excluded).  ``announced_address``: advertised in
    every host candidate instead of the bound address (1:1 NAT).  ``port_min``/``port_max``:
    UDP port range for the sockets (0, 0: any port)."""

    candidate_addresses: tuple[str, ...] = ()
    announced_address: str = ""
    port_min: int = 0
    port_max: int = 0

    @classmethod
    def from_config(cls, media: MediaConfig) -> IcePolicy:
        return cls(tuple(media.candidate_addresses), media.announced_address,
                   media.udp_port_min, media.udp_port_max)


def configure_ice(candidate_addresses: Iterable[str] = (), announced_address: str = "",
                  port_range: tuple[int, int] = (0, 0)) -> IcePolicy:
    """Convenience spelling of ``IcePolicy(...)``."""
    return IcePolicy(tuple(candidate_addresses), announced_address, port_range[0], port_range[1])


def rtc_configuration(ice_servers: Sequence[dict[str, Any] | RTCIceServer] = ()) -> RTCConfiguration:
    """An ``RTCConfiguration`` with max-bundle and exactly the given STUN/TURN servers (browser
    ``RTCIceServer`` dicts or aiortc objects).  An empty list means no server at all: aiortc's
    default public STUN server is never used."""
    servers: list[RTCIceServer] = []
    for s in ice_servers:
        if isinstance(s, RTCIceServer):
            servers.append(s)
        else:
            servers.append(RTCIceServer(urls=s["urls"], username=s.get("username"),
                                        credential=s.get("credential")))
    return RTCConfiguration(iceServers=servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)


_MDNS_CANDIDATE = re.compile(r"^a=candidate:\S+ \d+ \S+ \d+ \S+\.local \d+.*$", re.IGNORECASE)


def strip_mdns_candidates(sdp: str) -> str:
    """Remove ``a=candidate`` lines whose address is an mDNS ``.local`` name (resolving them
    would send multicast queries; browsers on the same host also offer an IP candidate)."""
    lines = sdp.split("\r\n") if "\r\n" in sdp else sdp.split("\n")
    sep = "\r\n" if "\r\n" in sdp else "\n"
    return sep.join(line for line in lines if not _MDNS_CANDIDATE.match(line))


def _is_mdns_candidate(candidate_line: str) -> bool:
    parts = candidate_line.split()
    return len(parts) > 4 and parts[4].lower().endswith(".local")


# ---------------------------------------------------------------------------------------------
# Negotiated m-lines


@dataclass(frozen=True)
class Codec:
    payload_type: int
    name: str                # lower-case encoding name: "opus", "vp8", "h264", "rtx", ...
    clock_rate: int
    channels: int | None
    parameters: dict[str, Any] = field(default_factory=dict, compare=False)  # fmtp (rtx: "apt")
    feedback: tuple[str, ...] = ()   # "nack", "nack pli", "ccm fir", "goog-remb", ...


@dataclass(frozen=True)
class MLine:
    """One negotiated m-line, from this side's point of view."""

    index: int
    mid: str
    kind: str                # "audio" | "video"
    direction: str | None    # negotiated: "sendrecv" | "sendonly" | "recvonly" | "inactive"
    local_ssrc: int          # the SSRC this side sends with on this m-line (in its SDP)
    local_rtx_ssrc: int
    remote_ssrcs: tuple[int, ...]         # primary SSRCs the remote SDP declared
    remote_rtx: dict[int, int]            # remote RTX SSRC -> primary SSRC (FID groups)
    codecs: tuple[Codec, ...]
    extensions: dict[str, int]            # header extension URI -> negotiated id

    @property
    def sends(self) -> bool:
        return self.direction in ("sendrecv", "sendonly")

    @property
    def receives(self) -> bool:
        return self.direction in ("sendrecv", "recvonly")

    def codec(self, name: str) -> Codec | None:
        return next((c for c in self.codecs if c.name == name), None)


# ---------------------------------------------------------------------------------------------
# SRTP without per-packet allocation


class _Srtp:
    """libsrtp calls on a ``pylibsrtp.Session``'s own buffer: what ``Session.protect`` does,
    minus a per-call ``ffi.new`` and type check, and accepting a ``bytearray`` (no copy to
    bytes first).  Falls back to the Session's methods if pylibsrtp's internals moved."""

    def __init__(self, session: Any):
        self.session = session
        try:
            from pylibsrtp._binding import ffi, lib  # type: ignore[import-not-found]  # (cffi, no stubs)
            self._ffi = ffi
            self._buffer = session._buffer
            self._cdata = session._cdata
            self._ctx = session._srtp[0]
            self._len = ffi.new("int *")
            self._lib = lib
            self._capacity = len(self._buffer)
            self.fast = True
        except (ImportError, AttributeError):  # pragma: no cover - pinned by test_rtc_adapter
            self.fast = False
            self.protect = session.protect            # type: ignore[method-assign]
            self.protect_rtcp = session.protect_rtcp  # type: ignore[method-assign]
            self.unprotect = session.unprotect        # type: ignore[method-assign]
            self.unprotect_rtcp = session.unprotect_rtcp  # type: ignore[method-assign]

    def _run(self, fn: Any, data: bytes | bytearray, trailer: int) -> bytes:
        n = len(data)
        if n > self._capacity - trailer:
            raise ValueError("packet is too long")
        self._len[0] = n
        self._buffer[0:n] = data
        rc = fn(self._ctx, self._cdata, self._len)
        if rc:
            raise pylibsrtp.Error(f"libsrtp error {rc}")
        return self._buffer[0:self._len[0]]  # type: ignore[no-any-return]

    def protect(self, data: bytes | bytearray) -> bytes:
        return self._run(self._lib.srtp_protect, data, _SRTP_TRAILER)

    def sender(self, sendto: Callable[[Any, tuple[str, int]], Any], addr: tuple[str, int],
               rtcp: bool) -> Callable[[bytes | bytearray], None]:
        """One function that protects a packet in place in the session's buffer and hands that
        buffer (a view, no copy) to ``sendto``: the per-packet send path."""
        if not self.fast:
            protect = self.protect_rtcp if rtcp else self.protect

            def send_slow(packet: bytes | bytearray) -> None:
                sendto(protect(packet), addr)
            return send_slow
        fn = self._lib.srtp_protect_rtcp if rtcp else self._lib.srtp_protect
        limit = self._capacity - (_SRTCP_TRAILER if rtcp else _SRTP_TRAILER)
        buffer, cdata, ctx, length = self._buffer, self._cdata, self._ctx, self._len
        view = memoryview(buffer)

        def send(packet: bytes | bytearray) -> None:
            n = len(packet)
            if n > limit:
                raise ValueError("packet is too long")
            length[0] = n
            buffer[0:n] = packet
            rc = fn(ctx, cdata, length)
            if rc:
                raise pylibsrtp.Error(f"libsrtp error {rc}")
            sendto(view[:length[0]], addr)
        return send

    def parts_sender(self, peer: PacketPeer, sendto: Callable[[Any, tuple[str, int]], Any], addr: tuple[str, int],
                     nominated: dict[int, Any], pair: Any) -> Callable[[bytes | bytearray, Any], bool]:
        """``PacketPeer.send_parts`` for one nominated pair: head and rest copied straight into
        the session's buffer (no joined packet in between), protected there, ``sendto`` from it.
        Hands over to ``peer._send_parts_slow`` once aioice nominates another pair (or the
        agent is retired by an ICE restart: its nominations are cleared)."""
        slow = peer._send_parts_slow
        if not self.fast:  # pragma: no cover - pinned by test_rtc_adapter
            protect = self.protect

            def send_parts_slow(head: bytes | bytearray, rest: Any) -> bool:
                if nominated.get(1) is not pair:
                    return slow(head, rest)
                try:
                    sendto(protect(bytes(head) + bytes(rest)), addr)
                except Exception:
                    peer._tx_dropped += 1
                    return False
                peer._tx_packets += 1
                return True
            return send_parts_slow
        fn = self._lib.srtp_protect
        limit = self._capacity - _SRTP_TRAILER
        buffer, cdata, ctx, length = self._buffer, self._cdata, self._ctx, self._len
        view = memoryview(buffer)

        def send_parts(head: bytes | bytearray, rest: Any) -> bool:
            if nominated.get(1) is not pair:
                return slow(head, rest)
            n1 = len(head)
            n = n1 + len(rest)
            if n > limit:
                peer._tx_dropped += 1
                return False
            buffer[0:n1] = head
            buffer[n1:n] = rest
            length[0] = n
            if fn(ctx, cdata, length):
                peer._tx_dropped += 1
                return False
            try:
                sendto(view[:length[0]], addr)
            except OSError:  # BlockingIOError: the socket's send buffer is full (a slow or dead link)
                peer._tx_dropped += 1
                return False
            peer._tx_packets += 1
            return True
        return send_parts

    def compiled_sender(self, slow: Callable[[bytes | bytearray, Any], bool], sock: socket.socket,
                        addr: tuple[str, int], nominated: dict[int, Any], pair: Any) -> Any:
        """A ``media._fastpath.Sender`` doing what ``parts_sender``'s function does (and the
        header rewrite of the forwarding path) in C, or None when that module is not built,
        pylibsrtp's internals moved, or the address is not a numeric IP."""
        if _fastpath is None or not self.fast:
            return None
        ffi = self._ffi
        try:
            return _fastpath.Sender(int(ffi.cast("uintptr_t", ffi.addressof(self._lib, "srtp_protect"))),
                                    int(ffi.cast("uintptr_t", self._ctx)), self.session, sock.fileno(),
                                    tuple(addr), nominated, pair, slow)
        except (TypeError, ValueError, OSError, AttributeError) as e:  # pragma: no cover
            log.warning("compiled send path unavailable for %s: %s", addr, e)
            return None

    def protect_rtcp(self, data: bytes | bytearray) -> bytes:
        return self._run(self._lib.srtp_protect_rtcp, data, _SRTCP_TRAILER)

    def receiver(self, peer: PacketPeer) -> Callable[[bytes], None]:
        """One function for an incoming SRTP/SRTCP datagram: unprotect it in the session's
        buffer and hand the packet to the peer's callbacks (``PacketPeer._receive``)."""
        if not self.fast:  # pragma: no cover - pinned by test_rtc_adapter
            return peer._receive_srtp
        if _fastpath is not None:   # the same steps in C (media._fastpath.Receive)
            ffi, lib = self._ffi, self._lib
            return _fastpath.Receive(int(ffi.cast("uintptr_t", ffi.addressof(lib, "srtp_unprotect"))),  # type: ignore[no-any-return]
                                     int(ffi.cast("uintptr_t", ffi.addressof(lib, "srtp_unprotect_rtcp"))),
                                     int(ffi.cast("uintptr_t", self._ctx)), self.session, peer, _log_rtp_failure)
        unprotect, unprotect_rtcp = self._lib.srtp_unprotect, self._lib.srtp_unprotect_rtcp
        buffer, cdata, ctx, length = self._buffer, self._cdata, self._ctx, self._len
        capacity = self._capacity
        monotonic = time.monotonic
        unpack_ssrc = _SSRC.unpack_from

        def receive(data: bytes) -> None:
            n = len(data)
            if n > capacity or n < 2:
                peer._rx_errors += 1
                return
            length[0] = n
            buffer[0:n] = data
            if 192 <= data[1] <= 223:
                if unprotect_rtcp(ctx, cdata, length):   # replay, authentication: drop, like aiortc does
                    peer._rx_errors += 1
                    return
                peer._deliver_rtcp(buffer[0:length[0]])
                return
            if unprotect(ctx, cdata, length):
                peer._rx_errors += 1
                return
            peer._rx_packets += 1
            handler = peer.on_rtp
            if handler is None or length[0] < 12:
                return
            packet = buffer[0:length[0]]
            ssrc = unpack_ssrc(packet, 8)[0]
            try:
                mid = peer._ssrc_mid[ssrc]
            except KeyError:
                mid = peer._learn_mid(packet, ssrc)
            try:
                handler(packet, mid, monotonic())
            except Exception as exc:
                _log_rtp_failure(exc)
        return receive

    def unprotect(self, data: bytes | bytearray) -> bytes:
        return self._run(self._lib.srtp_unprotect, data, 0)

    def unprotect_rtcp(self, data: bytes | bytearray) -> bytes:
        return self._run(self._lib.srtp_unprotect_rtcp, data, 0)


_SRTP_TRAILER = getattr(pylibsrtp, "SRTP_MAX_TRAILER_LEN", 144)
_SRTCP_TRAILER = getattr(pylibsrtp, "SRTP_MAX_SRTCP_TRAILER_LEN", 148)


# ---------------------------------------------------------------------------------------------
# The UDP protocol: fast path for SRTP/SRTCP, aioice for everything else


class _PacketProtocol(aioice.ice.StunProtocol):
    """aioice's STUN protocol, except that SRTP/SRTCP datagrams (first byte 128..191,
    RFC 7983) go straight to the owning PacketPeer once its SRTP session exists, instead of
    through aioice's receive queue and aiortc's DTLS receive task."""

    peer: PacketPeer | None = None

    def datagram_received(self, data: bytes | str, addr: tuple[Any, ...]) -> None:
        peer = self.peer
        if peer is not None and type(data) is bytes and data and 127 < data[0] < 192:
            receive = peer._receive
            if receive is not None:
                receive(data)
                return
        super().datagram_received(data, addr)


# RTCRtpReceiver's remote bitrate estimator (name-mangled private attribute; None for audio)
_RECEIVER_ESTIMATOR = "_RTCRtpReceiver__remote_bitrate_estimator"


# Datagrams read per readiness event of one socket (asyncio reads one per loop iteration).
DRAIN_MAX = 32
_MAX_DATAGRAM = 65536   # > the largest UDP payload (65507 over IPv4, 65527 over IPv6)


def _log_rtp_failure(exc: BaseException) -> None:
    log.error("RTP handler failed", exc_info=exc)


def _drain_reader(transport: Any, sock: socket.socket, protocol: _PacketProtocol) -> Callable[[], None]:
    """A replacement for asyncio's ``_SelectorDatagramTransport._read_ready``: every datagram
    already queued on the socket (up to ``DRAIN_MAX``) in one callback, instead of one per
    event-loop iteration (a video frame arrives as a burst of packets).  Same error handling."""
    recvfrom = sock.recvfrom
    # asyncio asks for 256 KiB per datagram: CPython allocates that much for each recvfrom
    # (an mmap + munmap here: ~15 us a datagram); 64 KiB holds any UDP datagram and stays
    # in malloc's heap (~2 us).
    max_size = min(transport.max_size, _MAX_DATAGRAM)
    datagram_received = protocol.datagram_received

    def read_ready() -> None:
        for _ in range(DRAIN_MAX):
            if transport._closing:   # closed, maybe by the previous datagram's callback
                return
            try:
                data, addr = recvfrom(max_size)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                protocol.error_received(exc)
                return
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                transport._fatal_error(exc, "Fatal read error on datagram transport")
                return
            peer = protocol.peer     # _PacketProtocol.datagram_received's SRTP fast path, inlined
            if peer is not None and data and 127 < data[0] < 192:
                receive = peer._receive
                if receive is not None:
                    receive(data)
                    continue
            datagram_received(data, addr)
    return read_ready


def _install_drain_reader(loop: asyncio.AbstractEventLoop, transport: Any, protocol: _PacketProtocol) -> None:
    """Register ``_drain_reader`` for a selector loop's datagram transport, or the same in C
    (``media._fastpath.Reader``) when that is built (other loops keep their own reader)."""
    sock = getattr(transport, "_sock", None)
    add_reader = getattr(loop, "_add_reader", None)
    if isinstance(sock, socket.socket) and add_reader is not None and hasattr(transport, "max_size") \
            and hasattr(transport, "_closing"):
        if _fastpath is not None:
            add_reader(sock.fileno(), _fastpath.Reader(transport, sock.fileno(), protocol,
                                                       min(transport.max_size, _MAX_DATAGRAM)))
        else:
            add_reader(sock.fileno(), _drain_reader(transport, sock, protocol))


async def _bind_udp(loop: asyncio.AbstractEventLoop, factory: Callable[[], _PacketProtocol],
                    address: str, port_min: int, port_max: int) -> tuple[asyncio.DatagramTransport,
                                                                        _PacketProtocol]:
    if (port_min, port_max) == (0, 0):
        return await loop.create_datagram_endpoint(factory, local_addr=(address, 0))
    ports = list(range(port_min, port_max + 1))
    start = random.randrange(len(ports))
    last: OSError | None = None
    for port in ports[start:] + ports[:start]:
        try:
            return await loop.create_datagram_endpoint(factory, local_addr=(address, port))
        except OSError as exc:
            last = exc
    raise OSError(f"no free UDP port in {port_min}-{port_max} on {address}: {last}")


def _install_host_gathering(connection: aioice.ice.Connection, policy: IcePolicy, peer: PacketPeer) -> None:
    """Replace host-candidate gathering of one aioice Connection (per instance): sockets bound
    on the policy's addresses and port range, owned by aioice (closed by Connection.close) but
    built with our protocol.  STUN/TURN candidates keep aioice's code."""
    original = connection.get_component_candidates

    async def get_component_candidates(component: int, addresses: list[str], timeout: int = 5) -> list[Candidate]:
        loop = asyncio.get_running_loop()
        if connection._transport_policy != aioice.ice.TransportPolicy.ALL:
            addresses = []
        elif policy.candidate_addresses:
            addresses = list(policy.candidate_addresses)
        candidates: list[Candidate] = []
        protocols: list[_PacketProtocol] = []
        for address in addresses:
            def factory() -> _PacketProtocol:
                protocol = _PacketProtocol(connection)
                protocol.peer = peer
                return protocol
            try:
                transport, protocol = await _bind_udp(loop, factory, address, policy.port_min, policy.port_max)
            except OSError as exc:
                log.warning("cannot bind an ICE candidate", extra={"address": address, "error": str(exc)})
                continue
            sock = transport.get_extra_info("socket")
            if sock is not None:
                # aioice's receive buffer: room for bursts (a keyframe), not for seconds of
                # media piling up behind a busy event loop (that would be latency, not loss).
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SOCKET_BUFFER)
            _install_drain_reader(loop, transport, protocol)
            bound = transport.get_extra_info("sockname")
            host = policy.announced_address or bound[0]
            protocol.local_candidate = Candidate(
                foundation=candidate_foundation("host", "udp", host), component=component,
                transport="udp", priority=candidate_priority(component, "host"),
                host=host, port=bound[1], type="host")
            candidates.append(protocol.local_candidate)
            protocols.append(protocol)
        connection._protocols += protocols
        # Server-reflexive candidates for our sockets (only with a configured STUN server).
        if connection.stun_server:
            for protocol in protocols:
                if ipaddress.ip_address(protocol.transport.get_extra_info("sockname")[0]).version == 4:
                    with contextlib.suppress(Exception):
                        candidate, _ = await asyncio.wait_for(
                            aioice.ice.server_reflexive_candidate(protocol, connection.stun_server), timeout)
                        candidates.append(candidate)
        # TURN (relayed) candidates: aioice's own code, no host sockets, no STUN.
        stun_server, connection.stun_server = connection.stun_server, None
        try:
            candidates += await original(component=component, addresses=[], timeout=timeout)
        finally:
            connection.stun_server = stun_server
        return candidates

    connection.get_component_candidates = get_component_candidates  # type: ignore[method-assign]


# ---------------------------------------------------------------------------------------------
# The peer


class PacketPeer:
    """Packet-level media plane of one ``RTCPeerConnection`` (max-bundle: one DTLS transport).

    Create it right after the peer connection, ``attach()`` once the transceivers exist and
    before ``setLocalDescription``; then read ``negotiated()`` after the offer/answer."""

    def __init__(self, pc: RTCPeerConnection, policy: IcePolicy | None = None, *,
                 on_rtp: RtpHandler | None = None, on_rtcp: RtcpHandler | None = None,
                 max_backlog: int = DEFAULT_MAX_BACKLOG):
        self.pc = pc
        self.policy = policy or IcePolicy()
        self.on_rtp = on_rtp
        self.on_rtcp = on_rtcp
        self.max_backlog = max_backlog
        self._rx: _Srtp | None = None       # once DTLS is up
        self._tx: _Srtp | None = None
        self._receive: Callable[[bytes], None] | None = None   # the SRTP fast path, once DTLS is up
        self._dtls: RTCDtlsTransport | None = None
        self._ice: aioice.ice.Connection | None = None      # the ICE agent media flows on
        self._ice_pending: aioice.ice.Connection | None = None  # an ICE restart in progress
        self._ice_retired: list[aioice.ice.Connection] = []
        self._ice_changed = asyncio.Event()
        self._restart_task: asyncio.Task[None] | None = None
        self._restart_local: tuple[str, str, list[Candidate]] | None = None
        self._hooked_transceivers: set[int] = set()
        self._hooked_connections: set[int] = set()
        self._ssrc_mid: dict[int, str | None] = {}
        self._mid_ext_id: int | None = None
        self._pair: Any = None
        self._rtp_send: Callable[[bytes | bytearray], None] | None = None
        self._rtcp_send: Callable[[bytes | bytearray], None] | None = None
        # send_parts(head, rest) -> bool: the forwarding path (see below); rebuilt on pair changes
        self.send_parts: Callable[[bytes | bytearray, Any], bool] = self._send_parts_slow
        self._parts_send: Callable[[bytes | bytearray, Any], bool] | None = None
        # send_rewritten(head, rest, b1, seq, ts, ssrc, pid_at, pid) -> bool: send_parts with the
        # RTP header written on the way, in C; None until the compiled sender for the nominated
        # pair exists (media._fastpath built, a plain UDP pair), then the forwarder prefers it.
        self.send_rewritten: Callable[..., bool] | None = None
        self._compiled: Any = None   # the media._fastpath.Sender behind send_rewritten
        self._connected = asyncio.Event()
        self._closed = False
        self._rx_packets = 0       # counted here, plus by a compiled Receive (rx_packets)
        self._tx_packets = 0
        self._tx_dropped = 0
        self._rx_errors = 0
        self.ice_restarts = 0

    @property
    def rx_packets(self) -> int:
        """RTP packets received and unprotected (the compiled receive's included)."""
        return self._rx_packets + getattr(self._receive, "packets", 0)

    @property
    def rx_errors(self) -> int:
        """SRTP/SRTCP datagrams dropped: too short or long, failed authentication, replayed."""
        return self._rx_errors + getattr(self._receive, "errors", 0)

    def _set_receive(self, receive: Callable[[bytes], None] | None) -> None:
        """Replace the SRTP receive function, keeping a compiled one's counts."""
        old: Any = self._receive
        self._receive = receive
        if old is not None and hasattr(old, "packets"):   # a media._fastpath.Receive
            self._rx_packets += old.packets
            self._rx_errors += old.errors
            old.close()

    def _learn_mid(self, packet: bytes, ssrc: int) -> str | None:
        """The MID of a new SSRC, from the MID header extension (None: unknown), remembered."""
        mid = self._ssrc_mid[ssrc] = _mid_from_extension(packet, self._mid_ext_id)
        return mid

    @property
    def tx_packets(self) -> int:
        """RTP/RTCP packets sent (the compiled sender's included)."""
        compiled = self._compiled
        return self._tx_packets + (compiled.sent if compiled is not None else 0)

    @property
    def tx_dropped(self) -> int:
        """Packets dropped on the way out (full socket buffer, no pair, too long)."""
        compiled = self._compiled
        return self._tx_dropped + (compiled.dropped if compiled is not None else 0)

    def _drop_compiled(self) -> None:
        """Retire the compiled sender (its counts kept, its socket descriptor closed)."""
        compiled, self._compiled = self._compiled, None
        self.send_rewritten = None
        if compiled is not None:
            self._tx_packets += compiled.sent
            self._tx_dropped += compiled.dropped
            compiled.close()

    # ---- wiring ----

    def attach(self) -> None:
        """Hook every current transceiver (no decoder thread, no encoder task), the ICE
        gatherers (host candidates from the policy) and the shared DTLS transport (decrypted
        packets to the callbacks).  Idempotent; call again if transceivers were added."""
        transports: set[RTCDtlsTransport] = set()
        for transceiver in self.pc.getTransceivers():
            self._hook_transceiver(transceiver)
            transports.add(transceiver.receiver.transport)
        for dtls in transports:
            connection = dtls.transport.iceGatherer._connection
            if id(connection) not in self._hooked_connections:
                self._hooked_connections.add(id(connection))
                _install_host_gathering(connection, self.policy, self)
        if len(transports) == 1:
            self._hook_dtls(next(iter(transports)))
        elif len(transports) > 1:
            raise ValueError("PacketPeer needs one bundled transport: build the peer connection with "
                             "rtc_configuration() (max-bundle) and offer a BUNDLE group")

    def _hook_transceiver(self, transceiver: RTCRtpTransceiver) -> None:
        if id(transceiver) in self._hooked_transceivers:
            return
        self._hooked_transceivers.add(id(transceiver))

        async def receive(parameters: Any) -> None:  # replaces RTCRtpReceiver.receive: no decoder thread
            return None

        async def send(parameters: Any) -> None:     # replaces RTCRtpSender.send: no encoder task
            return None

        transceiver.receiver.receive = receive  # type: ignore[method-assign]
        transceiver.sender.send = send          # type: ignore[method-assign]
        # Its RTP never reaches aiortc's receiver, so neither does the receiver's bandwidth
        # estimator (video: a RateCounter of 1000 one-millisecond bucket objects).  At 10+ video
        # m-lines per site those were 2/3 of the objects the cyclic GC walks in a full collection
        # (35 sites: 462,000 -> 143,000; the longest pause while they joined 119 -> 77 ms, all
        # forwarding stopped meanwhile).  aiortc checks for None.
        receiver = transceiver.receiver
        if getattr(receiver, _RECEIVER_ESTIMATOR, None) is not None:
            setattr(receiver, _RECEIVER_ESTIMATOR, None)

    def _hook_dtls(self, dtls: RTCDtlsTransport) -> None:
        if self._dtls is dtls:
            return
        self._dtls = dtls
        ice_transport = dtls.transport
        self._ice = ice_transport._connection

        async def handle_rtp_data(data: bytes, arrival_time_ms: int) -> None:
            # Slow path (before the fast path is live, or via a TURN relay): already unprotected.
            self._deliver_rtp(data, time.monotonic())

        async def handle_rtcp_data(data: bytes) -> None:
            self._deliver_rtcp(data)

        dtls._handle_rtp_data = handle_rtp_data    # type: ignore[method-assign]
        dtls._handle_rtcp_data = handle_rtcp_data  # type: ignore[method-assign]
        # DTLS reads and writes through whichever ICE agent is current (ICE restart swaps it).
        ice_transport._recv = self._ice_recv
        ice_transport._send = self._ice_send
        dtls.on("statechange", self._on_dtls_state)
        self._on_dtls_state()

    async def _ice_recv(self) -> bytes:
        """aiortc's DTLS reader, decoupled from one ICE agent's life: an agent replaced by an
        ICE restart hands over to the new one; an agent that dies (consent lost) leaves the
        DTLS session waiting ``ICE_RESTART_GRACE`` seconds for a restart before it closes."""
        while True:
            agent = self._ice
            changed = self._ice_changed
            assert agent is not None
            try:
                return await agent.recv()
            except ConnectionError:
                if self._closed:
                    raise
                if agent is self._ice:
                    try:
                        await asyncio.wait_for(changed.wait(), ICE_RESTART_GRACE)
                    except asyncio.TimeoutError:
                        raise ConnectionError("ICE failed and was not restarted") from None

    async def wait_ice_restart(self, timeout: float | None = None) -> None:
        """Wait until media moved to the agent of the next completed ICE restart."""
        await asyncio.wait_for(self._ice_changed.wait(), timeout)

    async def _ice_send(self, data: bytes) -> None:
        agent = self._ice
        if agent is None:
            raise ConnectionError("no ICE agent")
        await agent.send(data)

    def _on_dtls_state(self) -> None:
        dtls = self._dtls
        if dtls is None:
            return
        if dtls.state == "connected" and dtls._rx_srtp is not None:
            if self._tx is None:
                self._rx, self._tx = _Srtp(dtls._rx_srtp), _Srtp(dtls._tx_srtp)
                self._set_receive(self._rx.receiver(self))
                self._pair = None  # (re)build the send functions with the keys
            self._connected.set()
        elif dtls.state in ("closed", "failed"):
            self._rx = self._tx = None
            self._set_receive(None)
            self._rtp_send = self._rtcp_send = None
            self._parts_send = None
            self.send_parts = self._send_parts_slow
            self._pair = None
            self._connected.set()

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait for the DTLS-SRTP session; ConnectionError if it failed or closed first."""
        await asyncio.wait_for(self._connected.wait(), timeout)
        if self._tx is None:
            raise ConnectionError("the DTLS-SRTP session failed or closed")

    @property
    def failed(self) -> bool:
        """The media path is gone for good: the DTLS session closed or failed (the remote peer
        closed it, or ICE died and no restart came within ICE_RESTART_GRACE) and not by ``close``."""
        dtls = self._dtls
        return not self._closed and dtls is not None and dtls.state in ("closed", "failed")

    @property
    def connected(self) -> bool:
        """DTLS-SRTP keys are up and the ICE agent has a selected pair (media can flow)."""
        return self._tx is not None and self._ice is not None and bool(self._ice._nominated)

    # ---- negotiation results ----

    def negotiated(self) -> list[MLine]:
        """The m-lines in order, once both descriptions are set."""
        remote = self.pc.remoteDescription
        remote_media = aiortc_sdp.SessionDescription.parse(remote.sdp).media if remote else []
        lines: list[MLine] = []
        for t in self.pc.getTransceivers():
            index = t._get_mline_index()
            if index is None or t.mid is None:
                continue
            rm = remote_media[index] if index < len(remote_media) else None
            rtx: dict[int, int] = {}
            if rm is not None:
                for group in rm.ssrc_group:
                    if group.semantic == "FID" and len(group.items) == 2:
                        rtx[int(group.items[1])] = int(group.items[0])
            remote_ssrcs = tuple(dict.fromkeys(s.ssrc for s in rm.ssrc if s.ssrc not in rtx)) if rm else ()
            codecs = tuple(
                Codec(payload_type=c.payloadType, name=c.mimeType.split("/", 1)[1].lower(),
                      clock_rate=c.clockRate, channels=c.channels, parameters=dict(c.parameters),
                      feedback=tuple(f"{fb.type} {fb.parameter}" if fb.parameter else fb.type
                                     for fb in c.rtcpFeedback))
                for c in t._codecs if c.payloadType is not None)
            extensions = {e.uri: e.id for e in t._headerExtensions}
            lines.append(MLine(index=index, mid=t.mid, kind=t.kind, direction=t.currentDirection,
                               local_ssrc=t.sender._ssrc, local_rtx_ssrc=t.sender._rtx_ssrc,
                               remote_ssrcs=remote_ssrcs, remote_rtx=rtx, codecs=codecs,
                               extensions=extensions))
        lines.sort(key=lambda m: m.index)
        self._ssrc_mid = {}
        for line in lines:
            for ssrc in line.remote_ssrcs:
                self._ssrc_mid[ssrc] = line.mid
            for ssrc in line.remote_rtx:
                self._ssrc_mid[ssrc] = line.mid
            if _MID_URI in line.extensions:
                self._mid_ext_id = line.extensions[_MID_URI]
        return lines

    # ---- receive ----

    def _receive_srtp(self, data: bytes) -> None:
        """What ``_Srtp.receiver``'s function does, through pylibsrtp's public methods."""
        rx = self._rx
        try:
            if 192 <= data[1] <= 223:
                self._deliver_rtcp(rx.unprotect_rtcp(data))  # type: ignore[union-attr]
            else:
                self._deliver_rtp(rx.unprotect(data), time.monotonic())  # type: ignore[union-attr]
        except Exception:  # pylibsrtp.Error (replay, auth): drop, like aiortc does
            self._rx_errors += 1

    def _deliver_rtp(self, packet: bytes, arrival: float) -> None:
        self._rx_packets += 1
        handler = self.on_rtp
        if handler is None or len(packet) < 12:
            return
        ssrc = _SSRC.unpack_from(packet, 8)[0]
        try:
            mid = self._ssrc_mid[ssrc]
        except KeyError:
            mid = self._learn_mid(packet, ssrc)
        try:
            handler(packet, mid, arrival)
        except Exception as exc:
            _log_rtp_failure(exc)

    def _deliver_rtcp(self, packet: bytes) -> None:
        handler = self.on_rtcp
        if handler is None:
            return
        try:
            handler(packet)
        except Exception:
            log.exception("RTCP handler failed")

    # ---- send ----

    def _select_pair(self, pair: Any) -> None:
        """Build the send functions for the nominated pair (aioice may nominate another one,
        an ICE restart brings another agent)."""
        self._pair = pair
        self._rtp_send = self._rtcp_send = None
        self._parts_send = None
        self.send_parts = self._send_parts_slow
        self._drop_compiled()
        tx = self._tx
        if pair is None or tx is None:
            return
        protocol = pair.protocol
        if not isinstance(protocol, aioice.ice.StunProtocol) or hasattr(protocol, "peer_to_channel"):
            log.warning("the selected ICE pair is relayed (TURN): the SFU's packet sender supports "
                        "host and server-reflexive pairs only; configure candidate_addresses instead")
            return
        transport = protocol.transport
        sock = getattr(transport, "_sock", None)
        sendto: Callable[[Any, tuple[str, int]], Any]
        if isinstance(sock, socket.socket):
            # Straight to the non-blocking socket: a full send buffer (a slow or dead link)
            # raises BlockingIOError and the packet is dropped, never queued.
            sendto = sock.sendto
        else:  # pragma: no cover - other event loops
            limit = self.max_backlog

            def sendto(data: Any, addr: tuple[str, int]) -> None:
                if transport.get_write_buffer_size() > limit:  # type: ignore[attr-defined]
                    raise BlockingIOError
                transport.sendto(bytes(data), addr)
        addr = pair.remote_addr
        self._rtp_send = tx.sender(sendto, addr, rtcp=False)
        self._rtcp_send = tx.sender(sendto, addr, rtcp=True)
        assert self._ice is not None
        nominated = self._ice._nominated
        if isinstance(sock, socket.socket):
            self._compiled = tx.compiled_sender(self._send_parts_slow, sock, addr, nominated, pair)
        self._parts_send = self._compiled.send_parts if self._compiled is not None else \
            tx.parts_sender(self, sendto, addr, nominated, pair)

    def send_rtp(self, packet: bytes | bytearray) -> bool:
        """SRTP-protect and send one RTP packet now (bytes or bytearray; the packet is not
        kept).  False: dropped (not connected, no selected pair, socket buffer full)."""
        agent = self._ice
        if agent is not None and agent._nominated.get(1) is not self._pair:
            self._select_pair(agent._nominated.get(1))
        send = self._rtp_send
        if send is None or self._tx is None:
            self._tx_dropped += 1
            return False
        try:
            send(packet)
        except Exception:  # BlockingIOError (backlog), OSError (closed), pylibsrtp.Error, ValueError
            self._tx_dropped += 1
            return False
        self._tx_packets += 1
        return True

    def _send_parts_slow(self, head: bytes | bytearray, rest: Any) -> bool:
        """``send_parts`` when no send function matches the nominated pair (first packet, pair
        change, ICE restart, session gone): build one and install it for the next packets."""
        agent = self._ice
        pair = agent._nominated.get(1) if agent is not None else None
        if pair is not self._pair:
            self._select_pair(pair)   # (a relayed pair gets no send function: logged once here)
        send = self._parts_send
        if send is None or self._tx is None:
            self._tx_dropped += 1
            return False
        self.send_parts = send
        if self._compiled is not None:
            self.send_rewritten = self._compiled.send_rewritten
        return send(head, rest)

    def send_rtcp(self, packet: bytes | bytearray) -> bool:
        """SRTCP-protect and send one (compound) RTCP packet now."""
        agent = self._ice
        if agent is not None and agent._nominated.get(1) is not self._pair:
            self._select_pair(agent._nominated.get(1))
        send = self._rtcp_send
        if send is None or self._tx is None:
            self._tx_dropped += 1
            return False
        try:
            send(packet)
        except Exception:
            self._tx_dropped += 1
            return False
        self._tx_packets += 1
        return True

    # ---- ICE ----

    async def add_ice_candidate(self, candidate: dict[str, Any] | None) -> None:
        """Trickle ICE from a browser ``RTCIceCandidate.toJSON()`` dict; None or an empty
        candidate string = end of candidates.  mDNS ``.local`` candidates are ignored.  Bundled:
        every candidate goes to the one ICE agent (the newest one after an ICE restart),
        whatever m-line it names.  ValueError for a candidate that does not parse."""
        if self._closed:
            return
        line = (candidate or {}).get("candidate") or ""
        if line.startswith("a="):
            line = line[2:]
        if line.startswith("candidate:"):
            line = line[len("candidate:"):]
        if line and _is_mdns_candidate(line):
            return
        agent = self._ice_pending or self._ice
        if agent is None:
            transceivers = self.pc.getTransceivers()
            if not transceivers:
                raise ValueError("no media lines yet: apply the offer before its candidates")
            agent = transceivers[0].receiver.transport.transport._connection
        try:
            parsed = candidate_to_aioice(aiortc_sdp.candidate_from_sdp(line)) if line else None
        except Exception as exc:
            raise ValueError(f"unparsable ICE candidate {line!r}: {exc}") from None
        with contextlib.suppress(ValueError):  # after end-of-candidates: ignored, like browsers do
            await agent.add_remote_candidate(parsed)

    def local_candidates(self) -> list[str]:
        """``candidate:...`` strings of the current local candidates (for trickling them)."""
        agent = self._ice_pending or self._ice
        if agent is None:
            return []
        return ["candidate:" + aiortc_sdp.candidate_to_sdp(_candidate_from_aioice(c))
                for c in agent.local_candidates]

    # ---- ICE restart (aiortc has none): a new ICE agent under the same DTLS session ----

    async def answer_ice_restart(self, offer_sdp: str) -> str | None:
        """Answer a re-offer of the connection this peer already answered.  Returns the SDP
        answer; None when the offer is not from the same remote peer connection (another DTLS
        fingerprint: build a new peer connection for it).  A re-offer with the same ICE
        credentials is answered with the current answer.  With new credentials (ICE restart)
        a new ICE agent gathers on fresh sockets and checks connectivity in the background;
        media moves to it once it is connected, the DTLS-SRTP session carries on."""
        description = aiortc_sdp.SessionDescription.parse(strip_mdns_candidates(offer_sdp))
        current = self.pc.remoteDescription
        local = self.pc.localDescription
        if current is None or local is None or not description.media or self._dtls is None:
            return None
        known = aiortc_sdp.SessionDescription.parse(current.sdp)
        if len(description.media) != len(known.media) or \
                _fingerprints(description.media[0]) != _fingerprints(known.media[0]):
            return None
        ice = description.media[0].ice
        if ice is None:   # no ICE credentials: not an ICE restart we can answer
            return None
        remote_now = self._remote_credentials(known)
        if (ice.usernameFragment, ice.password) == remote_now:
            return self._current_answer or local.sdp
        agent = await self._new_agent()
        agent.remote_username, agent.remote_password = ice.usernameFragment, ice.password
        for media in description.media[:1]:
            for c in media.ice_candidates:
                if not c.ip.lower().endswith(".local"):
                    with contextlib.suppress(ValueError):
                        await agent.add_remote_candidate(candidate_to_aioice(c))
            if media.ice_candidates_complete:
                with contextlib.suppress(ValueError):
                    await agent.add_remote_candidate(None)
        self._restart_remote = (ice.usernameFragment, ice.password)
        self._start_restart(agent)
        answer = _rewrite_ice(self._current_answer or local.sdp, agent)
        self._current_answer = answer
        return answer

    def offer_ice_restart(self) -> Awaitable[str]:
        """Offerer side (test peers, load generators): a re-offer with new ICE credentials and
        candidates; pass the answer to ``accept_ice_restart_answer``."""
        return self._offer_ice_restart()

    async def _offer_ice_restart(self) -> str:
        local = self.pc.localDescription
        if local is None or self._dtls is None:
            raise ValueError("no negotiated connection to restart")
        agent = await self._new_agent()
        self._ice_pending = agent
        offer = _rewrite_ice(self._current_answer or local.sdp, agent)
        self._current_answer = offer
        return offer

    async def accept_ice_restart_answer(self, answer_sdp: str) -> None:
        agent = self._ice_pending
        if agent is None:
            raise ValueError("no ICE restart offered")
        description = aiortc_sdp.SessionDescription.parse(strip_mdns_candidates(answer_sdp))
        ice = description.media[0].ice
        if ice is None:
            raise ValueError("the answer carries no ICE credentials")
        agent.remote_username, agent.remote_password = ice.usernameFragment, ice.password
        for c in description.media[0].ice_candidates:
            with contextlib.suppress(ValueError):
                await agent.add_remote_candidate(candidate_to_aioice(c))
        with contextlib.suppress(ValueError):
            await agent.add_remote_candidate(None)
        self._start_restart(agent)

    _current_answer: str | None = None
    _restart_remote: tuple[str | None, str | None] | None = None

    def _remote_credentials(self, known: Any) -> tuple[str | None, str | None]:
        if self._restart_remote is not None:
            return self._restart_remote
        ice = known.media[0].ice
        return ice.usernameFragment, ice.password

    async def _new_agent(self) -> aioice.ice.Connection:
        old = self._ice
        assert old is not None
        if self._restart_task is not None:   # a restart of a restart: drop the unfinished one
            self._restart_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._restart_task
            self._restart_task = None
        if self._ice_pending is not None:
            await self._ice_pending.close()
            self._ice_pending = None
        agent = aioice.ice.Connection(
            ice_controlling=old.ice_controlling, stun_server=old.stun_server, turn_server=old.turn_server,
            turn_username=old.turn_username, turn_password=old.turn_password, turn_ssl=old.turn_ssl,
            turn_transport=old.turn_transport, transport_policy=old._transport_policy)
        _install_host_gathering(agent, self.policy, self)
        await agent.gather_candidates()
        return agent

    def _start_restart(self, agent: aioice.ice.Connection) -> None:
        self._ice_pending = agent
        self._restart_task = asyncio.create_task(self._complete_restart(agent), name="ice-restart")

    async def _complete_restart(self, agent: aioice.ice.Connection) -> None:
        try:
            await agent.connect()
        except ConnectionError:
            log.info("ICE restart failed")
            if self._ice_pending is agent:
                self._ice_pending = None
            await agent.close()
            return
        if self._closed or self._ice_pending is not agent:
            return
        old, self._ice, self._ice_pending = self._ice, agent, None
        assert self._dtls is not None and old is not None
        self._dtls.transport._connection = agent   # aiortc closes the current agent on pc.close()
        self._restart_task = None
        self.ice_restarts += 1
        changed, self._ice_changed = self._ice_changed, asyncio.Event()
        changed.set()
        # Retire the old agent without waking anyone: its pair goes, its sockets close; it is
        # closed for good (ending aiortc's ICE monitor) when the peer closes.
        if old._query_consent_task is not None:
            old._query_consent_task.cancel()
        old._nominated.clear()
        self._select_pair(None)   # (the compiled sender's duplicate descriptor closes with them)
        for protocol in old._protocols:
            protocol.transport.close()
        old._protocols.clear()
        self._ice_retired.append(old)
        log.info("ICE restarted")

    async def close(self) -> None:
        """Close the peer connection (ICE sockets, DTLS); idempotent."""
        if self._closed:
            return
        self._closed = True
        self._rx = self._tx = None
        self._set_receive(None)
        self._rtp_send = self._rtcp_send = None
        self._parts_send = None
        self.send_parts = self._send_parts_slow
        self._drop_compiled()
        self.on_rtp = None
        self.on_rtcp = None
        if self._restart_task is not None:
            self._restart_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._restart_task
        for agent in [*self._ice_retired, *([self._ice_pending] if self._ice_pending else [])]:
            with contextlib.suppress(Exception):
                await agent.close()
        await self.pc.close()
        if self._ice is not None:
            with contextlib.suppress(Exception):
                await self._ice.close()


def _fingerprints(media: Any) -> set[tuple[str, str]]:
    return {(f.algorithm.lower(), f.value.upper()) for f in media.dtls.fingerprints} if media.dtls else set()


def _candidate_from_aioice(c: Candidate) -> Any:
    from aiortc.rtcicetransport import candidate_from_aioice
    return candidate_from_aioice(c)


def _rewrite_ice(sdp: str, agent: aioice.ice.Connection) -> str:
    """The SDP with the agent's ICE credentials and candidates instead of the old ones, and
    the session version bumped (a new description of the same session)."""
    sep = "\r\n" if "\r\n" in sdp else "\n"
    candidates = ["a=candidate:" + aiortc_sdp.candidate_to_sdp(_candidate_from_aioice(c))
                  for c in agent.local_candidates]
    out: list[str] = []
    for line in sdp.split(sep):
        if line.startswith(("a=candidate:", "a=end-of-candidates")):
            continue
        if line.startswith("o="):
            parts = line.split()
            if len(parts) >= 3 and parts[2].isdigit():
                parts[2] = str(int(parts[2]) + 1)
                line = " ".join(parts)
        elif line.startswith("a=ice-ufrag:"):
            line = "a=ice-ufrag:" + agent.local_username
        elif line.startswith("a=ice-pwd:"):
            out.append("a=ice-pwd:" + agent.local_password)
            out.extend(candidates)
            out.append("a=end-of-candidates")
            continue
        out.append(line)
    return sep.join(out)


_SSRC = struct.Struct("!I")


def _never(packet: bytes) -> bytes:
    raise ConnectionError("not connected")


def _mid_from_extension(packet: bytes, ext_id: int | None) -> str | None:
    """The RFC 8843 MID from an RTP header extension (one- or two-byte form), or None."""
    if ext_id is None or not packet[0] & 0x10:
        return None
    offset = 12 + 4 * (packet[0] & 0x0F)
    if len(packet) < offset + 4:
        return None
    profile, words = struct.unpack_from("!HH", packet, offset)
    pos, end = offset + 4, min(len(packet), offset + 4 + 4 * words)
    if profile == 0xBEDE:
        while pos < end:
            byte = packet[pos]
            if byte == 0:
                pos += 1
                continue
            eid, length = byte >> 4, (byte & 0x0F) + 1
            if eid == 15:
                break
            if eid == ext_id:
                return packet[pos + 1:pos + 1 + length].decode("ascii", "replace")
            pos += 1 + length
    elif profile & 0xFFF0 == 0x1000:
        while pos + 1 < end:
            eid = packet[pos]
            if eid == 0:
                pos += 1
                continue
            length = packet[pos + 1]
            if eid == ext_id:
                return packet[pos + 2:pos + 2 + length].decode("ascii", "replace")
            pos += 2 + length
    return None
