"""Benchmark of the SFU (issue 3): ``python -m bench.sfu [--quick] [--sites S] [--no-janus]``.

Progress on stderr, ONE JSON line on stdout.  Each server runs in its own process pinned to
core 0, the load generator in this process on core 1; server CPU is utime + stime from
/proc/<pid>/stat over a measured window after a warm-up.

* **Ours** (``bench._sfu_sites`` + ``bench._sfu_ours``): ``media.MediaService`` in a child
  process (no web layer: join_room, answer, trickled ICE candidates on 127.0.0.1), one meeting
  of 1 chair + S sites; every site publishes Opus + 640x360 30 fps VP8 + a 320x180 thumbnail
  layer (pre-encoded once, paced replay, PLI answered with a keyframe) and subscribes with the
  default slots (main, chair, 6 gallery, 3 audio, screen).  The load generator uses
  ``media.rtc_adapter``'s raw sender and non-decoding receive hook.  Reported:
  ``sfu_cpu_us_per_packet`` (SFU CPU per forwarded RTP packet, i.e. per packet received by a
  subscriber), ``forwarded_packets_per_s``, ``added_latency_ms_p50/p99`` (send-to-receive
  through the SFU minus a direct PacketPeer-to-PacketPeer loopback path, same run; packets
  carry a tag at the end of their payload), and ``max_sites_one_core``: S stepped up (x1.5) then
  bisected; a size holds when every subscribed video stream gets >= 95% of 30 fps, every
  audio slot >= 95% of 50 packets/s, and the SFU stays under 0.95 core.  The search stops
  where the measurement itself is the limit, and ``max_sites_limited_by`` says which: "load
  generator" (one core too; it fell behind its schedule) or "contention" (the machine is
  shared: the SFU waited > 25% of the window for its core, ``sfu_cpu_wait_fraction``).
  Sites obey the SFU's ``layers`` events as browsers do (a camera or thumbnail layer nobody
  receives is paused): ``published_packets_per_s`` is what the SFU received, ``paused_layers``
  how many layers were paused.  Full runs also measure the same meeting with every layer
  flowing (``--all-layers`` makes that the main run): the ``*_all_layers`` fields.  Every run
  (quick too) measures the main meeting again with ``media._fastpath`` switched off in the SFU
  process (``LIENTHONG_PURE_PYTHON=1``: receive, fan-out, rewriters and send all in Python, as on
  a machine without a C compiler): ``sfu_cpu_us_per_packet_python_send`` and
  ``python_send_cpu_ratio`` (Python / C, same run; the names are from when only the send was
  compiled); ``compiled_send`` says whether the C part was built at all (false: every figure is
  the Python path's).
* **MediaRelay** (``bench._sfu_mediarelay``): aiortc's stock relay, a smaller job (1 publisher
  x N subscribers, it decodes once and encodes per subscriber).  ``mediarelay_cpu_ratio`` =
  its CPU per forwarded 640x360 stream / ours for one such stream (our µs per packet x that
  stream's packets/s).
* **Janus** (``bench._sfu_janus``, when installed and runnable: root for a network
  namespace): the same meeting (1 chair + S sites; 6 sites in quick runs), each site one full
  video track (Janus has no thumbnail layer) subscribed in main + chair + gallery slots.
  ``janus_cpu_ratio`` = ours / Janus CPU per forwarded packet, else null and ``janus_skipped``
  says why.  Full runs measure the main meeting and Janus's again, alternately
  (``--janus-pairs``, default 3 pairs with the first runs): ``janus_cpu_ratio`` is then the
  median of the pairs' ratios, ``janus_cpu_ratio_pairs`` lists [ours µs, Janus µs, ratio].
  Janus runs with its default ``event_loops`` (a media loop thread per handle) unless
  ``--janus-event-loops N`` shares N loops (``params.janus_event_loops``).
* **Reference** (full runs only, ``bench._sfu_reference``): a lean SRTP forwarder without ICE,
  DTLS or RTCP; the per-packet floor, not the SFU; ``reference_*`` fields.  Where
  ``media._fastpath`` is built, again with its per-subscriber step in C (one call per outgoing
  packet: little besides the kernel's UDP work and SRTP, which every forwarder pays):
  ``reference_compiled_us_per_packet``, ``reference_compiled_janus_ratio`` (that floor / Janus,
  same run) and ``sfu_over_reference_compiled``.  Where a C compiler and libsrtp2's headers
  exist (``make bench-deps``), the same forwarder with nothing in Python
  (``bench/_sfu_floor.c``: recvmmsg, libsrtp, then ``sendto`` per packet, and again with one
  ``sendmmsg`` per subscriber per wake-up): ``reference_c_us_per_packet``,
  ``reference_c_janus_ratio``, ``reference_c_sendmmsg_*``, ``sfu_over_reference_c``; else
  ``reference_c_skipped`` says why.

``--quick`` (under a minute): shorter windows, no size search (``max_sites_one_core`` is the
measured S when it held, a lower bound: ``max_sites_one_core_searched`` false), smaller Janus,
no reference forwarder.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import multiprocessing
import os
import statistics
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
from pylibsrtp import Policy

from bench import _sfu_fixtures as fixtures
from bench import _sfu_janus, _sfu_mediarelay, _sfu_reference
from bench._sfu_load import ReceiveStats, SiteReplay, Trial, largest_held, next_site_count, percentile
from bench._sfu_sites import FULL_RATE, run_ours

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
    protect = _sfu_reference.session(Policy.SSRC_ANY_OUTBOUND).protect
    protect_direct = _sfu_reference.session(Policy.SSRC_ANY_OUTBOUND).protect
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


def run_reference(fixture: fixtures.MediaFixture, publishers: int, subscribers: int, warmup: float, window: float,
                  compiled: bool = False, native: str | None = None) -> dict[str, Any]:
    """Lean forwarder in its own process: each source packet to every subscriber (``compiled``:
    its per-subscriber step through ``media._fastpath``; ``native``: the all-C floor
    ``bench/_sfu_floor.c`` built by :func:`_sfu_reference.native_binary`, in that send mode)."""

    async def go() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        sent: dict[int, list[float]] = {}
        # Forwarded seq starts at 0 per (source, subscriber): index into the source's send list.
        subs = [_Counter(sent, lambda s, i=i: s ^ (i + 1)) for i in range(subscribers)]
        transports = [(await loop.create_datagram_endpoint(lambda c=c: c, local_addr=("127.0.0.1", 0)))[0] for c in subs]  # type: ignore[misc]
        direct = _Counter(sent, lambda s: s)
        addrs = [t.get_extra_info("sockname") for t in transports]
        if native:
            return await _run_native(native, addrs, subs, direct, transports)
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_sfu_reference.run, args=(child, addrs, 0, compiled), daemon=True)
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

    async def _run_native(mode: str, addrs: list[tuple[str, int]], subs: list[_Counter], direct: _Counter,
                          transports: list[Any]) -> dict[str, Any]:
        binary = _sfu_reference.native_binary()
        proc = await asyncio.create_subprocess_exec(str(binary), mode, *(f"{h}:{p}" for h, p in addrs),
                                                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        try:
            if hasattr(os, "sched_setaffinity"):
                os.sched_setaffinity(proc.pid, {0})
            assert proc.stdout is not None
            port = int(await asyncio.wait_for(proc.stdout.readline(), 10))
            return await _measure_reference((proc.pid, port), fixture, publishers, warmup, window, subs, direct)
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
            for t in transports:
                t.close()

    return asyncio.run(go())


def sfu_available() -> str | None:
    """None when media/ offers what the benchmark needs (cheap check, nothing started)."""
    for module in ("media.rtc_adapter", "media.forwarder"):
        if importlib.util.find_spec(module) is None:
            return f"{module.replace('.', '/')}.py not present yet"
    import media

    if not hasattr(media.MediaService, "join_room"):
        return "media.MediaService has no join_room"
    return None


def search_max_sites(first: dict[str, Any], run: Any, budget_s: float) -> tuple[list[Trial], list[dict[str, Any]]]:
    """Step S from the main measurement (``first``) with ``next_site_count`` until the search
    ends or ``budget_s`` is spent; ``run(S)`` measures one size."""
    trials = [Trial(first["sites"], first["held"], first["limited_by"])]
    results = [first]
    deadline = time.monotonic() + budget_s
    while time.monotonic() < deadline:
        nxt = next_site_count(trials)
        if nxt is None:
            break
        try:
            r = run(nxt)
        except Exception as exc:  # a size that cannot even connect counts as not held
            progress(f"ours: S={nxt}: failed: {type(exc).__name__}: {exc}")
            trials.append(Trial(nxt, False))
            continue
        progress(f"ours: S={nxt}: {_brief(r)}")
        trials.append(Trial(nxt, r["held"], r["limited_by"]))
        results.append(r)
    return trials, results


def _brief(r: dict[str, Any]) -> str:
    def f(v: Any, digits: int = 2) -> Any:
        return round(v, digits) if isinstance(v, float) else v

    keys = ("held", "limited_by", "sfu_cpu_cores", "sfu_cpu_us_per_packet", "forwarded_packets_per_s",
            "video_streams", "video_fps_min", "audio_pps_min", "added_latency_ms_p50", "added_latency_ms_p99",
            "generator_cpu_cores", "generator_lateness_ms_p99", "sfu_cpu_wait_fraction", "generator_cpu_wait_fraction",
            "keyframe_requests_in_window", "untagged_packets", "udp_receive_buffer_drops",
            "published_packets_per_s", "paused_layers", "sfu_reported")
    return " ".join(f"{k}={f(r.get(k))}" for k in keys)


def _r(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _estimate_max_sites(ours: dict[str, Any] | None) -> int | None:
    """The S at which the SFU would reach 0.95 core if every slot were fed at its nominal rate:
    the slots per subscriber are fixed, so its load is linear in participants.  Uses the
    measured CPU per forwarded packet (pessimistic when that run was contended) and the
    nominal packet rate per participant (not the delivered one, which a starved SFU lowers)."""
    if not ours or not ours.get("sfu_cpu_us_per_packet") or not ours.get("expected_packets_per_s"):
        return None
    per_participant = ours["sfu_cpu_us_per_packet"] * 1e-6 * ours["expected_packets_per_s"] / (ours["sites"] + 1)
    return int(FULL_RATE / per_participant) - 1


def assemble(ours: dict[str, Any] | None, sfu_skipped: str | None, trials: list[Trial], searched: bool,
             relay: dict[str, Any], video_packets_per_s: float, janus: dict[str, Any] | None,
             janus_skipped: str | None, ref: dict[str, Any] | None, params: dict[str, Any],
             ours_all: dict[str, Any] | None = None, ours_python: dict[str, Any] | None = None,
             compiled: bool | None = None, janus_pairs: list[tuple[float, float]] | None = None) -> dict[str, Any]:
    """The benchmark's one JSON object (pure: testable without running anything).
    ``janus_pairs``: (ours, Janus) µs per packet of meetings measured one right after the
    other; with more than one pair, ``janus_cpu_ratio`` is the median of their ratios."""
    us = ours.get("sfu_cpu_us_per_packet") if ours else None
    pairs = [(o, j) for o, j in janus_pairs or () if o and j]
    pair_ratios = [o / j for o, j in pairs]
    # Ours per forwarded 640x360 stream: our CPU per packet x that stream's packet rate.
    ours_cores_per_stream = us * 1e-6 * video_packets_per_s if us else None
    limited = sorted((t.sites, t.limited_by) for t in trials if t.limited_by)
    held = largest_held(trials)
    result: dict[str, Any] = {
        "sfu_cpu_us_per_packet": _r(us, 2),
        "forwarded_packets_per_s": _r(ours["forwarded_packets_per_s"], 0) if ours else None,
        # S = sites besides the chair; the measured meeting always has the chair too.
        "max_sites_one_core": held,
        "max_participants_one_core": held + 1 if held is not None else None,
        # A model, not a measurement (see _estimate_max_sites).
        "max_sites_one_core_estimate": _estimate_max_sites(ours),
        "added_latency_ms_p50": _r(ours.get("added_latency_ms_p50"), 3) if ours else None,
        "added_latency_ms_p99": _r(ours.get("added_latency_ms_p99"), 3) if ours else None,
        "mediarelay_cpu_ratio": _r(relay["cpu_cores_per_stream"] / ours_cores_per_stream, 1) if ours_cores_per_stream else None,
        "janus_cpu_ratio": (_r(statistics.median(pair_ratios), 3) if len(pair_ratios) > 1 else
                            _r(us / janus["cpu_us_per_packet"], 3) if us and janus and janus.get("cpu_us_per_packet") else None),
        "sfu_skipped": sfu_skipped,
        "janus_skipped": janus_skipped,
    }
    if ours:
        result.update({
            "sfu_cpu_cores": _r(ours["sfu_cpu_cores"], 3),
            "published_packets_per_s": _r(ours.get("published_packets_per_s"), 0),
            "paused_layers": ours.get("paused_layers"),
            "sites": ours["sites"],
            "held_at_sites": ours["held"],
            "limited_by": ours["limited_by"],
            "delivered_fraction": _r(ours["forwarded_packets_per_s"] / ours["expected_packets_per_s"], 3)
            if ours.get("expected_packets_per_s") else None,
            "video_fps_min": _r(ours["video_fps_min"], 1),
            "video_fps_mean": _r(ours["video_fps_mean"], 1),
            "video_streams": ours["video_streams"],
            "audio_streams": ours["audio_streams"],
            "audio_pps_min": _r(ours["audio_pps_min"], 1),
            "latency_ms_p50": _r(ours["latency_ms_p50"], 3),
            "latency_ms_p99": _r(ours["latency_ms_p99"], 3),
            "direct_latency_ms_p50": _r(ours["direct_latency_ms_p50"], 3),
            "direct_latency_ms_p99": _r(ours["direct_latency_ms_p99"], 3),
            "untagged_packets": ours["untagged_packets"],
            "sfu_reported": ours["sfu_reported"],
            "generator_cpu_cores": _r(ours["generator_cpu_cores"], 3),
            "generator_lateness_ms_p99": _r(ours["generator_lateness_ms_p99"], 2),
            # Share of the window the SFU / generator was runnable but another process had its
            # core (the machine is shared): high values make every figure above pessimistic.
            "sfu_cpu_wait_fraction": _r(ours.get("sfu_cpu_wait_fraction"), 3),
            "udp_receive_buffer_drops": ours.get("udp_receive_buffer_drops"),
            "generator_cpu_wait_fraction": _r(ours.get("generator_cpu_wait_fraction"), 3),
        })
    if ours_all:
        us_all = ours_all.get("sfu_cpu_us_per_packet")
        result["sfu_cpu_us_per_packet_all_layers"] = _r(us_all, 2)
        result["sfu_cpu_cores_all_layers"] = _r(ours_all["sfu_cpu_cores"], 3)
        result["published_packets_per_s_all_layers"] = _r(ours_all.get("published_packets_per_s"), 0)
        result["janus_cpu_ratio_all_layers"] = (_r(us_all / janus["cpu_us_per_packet"], 3)
                                                if us_all and janus and janus.get("cpu_us_per_packet") else None)
    # media._fastpath (the packet path in C) built and used in the runs above; and the
    # main meeting again all in Python (no media._fastpath), same run: what the C part saves
    result["compiled_send"] = compiled
    if ours_python:
        us_py = ours_python.get("sfu_cpu_us_per_packet")
        result["sfu_cpu_us_per_packet_python_send"] = _r(us_py, 2)
        result["python_send_cpu_ratio"] = _r(us_py / us, 3) if us and us_py else None
        result["janus_cpu_ratio_python_send"] = (_r(us_py / janus["cpu_us_per_packet"], 3)
                                                 if us_py and janus and janus.get("cpu_us_per_packet") else None)
    result["max_sites_one_core_searched"] = searched
    result["max_sites_trials"] = [[t.sites, t.held, t.limited_by] for t in trials]
    result["max_sites_limited_by"] = (
        f"{limited[0][1]} at S={limited[0][0]}" if limited and (held is None or limited[0][0] > held) else None)
    result["mediarelay_cpu_cores_per_stream"] = _r(relay["cpu_cores_per_stream"], 4)
    result["mediarelay_received_fps_per_stream"] = _r(relay["received_fps_per_stream"], 1)
    if janus:
        result["janus_cpu_us_per_packet"] = _r(janus["cpu_us_per_packet"], 2)
        if len(pair_ratios) > 1:
            result["janus_cpu_ratio_pairs"] = [[_r(o, 2), _r(j, 2), _r(o / j, 3)] for o, j in pairs]
        result["janus_forwarded_packets_per_s"] = _r(janus["forwarded_packets_per_s"], 0)
        result["janus_received_fps_per_video_stream"] = _r(janus.get("received_fps_per_video_stream"), 1)
        result["janus_sites"] = janus.get("sites")
    if ref:
        # Not the SFU: the lean SRTP forwarder floor (bench/_sfu_reference.py), same run.
        result["reference_forwarder_us_per_packet"] = _r(ref["cpu_us_per_packet"], 2)
        result["reference_added_latency_ms_p50"] = _r(ref["latency_ms_p50"] - ref["direct_latency_ms_p50"], 3)
        result["reference_added_latency_ms_p99"] = _r(ref["latency_ms_p99"] - ref["direct_latency_ms_p99"], 3)
        janus_us = statistics.median([j for _, j in pairs]) if pairs else \
            janus.get("cpu_us_per_packet") if janus else None
        floor = ref.get("compiled")
        if floor:
            # receive + unprotect once, then one C call per outgoing packet (header, protect,
            # sendto): little besides the kernel's UDP work and SRTP, which every forwarder pays
            us_floor = floor["cpu_us_per_packet"]
            result["reference_compiled_us_per_packet"] = _r(us_floor, 2)
            result["reference_compiled_janus_ratio"] = _r(us_floor / janus_us, 3) if janus_us else None
            result["sfu_over_reference_compiled"] = _r(us / us_floor, 3) if us and us_floor else None
        # the same forwarder with nothing in Python (bench/_sfu_floor.c): sendto() per packet as
        # the SFU's sender does, and sendmmsg() per subscriber per wake-up, the least a kernel
        # UDP forwarder can spend.  Its ratio to Janus says whether "half of Janus" is reachable.
        for mode, name in (("sendto", "reference_c"), ("sendmmsg", "reference_c_sendmmsg")):
            native = (ref.get("native") or {}).get(mode)
            if native:
                us_c = native["cpu_us_per_packet"]
                result[f"{name}_us_per_packet"] = _r(us_c, 2)
                result[f"{name}_janus_ratio"] = _r(us_c / janus_us, 3) if janus_us else None
                result[f"sfu_over_{name}"] = _r(us / us_c, 3) if us and us_c else None
        if ref.get("native_skipped"):
            result["reference_c_skipped"] = ref["native_skipped"]
    result["params"] = params
    return result


def alternate_with_janus(args: argparse.Namespace, ours: dict[str, Any] | None, janus: dict[str, Any] | None,
                         fixture: fixtures.MediaFixture, thumb: fixtures.MediaFixture, janus_sites: int, warmup: float,
                         window: float, peer_warmup: float, peer_window: float,
                         server_cpu: int | None) -> list[tuple[float, float]] | None:
    """The machine is shared and its speed drifts over minutes: measure the main meeting and
    Janus's again, one right after the other, ``args.janus_pairs`` pairs in all (the first pair
    is the runs already made)."""
    if not ours or not janus or not ours.get("sfu_cpu_us_per_packet") or not janus.get("cpu_us_per_packet"):
        return None
    pairs = [(ours["sfu_cpu_us_per_packet"], janus["cpu_us_per_packet"])]
    for k in range(2, args.janus_pairs + 1):
        progress(f"alternating with Janus, pair {k}/{args.janus_pairs}: ours")
        try:
            again = run_ours(fixture, thumb, args.sites, warmup, window, progress, server_cpu,
                             obey_layers=not args.all_layers)
            progress(f"alternating with Janus, pair {k}/{args.janus_pairs}: Janus")
            other = _sfu_janus.run_janus(fixture, sites=janus_sites, warmup=peer_warmup, window=peer_window,
                                         progress=progress, cpu=server_cpu, event_loops=args.janus_event_loops)
        except Exception as exc:   # the first pair stands; say why there are no more
            progress(f"alternating with Janus: stopped after {len(pairs)} pair(s): {type(exc).__name__}: {exc}")
            break
        pairs.append((again["sfu_cpu_us_per_packet"], other["cpu_us_per_packet"]))
        progress(f"alternating with Janus, pair {k}: ours {pairs[-1][0]:.2f} us, Janus {pairs[-1][1]:.2f} us, "
                 f"ratio {pairs[-1][0] / pairs[-1][1]:.3f}")
    return pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sfu", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced run, under a minute")
    parser.add_argument("--sites", type=int, default=34, help="sites besides the chair (default 34)")
    parser.add_argument("--no-janus", action="store_true", help="do not measure Janus VideoRoom even if installed")
    parser.add_argument("--no-search", action="store_true", help="measure S only; no search for the largest S")
    parser.add_argument("--janus-pairs", type=int, default=3,
                        help="full runs: measure ours and Janus alternately this many times (median ratio; default 3)")
    parser.add_argument("--janus-event-loops", type=int, default=0, metavar="N",
                        help="Janus's event_loops setting: 0 (its default) gives every handle its own media loop "
                             "thread; N > 0 shares N loops, 7-17%% less CPU per packet here (2026-12-06)")
    parser.add_argument("--all-layers", action="store_true",
                        help="sites ignore the SFU's requests to pause unwatched layers (every layer flows)")
    args = parser.parse_args(argv)

    two_cores = (os.cpu_count() or 1) > 1 and hasattr(os, "sched_setaffinity")
    if two_cores:
        os.sched_setaffinity(0, {1})  # load generator on core 1; servers on core 0
    server_cpu = 0 if two_cores else None
    quick = args.quick
    warmup, window = (2.0, 4.0) if quick else (5.0, 15.0)
    peer_warmup, peer_window = (2.0, 3.0) if quick else (warmup, window)  # MediaRelay, Janus
    step_warmup, step_window = 3.0, 6.0
    relay_pubs, relay_subs = (1, 3) if quick else (1, 6)
    # Janus under the same meeting as ours (its load generator keeps up: ~0.2 core at S=34)
    janus_sites = min(args.sites, 6) if quick else args.sites
    params: dict[str, Any] = {
        "quick": quick, "sites": args.sites, "cpu_count": os.cpu_count(), "warmup_s": warmup, "window_s": window,
        "peer_warmup_s": peer_warmup, "peer_window_s": peer_window,
        "step_warmup_s": step_warmup, "step_window_s": step_window, "full_rate_fraction": FULL_RATE,
        "mediarelay_publishers": relay_pubs, "mediarelay_subscribers_per_publisher": relay_subs,
        "mediarelay_ratio_basis": "per 640x360 30 fps stream: ours = us/packet x its packets/s",
    }
    started = time.monotonic()

    with tempfile.TemporaryDirectory(prefix="bench-sfu-") as tmp:
        t = time.monotonic()
        seconds = 2.0 if quick else 3.0
        fixture = fixtures.load_or_build(Path(tmp), seconds=seconds)
        thumb = fixtures.load_or_build(Path(tmp), seconds, fixtures.THUMB_WIDTH, fixtures.THUMB_HEIGHT, fixtures.THUMB_BITRATE)
        progress(
            f"fixtures: {len(fixture.video_frames)} VP8 frames ({fixture.video_packets_per_s:.0f} pkt/s, "
            f"{fixture.video_bitrate_bps / 1000:.0f} kbps) + thumbnail ({thumb.video_packets_per_s:.0f} pkt/s, "
            f"{thumb.video_bitrate_bps / 1000:.0f} kbps), {len(fixture.audio_payloads)} Opus packets, "
            f"{time.monotonic() - t:.1f}s"
        )
        params.update(video_packets_per_s=round(fixture.video_packets_per_s, 1), video_kbps=round(fixture.video_bitrate_bps / 1000),
                      thumb_packets_per_s=round(thumb.video_packets_per_s, 1), thumb_kbps=round(thumb.video_bitrate_bps / 1000))

        progress(f"MediaRelay: {relay_pubs} publisher(s) x {relay_subs} subscriber(s), 640x360@30")
        relay = run_mediarelay(relay_pubs, relay_subs, peer_warmup, peer_window)
        progress(f"MediaRelay: {relay}")

        ours: dict[str, Any] | None = None
        ours_all: dict[str, Any] | None = None
        ours_python: dict[str, Any] | None = None
        trials: list[Trial] = []
        searched = False
        sfu_skipped = sfu_available()
        compiled = importlib.util.find_spec("media._fastpath") is not None if sfu_skipped is None else None
        if sfu_skipped is None:
            progress(f"ours: 1 chair + {args.sites} sites")
            try:
                ours = run_ours(fixture, thumb, args.sites, warmup, window, progress, server_cpu,
                                obey_layers=not args.all_layers)
            except Exception as exc:
                sfu_skipped = f"the SFU run failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                progress(f"ours: {sfu_skipped}")
        if ours is not None:
            progress(f"ours: S={args.sites}: {_brief(ours)}")
            trials = [Trial(ours["sites"], ours["held"], ours["limited_by"])]
            if not quick and not args.no_search:
                trials, _ = search_max_sites(
                    ours, lambda s: run_ours(fixture, thumb, s, step_warmup, step_window, progress, server_cpu,
                                             obey_layers=not args.all_layers), budget_s=300)
                searched = True
            if not quick and not args.all_layers:
                progress(f"ours, every layer flowing: 1 chair + {args.sites} sites")
                ours_all = run_ours(fixture, thumb, args.sites, warmup, window, progress, server_cpu, obey_layers=False)
                progress(f"ours, every layer flowing: {_brief(ours_all)}")
            if compiled:
                progress(f"ours, all in Python (no media._fastpath): 1 chair + {args.sites} sites")
                ours_python = run_ours(fixture, thumb, args.sites, warmup, window, progress, server_cpu,
                                       obey_layers=not args.all_layers, compiled=False)
                progress(f"ours, all in Python: {_brief(ours_python)}")
            else:
                progress("ours: media._fastpath is not built (no C compiler at install?): the send path ran in Python")
        else:
            progress(f"ours: skipped: {sfu_skipped}")

        janus: dict[str, Any] | None = None
        janus_skipped = "--no-janus" if args.no_janus else _sfu_janus.detect()
        if janus_skipped is None:
            progress(f"Janus: 1 chair + {janus_sites} sites")
            try:
                janus = _sfu_janus.run_janus(fixture, sites=janus_sites, warmup=peer_warmup, window=peer_window, progress=progress,
                                             cpu=server_cpu, event_loops=args.janus_event_loops)
                progress(f"Janus: {janus}")
            except _sfu_janus.JanusUnavailable as exc:
                janus_skipped = str(exc)
        if janus_skipped:
            progress(f"Janus: skipped: {janus_skipped}")
        janus_pairs = alternate_with_janus(args, ours, janus, fixture, thumb, janus_sites, warmup, window, peer_warmup,
                                           peer_window, server_cpu) if not quick else None

        ref: dict[str, Any] | None = None
        if not quick:
            # each packet to 8 subscribers: the meeting's own fan-out (forwarded / published
            # packets, ~8.2 at S=34 with the default slots), so its per-packet floor compares
            ref_pubs, ref_subs = 8, 8
            params.update(reference_publishers=ref_pubs, reference_subscribers=ref_subs)
            progress(f"reference lean forwarder: {ref_pubs} publisher(s) x {ref_subs} subscriber(s)")
            ref = run_reference(fixture, ref_pubs, ref_subs, min(warmup, 2.0), window)
            progress(f"reference lean forwarder: {ref}")
            if _sfu_reference.compiled_available():
                progress("reference lean forwarder, per-subscriber step compiled (media._fastpath)")
                ref["compiled"] = run_reference(fixture, ref_pubs, ref_subs, min(warmup, 2.0), window, compiled=True)
                progress(f"reference lean forwarder, compiled: {ref['compiled']}")
            ref["native_skipped"] = _sfu_reference.native_skipped()
            if ref["native_skipped"] is None:
                ref["native"] = {}
                for mode in ("sendto", "sendmmsg"):
                    progress(f"reference lean forwarder, all in C (bench/_sfu_floor.c), {mode}")
                    try:
                        ref["native"][mode] = run_reference(fixture, ref_pubs, ref_subs, min(warmup, 2.0), window, native=mode)
                    except Exception as exc:   # a measuring stick, not the SFU: say so and go on
                        ref["native_skipped"] = f"{mode}: {type(exc).__name__}: {exc}"
                        break
                    progress(f"reference lean forwarder, all in C, {mode}: {ref['native'][mode]}")
            else:
                progress(f"reference lean forwarder, all in C: skipped: {ref['native_skipped']}")

    params["janus_sites"] = janus_sites if janus else None
    params["janus_event_loops"] = args.janus_event_loops if janus else None
    params["elapsed_s"] = round(time.monotonic() - started, 1)
    result = assemble(ours, sfu_skipped, trials, searched, relay, fixture.video_packets_per_s, janus, janus_skipped, ref, params,
                      ours_all, ours_python, compiled, janus_pairs)
    print(json.dumps(result, ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
