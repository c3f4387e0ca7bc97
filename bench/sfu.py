"""Benchmark of the SFU (issue 3): ``python -m bench.sfu [--quick] [--sites S] [--with-janus]``.

Progress on stderr, ONE JSON line on stdout.  Peers measured in the same run: aiortc's stock
``MediaRelay`` (always) and Janus VideoRoom (when installed).  Each server runs in its own
process, pinned to one core, the load generator to the other; CPU is read from
/proc/<pid>/stat (utime + stime) over a measured window after a warm-up.

State of this file: media fixtures (``bench._sfu_fixtures``), paced replay and receive stats
(``bench._sfu_load``), the MediaRelay baseline and a reference lean SRTP forwarder
(``bench._sfu_reference``: the per-packet floor, not the SFU) work.  The SFU measurement needs,
from ``media``: a way to start the SFU in a child process with ICE candidates on a chosen
address, to join a participant (room, site, role) and exchange SDP without the web layer, and
from ``media/rtc_adapter.py`` a sender that sends pre-built RTP packets and a receiver that
does not decode (so the load generator stays cheap), plus the forwarded-to-source mapping (or
slot events) so latency can be looked up by source SSRC + seq.  Until then the SFU fields are
null and ``sfu_skipped`` says why.  Janus: detected only (``janus_skipped``); the netns +
VideoRoom driver is not written yet.
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import importlib.util
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import av
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import VideoStreamTrack

from bench import _sfu_fixtures as fixtures
from bench import _sfu_mediarelay, _sfu_reference
from bench._sfu_load import ReceiveStats, SiteReplay, percentile

CLK_TCK = os.sysconf("SC_CLK_TCK")


def progress(message: str) -> None:
    print(f"[bench.sfu {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class PatternTrack(VideoStreamTrack):
    """The fixture's synthetic pattern at 30 fps; aiortc encodes it in the load generator."""

    def __init__(self, width: int, height: int) -> None:
        super().__init__()
        self._frames = [
            av.VideoFrame.from_ndarray(fixtures._pattern(width, height, i), format="rgb24").reformat(format="yuv420p")
            for i in range(30)
        ]
        self._i = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = self._frames[self._i % len(self._frames)]
        self._i += 1
        frame.pts = pts
        frame.time_base = time_base
        return frame


@dataclass
class FrameCounter:
    frames: int = 0

    async def consume(self, track: MediaStreamTrack) -> None:
        while True:
            await track.recv()
            self.frames += 1


async def _negotiate(session: aiohttp.ClientSession, url: str, pc: RTCPeerConnection) -> None:
    await pc.setLocalDescription(await pc.createOffer())
    async with session.post(url, json={"sdp": pc.localDescription.sdp, "type": pc.localDescription.type}) as r:
        answer = await r.json()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))


async def _measure_mediarelay(port: int, pid: int, publishers: int, subs_per_pub: int, warmup: float, window: float) -> dict[str, Any]:
    base = f"http://127.0.0.1:{port}"
    pcs: list[RTCPeerConnection] = []
    counters: list[FrameCounter] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(publishers):
                pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
                pcs.append(pc)
                pc.addTrack(PatternTrack(640, 360))
                await _negotiate(session, f"{base}/publish", pc)
            for n in range(publishers):
                for _ in range(subs_per_pub):
                    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
                    pcs.append(pc)
                    pc.addTransceiver("video", direction="recvonly")
                    counter = FrameCounter()
                    counters.append(counter)

                    @pc.on("track")
                    def on_track(track: MediaStreamTrack, counter: FrameCounter = counter) -> None:
                        tasks.append(asyncio.create_task(counter.consume(track)))

                    await _negotiate(session, f"{base}/subscribe/{n}", pc)
        await asyncio.sleep(warmup)  # let encoders ramp up (bench only: steady state wanted)
        cpu0, frames0, t0 = process_cpu_seconds(pid), sum(c.frames for c in counters), time.monotonic()
        await asyncio.sleep(window)
        cpu1, frames1, t1 = process_cpu_seconds(pid), sum(c.frames for c in counters), time.monotonic()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for pc in pcs:
            await pc.close()
    streams = publishers * subs_per_pub
    cores = (cpu1 - cpu0) / (t1 - t0)
    return {
        "streams": streams,
        "cpu_cores": cores,
        "cpu_cores_per_stream": cores / streams,
        "received_fps_per_stream": (frames1 - frames0) / (t1 - t0) / streams,
    }


def run_mediarelay(publishers: int, subs_per_pub: int, warmup: float, window: float) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_sfu_mediarelay.run, args=(child, 0), daemon=True)
    proc.start()
    try:
        port = parent.recv()
        return asyncio.run(_measure_mediarelay(port, proc.pid or 0, publishers, subs_per_pub, warmup, window))
    finally:
        parent.send("stop")
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join()


