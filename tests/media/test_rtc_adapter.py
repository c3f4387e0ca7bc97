"""media/rtc_adapter.py: the aiortc/aioice hooks.

Two layers: pin checks that fail with the name of the private attribute an aiortc/aioice
upgrade moved, and real aiortc peer connections over 127.0.0.1 using the adapter on both sides.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import struct
import threading
from importlib.metadata import version

import aioice
import aioice.ice
import aioice.turn
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription, rtcdtlstransport, rtcrtpreceiver, rtcrtpsender
from aiortc.rtcicetransport import RTCIceGatherer
from aiortc.rtcpeerconnection import RTCRtpTransceiver
from aiortc.rtp import RtpPacket

from media.rtc_adapter import (IcePolicy, MLine, PacketPeer, configure_ice, is_rtcp, rtc_configuration,
                               strip_mdns_candidates)

LOOPBACK = IcePolicy(candidate_addresses=("127.0.0.1",))


# ---------------------------------------------------------------------------------------------
# Pin checks: each names what moved.


def _require_attr(obj: object, name: str, where: str) -> None:
    assert hasattr(obj, name), (
        f"aiortc/aioice upgrade broke media/rtc_adapter.py: {where}.{name} is gone; "
        f"re-read the library source and move the hook")


def test_pinned_versions_are_the_ones_the_hooks_were_written_for() -> None:
    aiortc_v = tuple(int(x) for x in version("aiortc").split(".")[:2])
    aioice_v = tuple(int(x) for x in version("aioice").split(".")[:2])
    assert aiortc_v == (1, 16), f"aiortc {version('aiortc')} installed; media/rtc_adapter.py hooks 1.16.x internals"
    assert aioice_v == (0, 13), f"aioice {version('aioice')} installed; media/rtc_adapter.py hooks 0.13.x internals"


def test_dtls_transport_hooks_exist() -> None:
    cls = rtcdtlstransport.RTCDtlsTransport
    for name in ("_handle_rtp_data", "_handle_rtcp_data", "_recv_next", "_setup_srtp"):
        _require_attr(cls, name, "aiortc.rtcdtlstransport.RTCDtlsTransport")
    assert list(inspect.signature(cls._handle_rtp_data).parameters) == ["self", "data", "arrival_time_ms"], \
        "RTCDtlsTransport._handle_rtp_data(data, arrival_time_ms) changed signature"
    assert list(inspect.signature(cls._handle_rtcp_data).parameters) == ["self", "data"], \
        "RTCDtlsTransport._handle_rtcp_data(data) changed signature"
    source = inspect.getsource(cls)
    for needle in ("self._rx_srtp = Session(", "self._tx_srtp = Session(", "await self._handle_rtp_data(",
                   "await self._handle_rtcp_data(", 'self.emit("statechange")'):
        assert needle in source, f"RTCDtlsTransport no longer contains {needle!r}: the SRTP session hook moved"


def test_receiver_and_sender_hooks_exist() -> None:
    _require_attr(rtcrtpreceiver.RTCRtpReceiver, "receive", "aiortc.RTCRtpReceiver")
    _require_attr(rtcrtpsender.RTCRtpSender, "send", "aiortc.RTCRtpSender")
    assert "decoder_worker" in inspect.getsource(rtcrtpreceiver.RTCRtpReceiver.receive), \
        "RTCRtpReceiver.receive no longer starts the decoder thread: check what the adapter must replace"
    pc_source = inspect.getsource(RTCPeerConnection)
    assert "await transceiver.receiver.receive(" in pc_source and "await transceiver.sender.send(" in pc_source, \
        "RTCPeerConnection no longer starts receivers/senders via receiver.receive / sender.send"
    for name in ("_get_mline_index", "_codecs", "_headerExtensions", "_bundled"):
        assert name in inspect.getsource(RTCRtpTransceiver), f"RTCRtpTransceiver.{name} is gone"
    assert "self._ssrc = " in inspect.getsource(rtcrtpsender.RTCRtpSender.__init__), "RTCRtpSender._ssrc is gone"
    assert "self._rtx_ssrc = " in inspect.getsource(rtcrtpsender.RTCRtpSender.__init__), "RTCRtpSender._rtx_ssrc is gone"


async def test_receiver_bandwidth_estimator_hook_exists() -> None:
    """The adapter drops each receiver's unused RemoteBitrateEstimator (1000 GC-tracked bucket
    objects per video m-line) by its private name: an upgrade that renames it must fail here."""
    source = inspect.getsource(rtcrtpreceiver.RTCRtpReceiver)
    assert "self.__remote_bitrate_estimator = RemoteBitrateEstimator()" in source, \
        "RTCRtpReceiver no longer builds __remote_bitrate_estimator: check rtc_adapter._RECEIVER_ESTIMATOR"
    assert "if self.__remote_bitrate_estimator is not None:" in source, \
        "RTCRtpReceiver no longer tolerates a None estimator: the adapter must not set it to None"
    from media.rtc_adapter import _RECEIVER_ESTIMATOR

    pc = RTCPeerConnection()
    try:
        assert getattr(pc.addTransceiver("video").receiver, _RECEIVER_ESTIMATOR) is not None
    finally:
        await pc.close()


def test_aioice_hooks_exist() -> None:
    _require_attr(aioice.ice, "StunProtocol", "aioice.ice")
    _require_attr(aioice.ice, "server_reflexive_candidate", "aioice.ice")
    _require_attr(aioice.ice.StunProtocol, "datagram_received", "aioice.ice.StunProtocol")
    _require_attr(aioice.turn, "TurnClientMixin", "aioice.turn")
    assert "peer_to_channel" in inspect.getsource(aioice.turn), "aioice TURN protocols lost peer_to_channel"
    params = list(inspect.signature(aioice.ice.Connection.get_component_candidates).parameters)
    assert params[:3] == ["self", "component", "addresses"], \
        f"aioice.ice.Connection.get_component_candidates(component, addresses, ...) changed: {params}"
    gather = inspect.getsource(aioice.ice.Connection.gather_candidates)
    assert "self.get_component_candidates(" in gather, "Connection.gather_candidates no longer calls get_component_candidates"
    init = inspect.getsource(aioice.ice.Connection.__init__)
    for name in ("self._nominated", "self._protocols", "self._transport_policy", "self.stun_server"):
        assert name in init, f"aioice.ice.Connection lost {name}"
    assert "self._connection = Connection(" in inspect.getsource(RTCIceGatherer.__init__), \
        "aiortc.RTCIceGatherer._connection (the aioice Connection) is gone"
    assert "self.receiver.data_received(" in inspect.getsource(aioice.ice.StunProtocol.datagram_received)


# ---------------------------------------------------------------------------------------------
# Pure helpers


def test_rtc_configuration_never_uses_a_default_stun_server() -> None:
    assert rtc_configuration().iceServers == []
    cfg = rtc_configuration([{"urls": ["turn:turn.example:3478"], "username": "u", "credential": "p"}])
    assert cfg.iceServers is not None and cfg.iceServers[0].username == "u"


def test_strip_mdns_candidates() -> None:
    sdp = ("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
           "a=candidate:1 1 udp 2122260223 4f3c1a2e-1111-2222-3333-444455556666.local 54321 typ host\r\n"
           "a=candidate:2 1 udp 2122260223 127.0.0.1 54322 typ host\r\n")
    out = strip_mdns_candidates(sdp)
    assert ".local" not in out and "127.0.0.1 54322" in out and out.endswith("\r\n")


def test_is_rtcp() -> None:
    assert is_rtcp(bytes([0x81, 200, 0, 6])) and is_rtcp(bytes([0x81, 206, 0, 2]))
    assert not is_rtcp(bytes([0x80, 96, 0, 1])) and not is_rtcp(bytes([0x80, 0xE0, 0, 1]))


def test_configure_ice_spelling() -> None:
    assert configure_ice(["127.0.0.1"], "", (0, 0)) == LOOPBACK


# ---------------------------------------------------------------------------------------------
# Real peers over loopback


def rtp(ssrc: int, seq: int, ts: int, pt: int = 96, payload: bytes = b"\x10" + b"x" * 200, marker: bool = False) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq, ts, ssrc) + payload


class Collector:
    def __init__(self) -> None:
        self.rtp: list[tuple[bytes, str | None]] = []
        self.rtcp: list[bytes] = []
        self.event = asyncio.Event()

    def on_rtp(self, packet: bytes, mid: str | None, arrival: float) -> None:
        self.rtp.append((packet, mid))
        self.event.set()

    def on_rtcp(self, packet: bytes) -> None:
        self.rtcp.append(packet)
        self.event.set()

    async def wait_for(self, predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
        async def loop() -> None:
            while not predicate():
                self.event.clear()
                await self.event.wait()
        await asyncio.wait_for(loop(), timeout)


async def connect_pair(offer_policy: IcePolicy = LOOPBACK, answer_policy: IcePolicy = LOOPBACK):  # type: ignore[no-untyped-def]
    client_c, server_c = Collector(), Collector()
    client = PacketPeer(RTCPeerConnection(rtc_configuration()), offer_policy,
                        on_rtp=client_c.on_rtp, on_rtcp=client_c.on_rtcp)
    server = PacketPeer(RTCPeerConnection(rtc_configuration()), answer_policy,
                        on_rtp=server_c.on_rtp, on_rtcp=server_c.on_rtcp)
    client.pc.addTransceiver("audio", direction="sendrecv")
    client.pc.addTransceiver("video", direction="sendrecv")
    client.pc.addTransceiver("video", direction="recvonly")
    client.attach()
    await client.pc.setLocalDescription(await client.pc.createOffer())
    await server.pc.setRemoteDescription(RTCSessionDescription(strip_mdns_candidates(client.pc.localDescription.sdp), "offer"))
    for t in server.pc.getTransceivers():
        t.direction = "sendrecv"
    server.attach()
    await server.pc.setLocalDescription(await server.pc.createAnswer())
    await client.pc.setRemoteDescription(server.pc.localDescription)
    await asyncio.gather(client.wait_connected(10), server.wait_connected(10))
    return client, server, client_c, server_c


def _candidate_hosts(sdp: str) -> set[str]:
    return {line.split()[4] for line in sdp.splitlines() if line.startswith("a=candidate:")}


async def test_loopback_packets_both_ways_without_decoding_or_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed = []
    original_parse = RtpPacket.parse
    monkeypatch.setattr(RtpPacket, "parse", classmethod(lambda cls, *a, **k: parsed.append(1) or original_parse(*a, **k)))
    client, server, client_c, server_c = await connect_pair()
    try:
        assert _candidate_hosts(server.pc.localDescription.sdp) == {"127.0.0.1"}
        s_lines, c_lines = server.negotiated(), client.negotiated()
        assert [m.mid for m in s_lines] == ["0", "1", "2"]
        assert [m.direction for m in s_lines] == ["sendrecv", "sendrecv", "sendonly"]
        assert [m.direction for m in c_lines] == ["sendrecv", "sendrecv", "recvonly"]
        # the SSRCs each side sends with are the ones the other side's SDP learnt
        assert s_lines[1].remote_ssrcs == (c_lines[1].local_ssrc,)
        assert c_lines[2].remote_ssrcs == (s_lines[2].local_ssrc,)
        assert s_lines[1].codec("vp8") is not None and s_lines[0].codec("opus") is not None

        vp8 = s_lines[1].codec("vp8").payload_type  # type: ignore[union-attr]
        for seq in range(20):
            assert client.send_rtp(rtp(c_lines[1].local_ssrc, seq, seq * 3000, vp8))
        await server_c.wait_for(lambda: len(server_c.rtp) == 20)
        assert {mid for _, mid in server_c.rtp} == {"1"}
        assert [struct.unpack_from("!H", p, 2)[0] for p, _ in server_c.rtp] == list(range(20))
        assert server_c.rtp[5][0] == rtp(c_lines[1].local_ssrc, 5, 15000, vp8)

        for seq in range(10):
            assert server.send_rtp(rtp(s_lines[2].local_ssrc, seq, seq * 3000, vp8))
        await client_c.wait_for(lambda: len(client_c.rtp) == 10)
        assert {mid for _, mid in client_c.rtp} == {"2"}

        pli = struct.pack("!BBHII", 0x81, 206, 2, s_lines[1].local_ssrc, c_lines[1].local_ssrc)
        assert server.send_rtcp(pli)
        await client_c.wait_for(lambda: pli in client_c.rtcp)

        assert parsed == [], "RtpPacket.parse ran on the packet path"
        assert not [t.name for t in threading.enumerate() if t.name.endswith("-decoder")], "a decoder thread started"
        # no receiver keeps aiortc's bandwidth estimator (1000 bucket objects each) nobody feeds
        from media.rtc_adapter import _RECEIVER_ESTIMATOR

        receivers = [t.receiver for peer in (client, server) for t in peer.pc.getTransceivers()]
        assert len(receivers) == 6 and all(getattr(r, _RECEIVER_ESTIMATOR) is None for r in receivers)
    finally:
        await client.close()
        await server.close()
    assert not server.send_rtp(rtp(1, 1, 1))


async def test_send_parts_sends_head_and_rest_as_one_packet(send_path: str) -> None:
    client, server, client_c, _server_c = await connect_pair()
    try:
        line = server.negotiated()[2]
        vp8 = line.codec("vp8").payload_type  # type: ignore[union-attr]
        packets = [rtp(line.local_ssrc, seq, seq * 3000, vp8, payload=bytes([0x90, 0x80, 0x80, seq]) + b"v" * 1000)
                   for seq in range(4)]
        for packet in packets:   # what the forwarder passes: its rewritten head, the source's payload
            assert server.send_parts(bytearray(packet[:16]), memoryview(packet)[16:])
        bare = rtp(line.local_ssrc, 4, 12000, vp8, payload=b"")
        assert server.send_parts(bare, b"")  # a header-only packet
        await client_c.wait_for(lambda: len(client_c.rtp) == 5)
        assert [p for p, _ in client_c.rtp] == [*packets, bare]
        before = server.tx_dropped
        assert not server.send_parts(packets[0][:16], b"x" * 1500), "a packet over libsrtp's buffer was sent"
        assert server.tx_dropped == before + 1
    finally:
        await client.close()
        await server.close()
    assert not server.send_parts(packets[0][:16], packets[0][16:]), "a closed peer sent a packet"


# ---------------------------------------------------------------------------------------------
# media._fastpath: the forwarding path's send in C


def test_the_compiled_send_path_is_built_where_a_compiler_is() -> None:
    """setup.py builds media._fastpath as an optional extension: a machine with a C compiler
    must end up with it (the Python path is the fallback for machines without one)."""
    import shutil
    import sysconfig
    from pathlib import Path

    from media import native, rtc_adapter

    if native.SWITCHED_OFF:
        pytest.skip(f"{native.PURE_PYTHON_ENV} switches the compiled path off")
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if not shutil.which(compiler):
        pytest.skip(f"no C compiler ({compiler}) here: the send path runs in Python")
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists():
        pytest.skip("no Python headers here (Debian: python3-dev): the send path runs in Python")
    assert rtc_adapter._fastpath is not None, (
        "media._fastpath was not built although a C compiler is installed: see the output of "
        "`pip install -e .` (setup.py) for the compiler error")


async def test_send_rewritten_writes_the_header_on_the_way(send_path: str) -> None:
    client, server, client_c, _server_c = await connect_pair()
    try:
        line = server.negotiated()[2]
        vp8 = line.codec("vp8").payload_type  # type: ignore[union-attr]
        assert server.send_rewritten is None   # no pair chosen yet: the forwarder uses send_parts
        source = rtp(0xABCDEF, 7, 1234, 100, payload=bytes([0x90, 0x80, 0x81, 0x22]) + b"v" * 900)
        assert server.send_parts(bytearray(source[:12]), memoryview(source)[12:])   # chooses the pair
        if send_path == "python":
            assert server.send_rewritten is None and server._compiled is None
            return
        send = server.send_rewritten
        assert send is not None
        sent_before = server.tx_packets
        # head: the source's fixed header + descriptor; the sender writes byte 1, seq, ts, SSRC
        # and the 15-bit PictureID at offset 14 (M bit set)
        head, rest = source[:16], memoryview(source)[16:]
        assert send(head, rest, 0x80 | vp8, 0x1_0005, 0x1_0000_0010, line.local_ssrc, 14, 0x1234)
        assert send(bytearray(head), rest, vp8, 6, 20, line.local_ssrc, -1, 0)   # no PictureID written
        await client_c.wait_for(lambda: len(client_c.rtp) == 3)
        first, second = client_c.rtp[1][0], client_c.rtp[2][0]
        assert first == struct.pack("!BBHII", 0x80, 0x80 | vp8, 5, 0x10, line.local_ssrc) + \
            bytes([0x90, 0x80, 0x92, 0x34]) + source[16:]
        assert second == struct.pack("!BBHII", 0x80, vp8, 6, 20, line.local_ssrc) + source[12:]
        assert server.tx_packets == sent_before + 2
        # refused: over the buffer, a PictureID past the end, a head shorter than a header
        dropped = server.tx_dropped
        assert not send(head, b"x" * 1500, vp8, 7, 21, line.local_ssrc, -1, 0)
        assert not send(source[:12], b"", vp8, 7, 21, line.local_ssrc, 12, 1)
        assert not send(source[:8], b"xxxx", vp8, 7, 21, line.local_ssrc, -1, 0)
        assert server.tx_dropped == dropped + 3
        with pytest.raises(TypeError):
            send(head, rest, vp8)
        compiled = server._compiled
        assert compiled is not None and not compiled.closed
    finally:
        await client.close()
        await server.close()
    assert compiled.closed, "the compiled sender's socket descriptor outlived the peer"
    assert server.send_rewritten is None and server.tx_packets >= sent_before + 2


async def test_unknown_ssrc_is_mapped_by_the_mid_header_extension() -> None:
    client, server, _client_c, server_c = await connect_pair()
    try:
        lines = server.negotiated()
        mid_id = lines[1].extensions["urn:ietf:params:rtp-hdrext:sdes:mid"]
        ext = struct.pack("!HH", 0xBEDE, 1) + bytes([(mid_id << 4) | 0, ord("1"), 0, 0])
        packet = struct.pack("!BBHII", 0x90, 96, 7, 700, 0x12345678) + ext + b"payload"
        assert client.send_rtp(packet)
        await server_c.wait_for(lambda: len(server_c.rtp) == 1)
        assert server_c.rtp[0] == (packet, "1")
    finally:
        await client.close()
        await server.close()


async def test_trickled_candidates_connect_and_mdns_ones_are_ignored() -> None:
    client = PacketPeer(RTCPeerConnection(rtc_configuration()), LOOPBACK)
    server_c = Collector()
    server = PacketPeer(RTCPeerConnection(rtc_configuration()), LOOPBACK, on_rtp=server_c.on_rtp)
    try:
        client.pc.addTransceiver("audio", direction="sendrecv")
        client.attach()
        await client.pc.setLocalDescription(await client.pc.createOffer())
        bare = "\r\n".join(line for line in client.pc.localDescription.sdp.split("\r\n")
                            if not line.startswith(("a=candidate:", "a=end-of-candidates")))
        await server.pc.setRemoteDescription(RTCSessionDescription(bare, "offer"))
        server.attach()
        await server.pc.setLocalDescription(await server.pc.createAnswer())
        await client.pc.setRemoteDescription(server.pc.localDescription)
        await server.add_ice_candidate({"candidate": "candidate:1 1 udp 2122260223 abcd.local 5000 typ host",
                                        "sdpMid": "0", "sdpMLineIndex": 0})
        connection = server.pc.getTransceivers()[0].receiver.transport.transport.iceGatherer._connection
        assert connection.remote_candidates == []
        for candidate in client.local_candidates():
            # a browser may name any bundled m-line
            await server.add_ice_candidate({"candidate": candidate, "sdpMid": "7", "sdpMLineIndex": 7})
        await server.add_ice_candidate(None)
        assert [c.host for c in connection.remote_candidates] == ["127.0.0.1"]
        await asyncio.gather(client.wait_connected(10), server.wait_connected(10))
        ssrc = client.negotiated()[0].local_ssrc
        assert client.send_rtp(rtp(ssrc, 1, 1, 111))
        await server_c.wait_for(lambda: len(server_c.rtp) == 1)
    finally:
        await client.close()
        await server.close()


def _free_port_range(width: int) -> tuple[int, int]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    low = min(port, 65535 - width)
    return low, low + width


async def test_port_range_and_announced_address_shape_the_candidates() -> None:
    low, high = _free_port_range(20)
    pc = RTCPeerConnection(rtc_configuration())
    peer = PacketPeer(pc, IcePolicy(("127.0.0.1",), announced_address="203.0.113.7", port_min=low, port_max=high))
    try:
        pc.addTransceiver("audio", direction="sendrecv")
        peer.attach()
        await pc.setLocalDescription(await pc.createOffer())
        candidates = [line.split() for line in pc.localDescription.sdp.splitlines() if line.startswith("a=candidate:")]
        assert candidates and {c[4] for c in candidates} == {"203.0.113.7"}
        assert all(low <= int(c[5]) <= high for c in candidates)
    finally:
        await peer.close()


async def test_default_policy_offers_the_hosts_interfaces_without_loopback() -> None:
    pc = RTCPeerConnection(rtc_configuration())
    peer = PacketPeer(pc, IcePolicy())
    try:
        pc.addTransceiver("audio", direction="sendrecv")
        peer.attach()
        await pc.setLocalDescription(await pc.createOffer())
        expected = set(aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True))
        assert _candidate_hosts(pc.localDescription.sdp) == expected
    finally:
        await peer.close()


async def test_attach_refuses_an_unbundled_peer_connection() -> None:
    from aiortc import RTCBundlePolicy, RTCConfiguration
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.BALANCED))
    try:
        pc.addTransceiver("audio")
        pc.addTransceiver("video")
        with pytest.raises(ValueError, match="bundled"):
            PacketPeer(pc, LOOPBACK).attach()
    finally:
        await pc.close()


def test_mline_helpers() -> None:
    line = MLine(index=0, mid="0", kind="audio", direction="sendonly", local_ssrc=1, local_rtx_ssrc=2,
                 remote_ssrcs=(), remote_rtx={}, codecs=(), extensions={})
    assert line.sends and not line.receives and line.codec("opus") is None


async def test_ice_restart_moves_media_to_a_new_agent_under_the_same_dtls_session(send_path: str) -> None:
    client, server, client_c, server_c = await connect_pair()
    try:
        c_lines, s_lines = client.negotiated(), server.negotiated()
        old_server_agent = server._ice
        vp8 = s_lines[1].codec("vp8").payload_type  # type: ignore[union-attr]
        assert server.send_parts(rtp(s_lines[0].local_ssrc, 0, 0, 111)[:14], b"before")   # (another SSRC: no replay)
        await client_c.wait_for(lambda: len(client_c.rtp) == 1)
        old_compiled = server._compiled
        # a re-offer with the same credentials gets the current answer; another peer's offer gets None
        assert await server.answer_ice_restart(client.pc.localDescription.sdp) == server.pc.localDescription.sdp
        stranger = PacketPeer(RTCPeerConnection(rtc_configuration()), LOOPBACK)
        stranger.pc.addTransceiver("audio")
        stranger.pc.addTransceiver("video")
        stranger.pc.addTransceiver("video")
        stranger.attach()
        await stranger.pc.setLocalDescription(await stranger.pc.createOffer())
        assert await server.answer_ice_restart(stranger.pc.localDescription.sdp) is None
        await stranger.close()

        offer = await client.offer_ice_restart()
        answer = await server.answer_ice_restart(offer)
        assert answer is not None
        offered_ufrag = next(l for l in answer.splitlines() if l.startswith("a=ice-ufrag:"))
        assert offered_ufrag not in server.pc.localDescription.sdp  # new credentials
        assert _candidate_hosts(answer) == {"127.0.0.1"}
        await client.accept_ice_restart_answer(answer)
        await asyncio.gather(client.wait_ice_restart(10), server.wait_ice_restart(10))
        assert server._ice is not old_server_agent and server.ice_restarts == 1
        assert server.connected and client.connected

        for seq in range(5):
            assert client.send_rtp(rtp(c_lines[1].local_ssrc, seq, seq * 3000, vp8))
            assert server.send_rtp(rtp(s_lines[2].local_ssrc, seq, seq * 3000, vp8))
        await server_c.wait_for(lambda: len(server_c.rtp) == 5)
        await client_c.wait_for(lambda: len(client_c.rtp) == 6)
        # the forwarding path's send function, built for the old agent's pair, moves too
        assert server.send_parts(rtp(s_lines[2].local_ssrc, 5, 5, vp8)[:14], b"after")
        await client_c.wait_for(lambda: len(client_c.rtp) == 7)
        if send_path == "compiled":
            assert old_compiled is not None and old_compiled.closed   # its descriptor went with the agent
            assert server._compiled is not None and server._compiled is not old_compiled
        # a second restart works too (the DTLS session is still the first one)
        offer = await client.offer_ice_restart()
        await client.accept_ice_restart_answer(await server.answer_ice_restart(offer))  # type: ignore[arg-type]
        await asyncio.gather(client.wait_ice_restart(10), server.wait_ice_restart(10))
        assert server.send_rtp(rtp(s_lines[2].local_ssrc, 9, 9, vp8))
        assert server.send_parts(rtp(s_lines[2].local_ssrc, 10, 10, vp8)[:14], b"again")
        await client_c.wait_for(lambda: len(client_c.rtp) == 9)
        assert client_c.rtp[-1][0].endswith(b"again")
        if send_path == "compiled":   # a send_rewritten taken before a restart hands over too
            stale = server.send_rewritten
            assert stale is not None
            offer = await client.offer_ice_restart()
            await client.accept_ice_restart_answer(await server.answer_ice_restart(offer))  # type: ignore[arg-type]
            await asyncio.gather(client.wait_ice_restart(10), server.wait_ice_restart(10))
            head = rtp(s_lines[2].local_ssrc, 0, 0, vp8)[:14]
            assert stale(head, b"stale", vp8, 11, 11, s_lines[2].local_ssrc, -1, 0)
            await client_c.wait_for(lambda: len(client_c.rtp) == 10)
            assert client_c.rtp[-1][0] == struct.pack("!BBHII", 0x80, vp8, 11, 11, s_lines[2].local_ssrc) + \
                head[12:] + b"stale"
    finally:
        await client.close()
        await server.close()
    assert server.pc.connectionState == "closed"


def test_asyncio_datagram_reader_hooks_exist() -> None:
    """rtc_adapter._install_drain_reader replaces the selector loop's reader of each ICE socket
    (every queued datagram per readiness event); it relies on these asyncio internals."""
    import asyncio.selector_events
    transport = asyncio.selector_events._SelectorDatagramTransport
    init = inspect.getsource(transport.__init__)
    assert "self._loop.call_soon(self._add_reader," in init and "self._read_ready" in init, \
        "asyncio's datagram transport no longer registers _read_ready with loop._add_reader"
    read_ready = inspect.getsource(transport._read_ready)
    assert "self._sock.recvfrom(self.max_size)" in read_ready and "self._protocol.datagram_received(" in read_ready
    for name in ("self._closing = ", "self.max_size", "def _fatal_error("):
        assert name in inspect.getsource(asyncio.selector_events), f"asyncio transports lost {name}"
    assert "self._closing = True" in inspect.getsource(asyncio.selector_events._SelectorTransport.close)
    _require_attr(asyncio.selector_events.BaseSelectorEventLoop, "_add_reader", "asyncio.BaseSelectorEventLoop")


async def test_ice_sockets_read_every_queued_datagram_per_readiness(send_path: str) -> None:
    client, server, client_c, _server_c = await connect_pair()
    try:
        loop = asyncio.get_running_loop()
        protocol = client._ice._nominated[1].protocol  # type: ignore[union-attr]
        fd = protocol.transport.get_extra_info("socket").fileno()
        reader = loop._selector.get_key(fd).data[0]  # type: ignore[attr-defined]
        if send_path == "compiled":
            assert type(reader._callback).__name__ == "Reader", "the compiled reader is not in place"
            assert type(client._receive).__name__ == "Receive", "the compiled SRTP receive is not in place"
        else:
            assert "_drain_reader" in reader._callback.__qualname__, "asyncio's one-datagram reader is still in place"
        line = server.negotiated()[2]
        vp8 = line.codec("vp8").payload_type  # type: ignore[union-attr]
        delivered_per_call: list[int] = []
        drain = reader._callback

        def counting() -> None:
            before = len(client_c.rtp)
            drain()
            delivered_per_call.append(len(client_c.rtp) - before)
        loop._add_reader(fd, counting)  # type: ignore[attr-defined]
        for seq in range(10):   # a burst, all queued before the loop looks at the socket again
            assert server.send_rtp(rtp(line.local_ssrc, seq, seq * 3000, vp8))
        await client_c.wait_for(lambda: len(client_c.rtp) == 10)
        assert delivered_per_call[0] == 10, f"one readiness callback read {delivered_per_call[0]} of a burst of 10"
        assert [struct.unpack_from("!H", p, 2)[0] for p, _ in client_c.rtp] == list(range(10))
    finally:
        await client.close()
        await server.close()


def test_other_private_hooks_exist() -> None:
    import pylibsrtp
    from aiortc.rtcicetransport import RTCIceTransport
    session_init = inspect.getsource(pylibsrtp.Session.__init__)
    for name in ("self._cdata = ", "self._buffer = ", "self._srtp = "):
        assert name in session_init, f"pylibsrtp.Session lost {name.split()[0]} (media/rtc_adapter._Srtp)"
    from pylibsrtp._binding import lib
    for fn in ("srtp_protect", "srtp_protect_rtcp", "srtp_unprotect", "srtp_unprotect_rtcp"):
        _require_attr(lib, fn, "pylibsrtp._binding.lib")
    init = inspect.getsource(RTCIceTransport.__init__)
    assert "self._recv = self._connection.recv" in init and "self._send = self._connection.send" in init, \
        "aiortc.RTCIceTransport._recv/_send (the DTLS reader's ICE hooks) changed"
    assert "self._query_consent_task" in inspect.getsource(aioice.ice.Connection.__init__)
    import asyncio.selector_events
    assert "self._sock = sock" in inspect.getsource(asyncio.selector_events._SelectorTransport.__init__), \
        "asyncio selector transports lost _sock (PacketPeer sends on the raw socket)"
