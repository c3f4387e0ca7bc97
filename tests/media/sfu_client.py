"""A cheap aiortc site for SFU tests: offers the layout like the browser page does, publishes
hand-built RTP (VP8 descriptors with PictureID, keyframes on request, Opus-sized audio with an
RFC 6464 level) through ``media.rtc_adapter.PacketPeer`` and records what it receives per slot.
Real aiortc peer connection, real ICE/DTLS/SRTP over 127.0.0.1; no codec."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription

from media.rtc_adapter import IcePolicy, MLine, PacketPeer, rtc_configuration

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


@dataclass
class Received:
    packets: list[tuple[int, int, int, int, bytes]] = field(default_factory=list)  # (ssrc, seq, ts, pt, payload)

    def seqs(self) -> list[int]:
        return [p[1] for p in self.packets]


class Site:
    """One participant's client side.  ``layout``: media.Participant.layout()."""

    def __init__(self, layout: list[dict[str, Any]], fill: int = 0):
        self.layout = layout
        self.fill = fill          # payload filler byte: tells receivers which site sent a packet
        self.pc = RTCPeerConnection(rtc_configuration())
        self.peer = PacketPeer(self.pc, LOOPBACK, on_rtp=self._on_rtp, on_rtcp=self._on_rtcp)
        self.pc.on("connectionstatechange", lambda: self._changed.set())
        self.lines: list[MLine] = []
        self.by_mid: dict[str, str] = {}          # mid -> slot
        self.received: dict[str, Received] = {e["slot"]: Received() for e in layout}
        self.rtcp: list[bytes] = []
        self.plis: dict[str, int] = {}            # published name -> PLIs received
        self._changed = asyncio.Event()
        self.stopped_reading = False
        self._seq: dict[str, int] = {}
        self._ts: dict[str, int] = {}
        self._pid: dict[str, int] = {}
        self.keyframe_wanted: dict[str, bool] = {}

    async def connect(self, answer: Callable[[str], Any]) -> None:
        """Offer (one transceiver per layout entry), get the answer from ``answer(sdp)``."""
        for entry in self.layout:
            self.pc.addTransceiver(entry["kind"], direction="sendrecv" if entry["send"] else "recvonly")
        self.peer.attach()
        await self.pc.setLocalDescription(await self.pc.createOffer())
        sdp = await answer(self.pc.localDescription.sdp)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp, "answer"))
        self.lines = self.peer.negotiated()
        self.by_mid = {line.mid: entry["slot"] for line, entry in zip(self.lines, self.layout)}
        await self.peer.wait_connected(10)

    def line(self, send: str) -> MLine:
        index = next(i for i, e in enumerate(self.layout) if e["send"] == send)
        return self.lines[index]

    def ssrc(self, send: str) -> int:
        return self.line(send).local_ssrc

    # ---- publishing ----

    def send_video(self, name: str = "camera", keyframe: bool | None = None, packets: int = 2) -> None:
        """One frame of ``packets`` packets; a keyframe when asked, or after a PLI."""
        line = self.line(name)
        pt = line.codec("vp8").payload_type  # type: ignore[union-attr]
        if keyframe is None:
            keyframe = self.keyframe_wanted.pop(name, False) or name not in self._seq
        seq = self._seq.setdefault(name, 1000)
        ts = self._ts.setdefault(name, 50000)
        pid = self._pid.setdefault(name, 100)
        for i in range(packets):
            marker = i == packets - 1
            header = struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, line.local_ssrc)
            self.peer.send_rtp(header + vp8_payload(pid & 0x7FFF, keyframe, start=i == 0, fill=self.fill))
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
        self.peer.send_rtp(header + ext + b"\xfc" + bytes([self.fill]) * 80)
        self._seq["audio"], self._ts["audio"] = seq + 1, ts + 960

    # ---- receiving ----

    def fills(self, slot: str) -> list[int]:
        """Which site (fill byte) sent each packet received in a slot."""
        return [p[4][-1] for p in self.received[slot].packets]

    def _on_rtp(self, packet: bytes, mid: str | None, arrival: float) -> None:
        slot = self.by_mid.get(mid or "")
        if slot is None:
            return
        _b0, b1, seq, ts, ssrc = struct.unpack_from("!BBHII", packet)
        self.received[slot].packets.append((ssrc, seq, ts, b1 & 0x7F, packet[12:]))
        self._changed.set()

    def _on_rtcp(self, data: bytes) -> None:
        self.rtcp.append(data)
        pos = 0
        while pos + 12 <= len(data):
            b0, pt, length = struct.unpack_from("!BBH", data, pos)
            if pt == 206 and b0 & 0x1F == 1:
                media_ssrc = struct.unpack_from("!I", data, pos + 8)[0]
                for entry, line in zip(self.layout, self.lines):
                    if entry["send"] and line.local_ssrc == media_ssrc:
                        self.plis[entry["send"]] = self.plis.get(entry["send"], 0) + 1
                        self.keyframe_wanted[entry["send"]] = True
            pos += (length + 1) * 4
        self._changed.set()

    async def until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        async def wait() -> None:
            while not predicate():
                self._changed.clear()
                await self._changed.wait()
        await asyncio.wait_for(wait(), timeout)

    async def close(self) -> None:
        await self.peer.close()


class Pump:
    """Publishes for a set of sites at a real-ish pace (video 50 fps, audio 50 pps) until
    stopped; owned by the test (``async with``)."""

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
        frame = 0
        while True:
            for site in self.sites:
                if site.layout[0]["send"] != "audio":
                    continue
                site.send_audio(self.levels.get(site, 40))
                if self.video:
                    # keyframes only on a PLI (or the first frame): switches depend on it
                    site.send_video("camera")
                    site.send_video("thumb", packets=1)
            frame += 1
            await asyncio.sleep(0.02)


def monotonic() -> float:
    return time.monotonic()