class _Counter(asyncio.DatagramProtocol):
    """A subscriber socket: reads the clear RTP header of SRTP packets, never decrypts."""

    def __init__(self, sent: dict[int, list[float]], ssrc_of: Any) -> None:
        self.stats = ReceiveStats()
        self.sent = sent
        self.ssrc_of = ssrc_of  # forwarded SSRC -> source SSRC

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        now = time.perf_counter()
        seq = int.from_bytes(data[2:4], "big")
        times = self.sent.get(self.ssrc_of(int.from_bytes(data[8:12], "big")))
        self.stats.record(data, now, times[seq] if times is not None and seq < len(times) else None)


async def _measure_reference(pid_port: Any, fixture: fixtures.MediaFixture, publishers: int, warmup: float, window: float, subs: list[_Counter], direct: _Counter) -> dict[str, Any]:
    pid, port = pid_port
    loop = asyncio.get_running_loop()
    out, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
    direct_tr, _ = await loop.create_datagram_endpoint(lambda: direct, local_addr=("127.0.0.1", 0))
    direct_addr = direct_tr.get_extra_info("sockname")
    protect = _sfu_reference.session(_sfu_reference.Policy.SSRC_ANY_OUTBOUND).protect
    protect_direct = _sfu_reference.session(_sfu_reference.Policy.SSRC_ANY_OUTBOUND).protect
    replays = [SiteReplay(fixture, site=n, video_ssrc=1000 + 2 * n, audio_ssrc=1001 + 2 * n) for n in range(publishers)]
    sent = direct.sent  # shared table: source SSRC -> send time per original seq offset
    for r in replays:
        sent[r.video_ssrc], sent[r.audio_ssrc] = [], []
    base_seq = {r.video_ssrc: r._video_seq for r in replays} | {r.audio_ssrc: r._audio_seq for r in replays}
    start = time.perf_counter()
    measure_from = start + warmup
    cpu0 = counts0 = None
    try:
        while True:
            now = time.perf_counter()
            if cpu0 is None and now >= measure_from:
                cpu0, counts0, t0 = process_cpu_seconds(pid), sum(sum(c.stats.packets.values()) for c in subs), now
            if now >= measure_from + window:
                break
            for r in replays:
                for p in r.due(now - start):
                    t = time.perf_counter()
                    sent[p.ssrc].append(t)
                    out.sendto(protect(p.data), ("127.0.0.1", port))
                    # The same packet straight to a socket: the no-forwarder loopback baseline.
                    direct_tr.sendto(protect_direct(p.data[:2] + (p.seq - base_seq[p.ssrc]).to_bytes(2, "big") + p.data[4:]), direct_addr)
            await asyncio.sleep(0.002)
        cpu1, counts1, t1 = process_cpu_seconds(pid), sum(sum(c.stats.packets.values()) for c in subs), time.perf_counter()
        await asyncio.sleep(0.2)  # let the last forwarded packets arrive before reading latencies
    finally:
        out.close()
        direct_tr.close()
    assert cpu0 is not None and counts0 is not None
    forwarded = counts1 - counts0
    latencies = [x for c in subs for x in c.stats.latencies_s]
    return {
        "cpu_us_per_packet": (cpu1 - cpu0) / max(1, forwarded) * 1e6,
        "forwarded_packets_per_s": forwarded / (t1 - t0),
        "latency_ms_p50": (percentile(latencies, 50) or 0) * 1e3,
        "latency_ms_p99": (percentile(latencies, 99) or 0) * 1e3,
        "direct_latency_ms_p50": (percentile(direct.stats.latencies_s, 50) or 0) * 1e3,
        "direct_latency_ms_p99": (percentile(direct.stats.latencies_s, 99) or 0) * 1e3,
    }


def run_reference(fixture: fixtures.MediaFixture, publishers: int, subscribers: int, warmup: float, window: float) -> dict[str, Any]:
    """Lean forwarder in its own process: each source packet to every subscriber."""

    async def go() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        sent: dict[int, list[float]] = {}
        # Forwarded seq starts at 0 per (source, subscriber): index into the source's send list.
        subs = [_Counter(sent, lambda s, i=i: s ^ (i + 1)) for i in range(subscribers)]
        transports = [(await loop.create_datagram_endpoint(lambda c=c: c, local_addr=("127.0.0.1", 0)))[0] for c in subs]
        direct = _Counter(sent, lambda s: s)
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_sfu_reference.run, args=(child, [t.get_extra_info("sockname") for t in transports], 0), daemon=True)
        proc.start()
        try:
            port = await loop.run_in_executor(None, parent.recv)
            return await _measure_reference((proc.pid, port), fixture, publishers, warmup, window, subs, direct)
        finally:
            parent.send("stop")
            await loop.run_in_executor(None, proc.join, 10)
            if proc.is_alive():
                proc.kill()
                proc.join()
            for t in transports:
                t.close()

    return asyncio.run(go())


