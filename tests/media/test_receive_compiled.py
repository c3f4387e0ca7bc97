"""The receive side in C (media._fastpath.Receive and Reader) against the Python one
(media.rtc_adapter._Srtp.receiver's function and _drain_reader): the same datagrams on real
127.0.0.1/::1 sockets and real libsrtp sessions must give the same deliveries, counts, errors and
logs.  The Python side is what machines without a C compiler run, and the reference."""

from __future__ import annotations

import logging
import select
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiortc import RTCPeerConnection
from pylibsrtp import Policy, Session

from media import native, rtc_adapter
from media.rtc_adapter import PacketPeer

fastpath = native.fastpath
pytestmark = pytest.mark.skipif(fastpath is None, reason="media._fastpath is not built (no C compiler)")

KEY = bytes(range(30))   # a fixed SRTP test key, loopback traffic only
MID_EXT = 3


def rtp(ssrc: int, seq: int, payload: bytes = b"\x10" + b"v" * 100, mid: str | None = None) -> bytes:
    if mid is None:
        return struct.pack("!BBHII", 0x80, 96, seq, seq * 3000, ssrc) + payload
    element = bytes([(MID_EXT << 4) | (len(mid) - 1)]) + mid.encode()
    element += b"\x00" * (-len(element) % 4)
    return struct.pack("!BBHIIHH", 0x90, 96, seq, seq * 3000, ssrc, 0xBEDE, len(element) // 4) + element + payload


def sender_report(ssrc: int) -> bytes:
    return struct.pack("!BBHIIIIII", 0x80, 200, 6, ssrc, 1, 2, 3, 4, 5)


def datagrams() -> list[bytes]:
    """What arrives at a peer: RTP of three SSRCs (one known, one announcing its MID, one
    unknown), SRTCP, then what must be refused: a tampered packet, a replay, too short, too long."""
    tx = Session(policy=Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
    out = [tx.protect(rtp(0x1111, 1)), tx.protect(rtp(0x2222, 1, mid="7")), tx.protect(rtp(0x2222, 2)),
           tx.protect(rtp(0x3333, 1)), tx.protect_rtcp(sender_report(0x1111))]
    tampered = bytearray(tx.protect(rtp(0x1111, 2)))
    tampered[20] ^= 1
    out += [bytes(tampered), out[0], b"\x80", bytes([0x80, 96]) + bytes(1600),
            tx.protect(rtp(0x1111, 4, payload=b"boom")), tx.protect(rtp(0x1111, 5))]
    return out


class Recorder:
    def __init__(self) -> None:
        self.rtp: list[tuple[bytes, str | None, float]] = []
        self.rtcp: list[bytes] = []

    def on_rtp(self, packet: bytes, mid: str | None, arrival: float) -> None:
        if packet.endswith(b"boom"):
            raise ValueError("a handler failed")
        self.rtp.append((packet, mid, arrival))

    def on_rtcp(self, packet: bytes) -> None:
        self.rtcp.append(packet)


@pytest.fixture
def peer_factory(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    made: list[PacketPeer] = []

    def make(compiled: bool) -> tuple[PacketPeer, Recorder]:
        monkeypatch.setattr(rtc_adapter, "_fastpath", fastpath if compiled else None)
        recorder = Recorder()
        peer = PacketPeer(RTCPeerConnection(), on_rtp=recorder.on_rtp, on_rtcp=recorder.on_rtcp)
        peer._mid_ext_id = MID_EXT
        peer._ssrc_mid[0x1111] = "0"
        peer._rx = rtc_adapter._Srtp(Session(policy=Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_INBOUND)))
        peer._set_receive(peer._rx.receiver(peer))
        made.append(peer)
        return peer, recorder
    yield make


def test_the_compiled_receive_delivers_what_the_python_one_delivers(peer_factory: Any,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    results = []
    for compiled in (True, False):
        peer, recorder = peer_factory(compiled)
        assert (type(peer._receive).__name__ == "Receive") == compiled
        caplog.clear()
        before = time.monotonic()
        with caplog.at_level(logging.ERROR, logger="media.rtc"):
            for data in datagrams():
                peer._receive(data)  # type: ignore[misc]
        after = time.monotonic()
        assert all(before <= arrival <= after for _, _, arrival in recorder.rtp)
        failures = [(r.getMessage(), r.exc_info[0] if r.exc_info else None) for r in caplog.records]
        results.append(([(p, mid) for p, mid, _ in recorder.rtp], recorder.rtcp, peer.rx_packets, peer.rx_errors,
                        dict(peer._ssrc_mid), failures))
    compiled_result, python_result = results
    assert compiled_result == python_result
    delivered, rtcp_packets, packets, errors, mids, failures = python_result
    assert [(struct.unpack_from("!I", p, 8)[0], mid) for p, mid in delivered] == \
        [(0x1111, "0"), (0x2222, "7"), (0x2222, "7"), (0x3333, None), (0x1111, "0")]
    assert rtcp_packets == [sender_report(0x1111)]
    assert (packets, errors) == (6, 4)          # 5 delivered + the one whose handler failed; 4 refused
    assert mids == {0x1111: "0", 0x2222: "7", 0x3333: None}
    assert failures == [("RTP handler failed", ValueError)]


def test_counts_survive_a_new_session_and_a_closed_one_drops_everything(peer_factory: Any) -> None:
    peer, recorder = peer_factory(True)
    old = peer._receive
    for data in datagrams()[:3]:
        peer._receive(data)  # type: ignore[misc]
    peer._set_receive(None)                    # DTLS closed: the compiled receive is retired
    assert (peer.rx_packets, peer.rx_errors) == (3, 0)
    old(datagrams()[3])                        # a late call on the retired one: dropped
    assert len(recorder.rtp) == 3 and peer.rx_packets == 3


class _Transport:
    _closing = False
    max_size = 256 * 1024


class _Protocol:
    def __init__(self, peer: Any) -> None:
        self.peer = peer
        self.other: list[tuple[bytes, tuple[Any, ...]]] = []
        self.errors: list[BaseException] = []

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.other.append((data, addr))

    def error_received(self, exc: BaseException) -> None:
        self.errors.append(exc)


def _wait_readable(sock: socket.socket) -> None:
    """Until the socket has something to read (a datagram or a pending error).  Loopback delivers
    within ``sendto``, so what was sent before is all queued by then."""
    readable, _, _ = select.select([sock], [], [], 5.0)
    assert readable, "nothing arrived on 127.0.0.1 within 5 s"


def _reader(compiled: bool, transport: Any, sock: socket.socket, protocol: Any) -> Any:
    if compiled:
        return fastpath.Reader(transport, sock.fileno(), protocol, 65536)
    return rtc_adapter._drain_reader(transport, sock, protocol)


@pytest.mark.parametrize("family,host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_the_compiled_reader_drains_like_the_python_one(peer_factory: Any, family: int, host: str) -> None:
    results = []
    for compiled in (True, False):
        peer, recorder = peer_factory(compiled)
        rx, tx = socket.socket(family, socket.SOCK_DGRAM), socket.socket(family, socket.SOCK_DGRAM)
        try:
            rx.bind((host, 0))
            tx.bind((host, 0))
            rx.setblocking(False)
            transport, protocol = _Transport(), _Protocol(peer)
            read_ready = _reader(compiled, transport, rx, protocol)
            stun = b"\x00\x01\x00\x00" + b"\x21\x12\xa4\x42" + bytes(12)
            sent = datagrams() + [stun, b"\x17\xfe\xfd" + b"d" * 30]     # STUN, DTLS: to aioice's protocol
            sent += [bytes([0x80, 96]) + bytes(10)] * 30                # 30 forged SRTP datagrams
            for data in sent:
                tx.sendto(data, rx.getsockname())
            _wait_readable(rx)
            calls = []
            for _ in range(3):
                before = len(recorder.rtp) + len(protocol.other) + peer.rx_errors + len(recorder.rtcp) + \
                    (peer.rx_packets - len(recorder.rtp))
                read_ready()
                after = len(recorder.rtp) + len(protocol.other) + peer.rx_errors + len(recorder.rtcp) + \
                    (peer.rx_packets - len(recorder.rtp))
                calls.append(after - before)
            transport._closing = True
            tx.sendto(stun, rx.getsockname())
            _wait_readable(rx)
            read_ready()                           # closing: nothing more is read
            assert rx.recv(4096) == stun
            addr = tx.getsockname()
            results.append(([(p, m) for p, m, _ in recorder.rtp], recorder.rtcp, peer.rx_packets, peer.rx_errors,
                            [(d, a[0], a[2:]) for d, a in protocol.other], calls))
            assert all(a[:2] == addr[:2] for _, a in protocol.other)
            assert len(protocol.other[0][1]) == (4 if family == socket.AF_INET6 else 2)
        finally:
            rx.close()
            tx.close()
    assert results[0] == results[1]
    assert results[0][5] == [32, len(sent) - 32, 0]    # DRAIN_MAX datagrams per readiness event


def test_a_receive_error_goes_to_error_received(peer_factory: Any) -> None:
    found = []
    for compiled in (True, False):
        peer, _ = peer_factory(compiled)
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            rx.bind(("127.0.0.1", 0))
            closed.bind(("127.0.0.1", 0))
            rx.connect(closed.getsockname())
            closed.close()                      # nobody listens there: ICMP port unreachable
            rx.setblocking(False)
            rx.send(b"x")
            _wait_readable(rx)
            protocol = _Protocol(peer)
            _reader(compiled, _Transport(), rx, protocol)()
            found.append([type(e) for e in protocol.errors])
        finally:
            rx.close()
    assert found == [[ConnectionRefusedError], [ConnectionRefusedError]]
