"""A cheap aiortc site for SFU tests: offers the layout like the browser page does, publishes
hand-built RTP (VP8 descriptors with PictureID, keyframes on request, Opus-sized audio with an
RFC 6464 level) through ``media.rtc_adapter.PacketPeer`` and records what it receives per slot.
Like a browser it NACKs gaps in what it receives, answers NACKs with RTX from its history and
answers PLIs with a keyframe.  Losses can be injected on either side.  Real aiortc peer
connection, real ICE/DTLS/SRTP over 127.0.0.1; no codec."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription

from media import rtcp
from media.rtc_adapter import IcePolicy, MLine, PacketPeer, rtc_configuration
from media.rtp_rewrite import build_rtx, payload_offset

LOOPBACK = IcePolicy(candidate_addresses=("127.0.0.1",))
AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"


def vp8_payload(picture_id: int, keyframe: bool, start: bool = True, size: int = 300, fill: int = 0) -> bytes:
    """RFC 7741 descriptor (X, I with a 15-bit PictureID) + a VP8 payload header."""
    descriptor = bytes([0x90 if start else 0x80, 0x80, 0x80 | (picture_id >> 8) & 0x7F, picture_id & 0xFF])
    body = bytes([fill]) * size
    if not start:
        return descriptor + body
    if keyframe:  # frame tag with P=0, then the start code and a 640x360 size
        return descriptor + bytes([0x10, 0x02, 0x00]) + b"\x9d\x01\x2a" + struct.pack("<HH", 640, 360) + body
    return descriptor + bytes([0x11, 0x02, 0x00]) + body


def h264_payload(keyframe: bool, start: bool = True, size: int = 300, fill: int = 0) -> bytes:
    """RFC 6184: a keyframe starts with a STAP-A of SPS, PPS and an IDR slice; other packets are
    single non-IDR slices."""
    body = bytes([fill]) * size
    if keyframe and start:
        nals = [b"\x67\x42\xc0\x1f\x8c\x8d", b"\x68\xce\x3c\x80", b"\x65\x88" + body]
        return b"\x78" + b"".join(struct.pack("!H", len(n)) + n for n in nals)
    return b"\x41\x9a" + body


@dataclass
class Received:
    packets: list[tuple[int, int, int, int, bytes]] = field(default_factory=list)  # (ssrc, seq, ts, pt, payload)
    recovered: list[int] = field(default_factory=list)   # seqs that came back by RTX

    def seqs(self) -> list[int]:
        return [p[1] for p in self.packets]


def complete(seqs: list[int]) -> bool:
    """Every sequence number between the first and the last arrived (retransmissions may come
    out of order)."""
    if not seqs:
        return True
    first = seqs[0]
    span = {(s - first) & 0xFFFF for s in seqs}
    return span == set(range(max(span) + 1))


class Site:
    """One participant's client side.  ``layout``: media.Participant.layout()."""

    def __init__(self, layout: list[dict[str, Any]], fill: int = 0, video_codec: str = "vp8"):
        self.layout = layout
        self.video_codec = video_codec  # what it publishes: "vp8", or "h264" only (a browser insisting)
        self.fill = fill          # payload filler byte: tells receivers which site sent a packet
        self.pc = RTCPeerConnection(rtc_configuration())
        self.peer = PacketPeer(self.pc, LOOPBACK, on_rtp=self._on_rtp, on_rtcp=self._on_rtcp)
        self.pc.on("connectionstatechange", lambda: self._changed.set())
        self.lines: list[MLine] = []
        self.by_mid: dict[str, str] = {}          # mid -> slot
        self.received: dict[str, Received] = {e["slot"]: Received() for e in layout}
        self.raw: dict[str, list[bytes]] = {e["slot"]: [] for e in layout}
        self.rtcp: list[bytes] = []
        self.plis: dict[str, int] = {}            # published name -> PLIs received
        self.nacked: dict[str, list[int]] = {}    # published name -> seqs the SFU asked again
        self.reports: list[rtcp.RtcpPacket] = []  # RR, REMB, SR received
        self._changed = asyncio.Event()
        self._seq: dict[str, int] = {}
        self._ts: dict[str, int] = {}
        self._pid: dict[str, int] = {}
        self._rtx_seq = 0
        self._history: dict[str, dict[int, bytes]] = {}
        self._highest: dict[str, int] = {}
        self.keyframe_wanted: dict[str, bool] = {}
        self.drop_sending: set[tuple[str, int]] = set()    # (published name, seq): lost upstream once
        self.drop_receiving: set[tuple[str, int]] = set()  # (slot, seq): lost downstream once
        self.sent_ts: dict[str, dict[int, int]] = {}       # name -> seq -> timestamp sent

    async def connect(self, answer: Callable[[str], Any]) -> None:
        """Offer (one transceiver per layout entry), get the answer from ``answer(sdp)``."""
        for entry in self.layout:
            t = self.pc.addTransceiver(entry["kind"], direction="sendrecv" if entry["send"] else "recvonly")
            if entry["kind"] == "video" and entry["send"] and self.video_codec == "h264":
                caps = RTCRtpSender.getCapabilities("video").codecs
                t.setCodecPreferences([c for c in caps if c.mimeType.lower() in ("video/h264", "video/rtx")])
        self.peer.attach()
        await self.pc.setLocalDescription(await self.pc.createOffer())
        sdp = await answer(self.pc.localDescription.sdp)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp, "answer"))
        self.lines = self.peer.negotiated()
        self.by_mid = {line.mid: entry["slot"] for line, entry in zip(self.lines, self.layout)}
        await self.peer.wait_connected(10)

    async def restart_ice(self, answer: Callable[[str], Any]) -> None:
        """Re-offer the same connection with new ICE credentials (what a browser's
        ``restartIce()`` does) and wait until media flows on the new path."""
        offer = await self.peer.offer_ice_restart()
        await self.peer.accept_ice_restart_answer(await answer(offer))
        await self.peer.wait_ice_restart(10)

    def line(self, send: str) -> MLine:
        index = next(i for i, e in enumerate(self.layout) if e["send"] == send)
        return self.lines[index]

    def slot_line(self, slot: str) -> MLine:
        index = next(i for i, e in enumerate(self.layout) if e["slot"] == slot)
        return self.lines[index]

    def ssrc(self, send: str) -> int:
        return self.line(send).local_ssrc

    # ---- publishing ----

    def _send(self, name: str, seq: int, packet: bytes) -> None:
        history = self._history.setdefault(name, {})
        history[seq & 0xFFFF] = packet
        history.pop((seq - 512) & 0xFFFF, None)
        if (name, seq & 0xFFFF) in self.drop_sending:
            self.drop_sending.discard((name, seq & 0xFFFF))
            return
        self.peer.send_rtp(packet)

    def send_video(self, name: str = "camera", keyframe: bool | None = None, packets: int = 2, size: int = 300) -> None:
        """One frame of ``packets`` packets; a keyframe when asked, or after a PLI."""
        line = self.line(name)
        pt = line.codec(self.video_codec).payload_type  # type: ignore[union-attr]
        if keyframe is None:
            keyframe = self.keyframe_wanted.pop(name, False) or name not in self._seq
        seq = self._seq.setdefault(name, 1000)
        ts = self._ts.setdefault(name, 50000)
        pid = self._pid.setdefault(name, 100)
        for i in range(packets):
            marker = i == packets - 1
            header = struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, line.local_ssrc)
            self.sent_ts.setdefault(name, {})[seq & 0xFFFF] = ts & 0xFFFFFFFF
            if self.video_codec == "h264":
                payload = h264_payload(keyframe, start=i == 0, size=size, fill=self.fill)
            else:
                payload = vp8_payload(pid & 0x7FFF, keyframe, start=i == 0, size=size, fill=self.fill)
            self._send(name, seq, header + payload)
            seq += 1
        self._seq[name], self._ts[name], self._pid[name] = seq, ts + 3000, pid + 1

    def send_audio(self, level: int = 30) -> None:
        line = self.line("audio")
        pt = line.codec("opus").payload_type  # type: ignore[union-attr]
        ext_id = line.extensions[AUDIO_LEVEL_URI]
        seq = self._seq.setdefault("audio", 2000)
        ts = self._ts.setdefault("audio", 70000)
        header = struct.pack("!BBHII", 0x90, pt, seq & 0xFFFF, ts & 0xFFFFFFFF, line.local_ssrc)
        ext = struct.pack("!HHBBH", 0xBEDE, 1, (ext_id << 4) | 0, 0x80 | level, 0)
        self._send("audio", seq, header + ext + b"\xfc" + bytes([self.fill]) * 80)
        self._seq["audio"], self._ts["audio"] = seq + 1, ts + 960

    def send_sender_report(self, name: str, ntp: int, rtp_ts: int) -> None:
        self.peer.send_rtcp(rtcp.build_sr(self.ssrc(name), ntp, rtp_ts, 1, 1))

    def send_remb(self, bitrate: int) -> None:
        """This site's bandwidth estimate for everything it receives."""
        ssrcs = [line.remote_ssrcs[0] for line in self.lines if line.kind == "video" and line.remote_ssrcs]
        self.peer.send_rtcp(rtcp.build_rr(self.lines[0].local_ssrc) + rtcp.build_remb(self.lines[0].local_ssrc, bitrate, ssrcs))

    # ---- receiving ----

    def fills(self, slot: str) -> list[int]:
        """Which site (fill byte) sent each packet received in a slot."""
        return [p[4][-1] for p in self.received[slot].packets]

    def _on_rtp(self, packet: bytes, mid: str | None, arrival: float) -> None:
        slot = self.by_mid.get(mid or "")
        if slot is None:
            return
        _b0, b1, seq, ts, ssrc = struct.unpack_from("!BBHII", packet)
        off = payload_offset(packet)
        if off is None:
            return
        line = self.slot_line(slot)
        payload = packet[off:]
        if ssrc in line.remote_rtx:             # a retransmission: original seq first
            seq = struct.unpack_from("!H", payload)[0]
            ssrc, payload = line.remote_rtx[ssrc], payload[2:]
            self.received[slot].recovered.append(seq)
        elif (slot, seq) in self.drop_receiving:   # lost on the way: the next packet shows the gap
            self.drop_receiving.discard((slot, seq))
            return
        else:
            self._note_gap(slot, line, ssrc, seq)
        self.received[slot].packets.append((ssrc, seq, ts, b1 & 0x7F, payload))
        self.raw[slot].append(packet)
        self._changed.set()

    def _note_gap(self, slot: str, line: MLine, ssrc: int, seq: int) -> None:
        """NACK the sequence numbers skipped before ``seq`` (video), like a browser."""
        highest = self._highest.get(slot)
        if highest is not None and line.kind == "video":
            gap = (seq - highest) & 0xFFFF
            if 1 < gap < 100:
                missing = [(highest + k) & 0xFFFF for k in range(1, gap)]
                self.peer.send_rtcp(rtcp.build_rr(line.local_ssrc) + rtcp.build_nack(line.local_ssrc, ssrc, missing))
        if highest is None or 0 < ((seq - highest) & 0xFFFF) < 0x8000:
            self._highest[slot] = seq

    def _on_rtcp(self, data: bytes) -> None:
        self.rtcp.append(data)
        for packet in rtcp.parse_compound(data):
            if isinstance(packet, rtcp.Pli):
                name = self._published(packet.media_ssrc)
                if name is not None:
                    self.plis[name] = self.plis.get(name, 0) + 1
                    self.keyframe_wanted[name] = True
            elif isinstance(packet, rtcp.Nack):
                name = self._published(packet.media_ssrc)
                if name is not None:
                    self.nacked.setdefault(name, []).extend(packet.seqs)
                    self._retransmit(name, packet.seqs)
            else:
                self.reports.append(packet)
        self._changed.set()

    def _published(self, ssrc: int) -> str | None:
        for entry, line in zip(self.layout, self.lines):
            if entry["send"] and line.local_ssrc == ssrc:
                return entry["send"]  # type: ignore[no-any-return]
        return None

    def _retransmit(self, name: str, seqs: tuple[int, ...]) -> None:
        line = self.line(name)
        rtx = next((c for c in line.codecs if c.name == "rtx"), None)
        for seq in seqs:
            packet = self._history.get(name, {}).get(seq)
            if packet is None or rtx is None:
                continue
            again = build_rtx(packet, rtx.payload_type, line.local_rtx_ssrc, self._rtx_seq)
            self._rtx_seq += 1
            if again is not None:
                self.peer.send_rtp(again)

    async def until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        async def wait() -> None:
            while not predicate():
                self._changed.clear()
                await self._changed.wait()
        await asyncio.wait_for(wait(), timeout)

    async def close(self) -> None:
        await self.peer.close()


class Pump:
    """Publishes for a set of sites at a real-ish pace (50 frames/s of video, 50 audio
    packets/s) until the ``async with`` block ends; keyframes only on a PLI (or first frame)."""

    def __init__(self, sites: list[Site], audio_levels: dict[Site, int] | None = None, video: bool = True):
        self.sites = sites
        self.levels = audio_levels or {}
        self.video = video
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Pump:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass

    async def _run(self) -> None:
        while True:
            for site in self.sites:
                if site.layout[0]["send"] != "audio":
                    continue
                site.send_audio(self.levels.get(site, 40))
                if self.video:
                    site.send_video("camera")
                    site.send_video("thumb", packets=1, size=100)
            await asyncio.sleep(0.02)