def sfu_available() -> str | None:
    """None when media/ offers what the benchmark needs, else why not."""
    if importlib.util.find_spec("media.rtc_adapter") is None:
        return "media/rtc_adapter.py not present yet (pre-built packet senders, non-decoding receivers)"
    import media

    if not hasattr(media, "MediaService") or getattr(media.MediaService.__doc__, "startswith", lambda _: False)("Placeholder"):
        return "media.MediaService is still the placeholder"
    return "SFU load scenario not wired into bench.sfu yet"


def janus_status(with_janus: bool) -> str | None:
    if shutil.which("janus") is None:
        if with_janus:
            return "janus not installed; --with-janus install not implemented yet"
        return "janus not installed (Debian package 'janus'); skipped"
    return "Janus VideoRoom scenario not wired into bench.sfu yet"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sfu", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced run, under a minute")
    parser.add_argument("--sites", type=int, default=34, help="sites besides the chair (default 34)")
    parser.add_argument("--with-janus", action="store_true", help="also measure Janus VideoRoom")
    args = parser.parse_args(argv)

    if hasattr(os, "sched_setaffinity") and os.cpu_count() and os.cpu_count() > 1:  # type: ignore[operator]
        os.sched_setaffinity(0, {1})  # load generator on core 1; servers on core 0
    params: dict[str, Any] = {"quick": args.quick, "sites": args.sites, "cpu_count": os.cpu_count()}
    warmup, window = (3.0, 5.0) if args.quick else (5.0, 15.0)
    # One publisher: the load generator (pinned to one core) encodes it and decodes every relayed
    # stream (aiortc receivers always decode); more would saturate it and lower the frame rate.
    relay_pubs, relay_subs = (1, 3) if args.quick else (1, 6)
    ref_pubs, ref_subs = (3, 10) if args.quick else (8, 20)
    params.update(window_s=window, warmup_s=warmup, mediarelay_publishers=relay_pubs, mediarelay_subscribers_per_publisher=relay_subs)

    with tempfile.TemporaryDirectory(prefix="bench-sfu-") as tmp:
        t = time.monotonic()
        fixture = fixtures.load_or_build(Path(tmp), seconds=3.0)
        progress(
            f"fixtures: {len(fixture.video_frames)} VP8 frames ({fixture.video_packets_per_s:.0f} pkt/s, "
            f"{fixture.video_bitrate_bps / 1000:.0f} kbps), {len(fixture.audio_payloads)} Opus packets, "
            f"{time.monotonic() - t:.1f}s"
        )
        params.update(reference_publishers=ref_pubs, reference_subscribers=ref_subs)
        params.update(video_packets_per_s=round(fixture.video_packets_per_s, 1), video_kbps=round(fixture.video_bitrate_bps / 1000))

        progress(f"MediaRelay: {relay_pubs} publisher(s) x {relay_subs} subscriber(s), 640x360@30")
        relay = run_mediarelay(relay_pubs, relay_subs, warmup, window)
        progress(f"MediaRelay: {relay}")

        progress(f"reference lean forwarder: {ref_pubs} publisher(s) x {ref_subs} subscriber(s)")
        ref = run_reference(fixture, ref_pubs, ref_subs, min(warmup, 2.0), window)
        progress(f"reference lean forwarder: {ref}")

    sfu_missing = sfu_available()
    progress(f"SFU: skipped: {sfu_missing}")
    janus_missing = janus_status(args.with_janus)
    progress(f"Janus: skipped: {janus_missing}")

    result: dict[str, Any] = {
        "sfu_cpu_us_per_packet": None,
        "forwarded_packets_per_s": None,
        "max_sites_one_core": None,
        "added_latency_ms_p50": None,
        "added_latency_ms_p99": None,
        "mediarelay_cpu_ratio": None,
        "janus_cpu_ratio": None,
        "mediarelay_cpu_cores_per_stream": round(relay["cpu_cores_per_stream"], 4),
        "mediarelay_received_fps_per_stream": round(relay["received_fps_per_stream"], 1),
        # Not the SFU: the lean SRTP forwarder floor (bench/_sfu_reference.py), same run.
        "reference_forwarder_us_per_packet": round(ref["cpu_us_per_packet"], 2),
        "reference_forwarded_packets_per_s": round(ref["forwarded_packets_per_s"]),
        "reference_added_latency_ms_p50": round(ref["latency_ms_p50"] - ref["direct_latency_ms_p50"], 3),
        "reference_added_latency_ms_p99": round(ref["latency_ms_p99"] - ref["direct_latency_ms_p99"], 3),
        "reference_mediarelay_cpu_ratio": round(
            relay["cpu_cores_per_stream"] / (ref["cpu_us_per_packet"] * 1e-6 * fixture.video_packets_per_s), 1
        ),
        "sfu_skipped": sfu_missing,
        "janus_skipped": janus_missing,
        "params": params,
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
