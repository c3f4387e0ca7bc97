"""The load generator of ``bench.sfu`` against our SFU: one meeting, 1 chair + S sites.

Every site is one aiortc ``RTCPeerConnection`` driven through ``media.rtc_adapter.PacketPeer``
(the same non-decoding receive hook and raw sender the SFU uses), so the generator costs
little: it never encodes (the fixture is pre-encoded) and never decodes (it reads RTP headers
and the latency tag at the payload's end).  Each site does what a browser page does: creates the
transceivers of ``Participant.layout()`` in order, offers without candidates and trickles
them, publishes Opus (with RFC 6464 levels), its full 640x360 camera layer and its 320x180
thumbnail layer at real pace, answers PLI/FIR with a keyframe, and subscribes with the
default slots.  The chair gives the floor to site 1, whose audio is the loudest; now and then
two other sites speak up (``_sfu_fixtures.site_audio_level``), so audio and gallery slots
follow real speaker changes while the main slot stays on the floor holder.

Latency: ``_sfu_load.tag_packet`` tags every sent packet; subscribers look the tag up in the
shared send-time table.  A direct path measured in the same run, a second PacketPeer pair
inside the generator carrying copies of the floor holder's camera and audio packets, gives the
loopback + SRTP + event-loop cost without the SFU; the SFU's added latency is the difference.

The SFU runs in its own process pinned to ``cpu`` (``bench._sfu_ours``); the generator runs
in the caller's process (pinned by the caller to the other core).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription

from bench._sfu_fixtures import AUDIO_FRAME_S, FLOOR_SITE, FPS, MediaFixture
from bench._sfu_load import SiteReplay, StreamStats, keyframe_requests, percentile, site_phase, tag_packet
from bench._sfu_ours import SfuProcess, process_wait_seconds
from media.forwarder import PAUSE_HOLD
from media.rtc_adapter import IcePolicy, MLine, PacketPeer, rtc_configuration

LOOPBACK = IcePolicy(candidate_addresses=("127.0.0.1",))
AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
# "Full frame rate" and "audio fed": fraction of the nominal rate a stream must reach.
FULL_RATE = 0.95
PACE_S = 0.002
Progress = Callable[[str], None]


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _strip_candidates(sdp: str) -> str:
    """The offer as a browser sends it before trickling: no candidate lines."""
    return "".join(line + "\r\n" for line in sdp.split("\r\n")
                   if line and not line.startswith(("a=candidate:", "a=end-of-candidates")))


@dataclass
class SitePeer:
    """One site (or the chair) of the generated meeting."""

    index: int
    role: str
    pid: str
    layout: list[dict[str, Any]]
    stats: StreamStats
    peer: PacketPeer | None = None
    lines: list[MLine] = field(default_factory=list)
    replay: SiteReplay | None = None
    keyframe_requests: int = 0
    paused: list[str] = field(default_factory=list)   # layers the SFU asked this site not to send

    def on_layers(self, paused: list[str]) -> None:
        self.paused = list(paused)
        if self.replay is not None:
            self.replay.set_paused(self.paused)

    def on_rtcp(self, packet: bytes) -> None:
        if self.replay is not None:
            for ssrc in keyframe_requests(packet):
                if self.replay.request_keyframe(ssrc):
                    self.keyframe_requests += 1

    def slot_of_mid(self) -> dict[str, str]:
        return {line.mid: self.layout[line.index]["slot"] for line in self.lines if line.index < len(self.layout)}

    async def connect(self, sfu: SfuProcess, fixture: MediaFixture, thumb: MediaFixture) -> None:
        pc = RTCPeerConnection(rtc_configuration([]))
        self.peer = PacketPeer(pc, LOOPBACK, on_rtp=self.stats.record, on_rtcp=self.on_rtcp)
        for entry in self.layout:
            sends = entry["send"] in ("audio", "camera", "thumb")
            pc.addTransceiver(entry["kind"], direction="sendrecv" if sends else "recvonly")
        self.peer.attach()
        await pc.setLocalDescription(await pc.createOffer())
        answer = await sfu.answer(self.pid, _strip_candidates(pc.localDescription.sdp))
        for candidate in self.peer.local_candidates():
            await sfu.add_ice_candidate(self.pid, {"candidate": candidate, "sdpMid": "0", "sdpMLineIndex": 0})
        await sfu.add_ice_candidate(self.pid, None)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        self.lines = self.peer.negotiated()
        if self.role == "observer":
            return
        by_send = {self.layout[line.index]["send"]: line for line in self.lines if line.index < len(self.layout)}
        audio, camera, thumb_line = by_send["audio"], by_send["camera"], by_send["thumb"]
        vp8, opus = camera.codec("vp8"), audio.codec("opus")
        if vp8 is None or opus is None:
            raise RuntimeError(f"site {self.index}: the SFU did not accept VP8 + Opus")
        level_id = audio.extensions.get(AUDIO_LEVEL_URI)
        if level_id is None:
            raise RuntimeError(f"site {self.index}: the SFU did not negotiate {AUDIO_LEVEL_URI}")
        self.replay = SiteReplay(fixture, self.index, video_ssrc=camera.local_ssrc, audio_ssrc=audio.local_ssrc,
                                 video_pt=vp8.payload_type, audio_pt=opus.payload_type, audio_level_id=level_id,
                                 thumb=thumb, thumb_ssrc=thumb_line.local_ssrc, phase=site_phase(self.index))
        self.replay.set_paused(self.paused)

    async def close(self) -> None:
        if self.peer is not None:
            await self.peer.close()


class DirectPath:
    """Two PacketPeers inside the generator: the same packets without the SFU in between."""

    def __init__(self, send_times: list[float]) -> None:
        self.stats = StreamStats(send_times)
        self.sender = PacketPeer(RTCPeerConnection(rtc_configuration([])), LOOPBACK)
        self.receiver = PacketPeer(RTCPeerConnection(rtc_configuration([])), LOOPBACK, on_rtp=self.stats.record)
        self.rewrite: dict[int, tuple[int, int]] = {}  # source SSRC -> (direct SSRC, payload type)

    async def connect(self, replay: SiteReplay) -> None:
        a, b = self.sender, self.receiver
        a.pc.addTransceiver("audio", direction="sendonly")
        a.pc.addTransceiver("video", direction="sendonly")
        a.attach()
        await a.pc.setLocalDescription(await a.pc.createOffer())
        await b.pc.setRemoteDescription(a.pc.localDescription)
        for t in b.pc.getTransceivers():
            t.direction = "recvonly"
        b.attach()
        await b.pc.setLocalDescription(await b.pc.createAnswer())
        await a.pc.setRemoteDescription(b.pc.localDescription)
        await asyncio.gather(a.wait_connected(20), b.wait_connected(20))
        lines = {line.kind: line for line in a.negotiated()}
        vp8, opus = lines["video"].codec("vp8"), lines["audio"].codec("opus")
        assert vp8 is not None and opus is not None
        self.rewrite = {replay.video_ssrc: (lines["video"].local_ssrc, vp8.payload_type),
                        replay.audio_ssrc: (lines["audio"].local_ssrc, opus.payload_type)}

    def mirror(self, rtp: bytes, source_ssrc: int) -> bytes | None:
        target = self.rewrite.get(source_ssrc)
        if target is None:
            return None
        ssrc, pt = target
        out = bytearray(rtp)
        out[1] = (out[1] & 0x80) | pt
        struct.pack_into("!I", out, 8, ssrc)
        return bytes(out)

    async def close(self) -> None:
        await self.sender.close()
        await self.receiver.close()


class Pacer:
    """Sends every site's due packets every ``PACE_S``: tags them, records send times and how
    late the generator was against the schedule (its own saturation shows there first)."""

    def __init__(self, sites: list[SitePeer], direct: DirectPath, mirrored: SitePeer, send_times: list[float]) -> None:
        self.sites = [s for s in sites if s.replay is not None and s.peer is not None]
        self.direct = direct
        self.mirrored = mirrored
        self.send_times = send_times
        self.lateness_s: list[float] = []
        self.measuring = False
        self.sent = 0
        self.send_failures = 0

    async def run(self) -> None:
        send_times = self.send_times
        start = time.monotonic()
        sites = [(site, site.replay, site.peer) for site in self.sites]
        next_due = [0.0] * len(sites)
        while True:
            elapsed = time.monotonic() - start
            for n, (site, replay, peer) in enumerate(sites):
                if elapsed < next_due[n]:
                    continue
                assert replay is not None and peer is not None
                due = replay.due(elapsed)
                next_due[n] = replay.next_due()
                if not due:
                    continue
                if self.measuring:
                    self.lateness_s.append(elapsed - replay.phase - due[0].send_at)
                mirror = site is self.mirrored
                for p in due:
                    send_times.append(time.monotonic())
                    if not peer.send_rtp(tag_packet(p.data, len(send_times) - 1)):
                        self.send_failures += 1
                    self.sent += 1
                    if mirror:
                        copy = self.direct.mirror(p.data, p.ssrc)
                        if copy is not None:
                            send_times.append(time.monotonic())
                            self.direct.sender.send_rtp(tag_packet(copy, len(send_times) - 1))
            await asyncio.sleep(PACE_S)


@dataclass
class _Snapshot:
    t: float
    sfu_cpu: float
    own_cpu: float
    sfu_wait: float
    own_wait: float
    udp: dict[str, int]
    packets: list[dict[str | None, int]]
    frames: list[dict[str | None, int]]
    counters: dict[str, float]


def udp_counters(path: str = "/proc/net/snmp") -> dict[str, int]:
    """The kernel's UDP counters (this network namespace, all processes in it)."""
    with contextlib.suppress(OSError):
        with open(path) as f:
            rows = [line.split() for line in f if line.startswith("Udp:")]
        if len(rows) >= 2:
            return {k: int(v) for k, v in zip(rows[0][1:], rows[1][1:], strict=False)}
    return {}


def _take(sfu: SfuProcess, sites: list[SitePeer]) -> _Snapshot:
    return _Snapshot(time.monotonic(), sfu.cpu_seconds(), _own_cpu_seconds(), sfu.wait_seconds(),
                     process_wait_seconds(os.getpid()), udp_counters(), [dict(s.stats.packets) for s in sites], [dict(s.stats.frames) for s in sites], {})


async def _connect_all(sfu: SfuProcess, sites: list[SitePeer], fixture: MediaFixture, thumb: MediaFixture,
                       parallel: int = 6) -> None:
    gate = asyncio.Semaphore(parallel)

    async def one(site: SitePeer) -> None:
        async with gate:
            await site.connect(sfu, fixture, thumb)

    await asyncio.gather(*(one(s) for s in sites))
    for site in sites:
        assert site.peer is not None
        await site.peer.wait_connected(30)


async def drive(fixture: MediaFixture, thumb: MediaFixture, sites: int, warmup: float, window: float,
                progress: Progress, cpu: int | None = 0, gallery: int = 6, audio_slots: int = 3,
                obey_layers: bool = True, compiled: bool = True) -> dict[str, Any]:
    """One measured meeting of 1 chair + ``sites`` sites; see the module docstring.
    ``obey_layers``: sites stop sending the layers the SFU reports paused, as browsers do
    (False: every layer flows all the time, the SFU receiving what nobody watches).
    ``compiled``: False runs the SFU without ``media._fastpath`` (everything in Python)."""
    send_times: list[float] = []
    peers: list[SitePeer] = []
    direct = DirectPath(send_times)
    pacer_task: asyncio.Task[None] | None = None
    async with SfuProcess(cpu=cpu, gallery=gallery, audio_slots=audio_slots, compiled=compiled) as sfu:
        by_pid: dict[str, SitePeer] = {}

        def on_event(pid: str, event: dict[str, Any]) -> None:
            site = by_pid.get(pid)
            if obey_layers and site is not None and event.get("type") == "layers":
                site.on_layers(event["paused"])

        sfu.on_event = on_event
        try:
            t_setup = time.monotonic()
            for i in range(sites + 1):
                role = "chair" if i == 0 else "site"
                info = await sfu.join(f"site-{i}", "Chủ trì" if i == 0 else f"Điểm cầu {i}", role)
                peers.append(SitePeer(i, role, info["id"], info["layout"], StreamStats(send_times)))
                by_pid[info["id"]] = peers[-1]
            await _connect_all(sfu, peers, fixture, thumb)
            floor = peers[FLOOR_SITE] if sites >= FLOOR_SITE else peers[0]  # the site that speaks
            await sfu.call(peers[0].pid, "set_floor", floor.pid)
            assert floor.replay is not None
            await direct.connect(floor.replay)
            progress(f"ours: S={sites}: {len(peers)} peers connected in {time.monotonic() - t_setup:.1f}s; "
                     f"floor to site {floor.index}; warm-up {warmup:g}s, window {window:g}s")
            pacer = Pacer(peers, direct, floor, send_times)
            pacer_task = asyncio.create_task(pacer.run(), name="bench-sfu-pacer")
            # bench only: let slots, keyframes and queues settle, and unwatched layers pause
            await asyncio.sleep(max(warmup, PAUSE_HOLD + 1.0) if obey_layers else warmup)

            slots = {p.pid: (await sfu.snapshot(p.pid))["slots"] for p in peers}
            counters0 = await sfu.counters()
            before = _take(sfu, peers)
            kf0 = sum(p.keyframe_requests for p in peers)
            for stats in [p.stats for p in peers] + [direct.stats]:
                stats.measuring = True
            pacer.measuring = True
            published0 = pacer.sent
            await asyncio.sleep(window)
            after = _take(sfu, peers)
            pacer.measuring = False
            published = pacer.sent - published0
            for stats in [p.stats for p in peers] + [direct.stats]:
                stats.measuring = False
            counters1 = await sfu.counters()
            kf1 = sum(p.keyframe_requests for p in peers)
        finally:
            if pacer_task is not None:
                pacer_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pacer_task
            for p in peers:
                await p.close()
            await direct.close()

    rates = {"full": fixture.video_packets_per_s, "thumb": thumb.video_packets_per_s, "audio": 1 / AUDIO_FRAME_S}
    result = _summarise(sites, peers, slots, before, after, counters0, counters1, pacer, direct, kf1 - kf0, rates)
    # what the SFU received (the mirrored copies go to the direct path, not the SFU)
    result["published_packets_per_s"] = published / result["window_s"]
    result["paused_layers"] = sum(len(p.paused) for p in peers) if obey_layers else 0
    result["obey_layers"] = obey_layers
    return result


def _summarise(sites: int, peers: list[SitePeer], slots: dict[str, dict[str, str | None]], before: _Snapshot,
               after: _Snapshot, counters0: dict[str, float], counters1: dict[str, float], pacer: Pacer,
               direct: DirectPath, keyframe_requests_in_window: int, rates: dict[str, float]) -> dict[str, Any]:
    dt = after.t - before.t
    forwarded = 0
    expected_pps = 0.0  # every fed slot at its nominal rate (gallery = thumbnails)
    video_fps: list[float] = []
    audio_pps: list[float] = []
    empty_video_slots = 0
    for n, peer in enumerate(peers):
        p0, p1, f0, f1 = before.packets[n], after.packets[n], before.frames[n], after.frames[n]
        forwarded += sum(p1.values()) - sum(p0.values())
        mine = slots.get(peer.pid, {})
        for mid, slot in peer.slot_of_mid().items():
            if mine.get(slot) is None:
                if slot != "screen" and not slot.startswith("audio"):
                    empty_video_slots += 1
                continue
            if slot.startswith("audio"):
                audio_pps.append((p1.get(mid, 0) - p0.get(mid, 0)) / dt)
                expected_pps += rates["audio"]
            else:
                video_fps.append((f1.get(mid, 0) - f0.get(mid, 0)) / dt)
                expected_pps += rates["thumb" if slot.startswith("gallery") else "full"]
    sfu_cpu = after.sfu_cpu - before.sfu_cpu
    own_cpu = after.own_cpu - before.own_cpu
    latencies = [x for p in peers for x in p.stats.latencies_s]
    untagged = sum(p.stats.untagged for p in peers)
    direct_lat = direct.stats.latencies_s
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    d50, d99 = percentile(direct_lat, 50), percentile(direct_lat, 99)
    late99 = percentile(pacer.lateness_s, 99) or 0.0
    sfu_cores = sfu_cpu / dt
    video_ok = bool(video_fps) and min(video_fps) >= FULL_RATE * FPS
    audio_ok = bool(audio_pps) and min(audio_pps) >= FULL_RATE / AUDIO_FRAME_S
    counter_delta = {k: counters1.get(k, 0.0) - counters0.get(k, 0.0) for k in counters1}
    return {
        "sites": sites,
        "participants": len(peers),
        "window_s": round(dt, 3),
        "sfu_cpu_cores": sfu_cores,
        "sfu_cpu_us_per_packet": sfu_cpu / forwarded * 1e6 if forwarded else None,
        "forwarded_packets": forwarded,
        "forwarded_packets_per_s": forwarded / dt,
        "expected_packets_per_s": expected_pps,
        "sfu_reported": {k: round(v) for k, v in counter_delta.items()},
        "video_streams": len(video_fps),
        "video_fps_min": min(video_fps) if video_fps else None,
        "video_fps_mean": sum(video_fps) / len(video_fps) if video_fps else None,
        "video_streams_below_full_rate": sum(1 for f in video_fps if f < FULL_RATE * FPS),
        "empty_video_slots": empty_video_slots,
        "audio_streams": len(audio_pps),
        "audio_pps_min": min(audio_pps) if audio_pps else None,
        "latency_ms_p50": p50 * 1e3 if p50 is not None else None,
        "latency_ms_p99": p99 * 1e3 if p99 is not None else None,
        "latency_samples": len(latencies),
        "untagged_packets": untagged,
        "direct_latency_ms_p50": d50 * 1e3 if d50 is not None else None,
        "direct_latency_ms_p99": d99 * 1e3 if d99 is not None else None,
        "added_latency_ms_p50": (p50 - d50) * 1e3 if p50 is not None and d50 is not None else None,
        "added_latency_ms_p99": (p99 - d99) * 1e3 if p99 is not None and d99 is not None else None,
        "keyframe_requests_in_window": keyframe_requests_in_window,
        "generator_cpu_cores": own_cpu / dt,
        # Runnable but not running (other processes on the same core): contention, not cost.
        "sfu_cpu_wait_fraction": (after.sfu_wait - before.sfu_wait) / dt,
        "generator_cpu_wait_fraction": (after.own_wait - before.own_wait) / dt,
        "generator_lateness_ms_p99": late99 * 1e3,
        "generator_send_failures": pacer.send_failures,
        # Datagrams the kernel dropped for a full receive buffer during the window (whole
        # network namespace: other processes' traffic counts too).
        "udp_receive_buffer_drops": after.udp.get("RcvbufErrors", 0) - before.udp.get("RcvbufErrors", 0),
        "held": video_ok and audio_ok and sfu_cores < FULL_RATE,
        # The generator fell behind its own schedule, or had no CPU left: a failure at this S
        # may be the generator's, not the SFU's.
        "limited_by": _limited_by(late99, own_cpu / dt, (after.sfu_wait - before.sfu_wait) / dt),
    }


# The generator is behind when its p99 lateness against the schedule exceeds this, or when it
# used this much of its core; the SFU's core is contended when the SFU waited this share of
# the window for it.
GENERATOR_LATE_S = 0.020
GENERATOR_BUSY = 0.9
CONTENDED = 0.25


def _limited_by(lateness_p99: float, generator_cores: float, sfu_wait_fraction: float) -> str | None:
    if lateness_p99 > GENERATOR_LATE_S or generator_cores > GENERATOR_BUSY:
        return "load generator"
    if sfu_wait_fraction > CONTENDED:
        return "contention"
    return None


def run_ours(fixture: MediaFixture, thumb: MediaFixture, sites: int, warmup: float, window: float,
             progress: Progress, cpu: int | None = 0, gallery: int = 6, audio_slots: int = 3,
             obey_layers: bool = True, compiled: bool = True) -> dict[str, Any]:
    """Synchronous wrapper (own event loop), like run_mediarelay and run_janus."""
    return asyncio.run(drive(fixture, thumb, sites, warmup, window, progress, cpu, gallery, audio_slots, obey_layers,
                             compiled))
