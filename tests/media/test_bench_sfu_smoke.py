"""Fast checks of the SFU benchmark's pieces that need no SFU: fixture encoding and packetization."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest
from aiortc.codecs.vpx import Vp8Decoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtp import RtpPacket, unpack_header_extensions

from bench import _sfu_fixtures as fixtures


def test_fixture_round_trip_decodes_and_caches(tmp_path: Path) -> None:
    fixture = fixtures.load_or_build(tmp_path, seconds=0.5, width=320, height=180)
    assert len(fixture.video_frames) == 15
    assert fixture.video_frames[0].keyframe
    assert not any(f.keyframe for f in fixture.video_frames[1:])
    assert len(fixture.audio_payloads) == 25
    # The payloads reassemble into frames that a real VP8 decoder accepts.
    decoder = Vp8Decoder()
    for i, frame in enumerate(fixture.video_frames[:3]):
        data = b"".join(fixtures_vp8_depacketize(p) for p in frame.payloads)
        decoded = decoder.decode(JitterFrame(data=data, timestamp=i * 3000))
        assert decoded and decoded[0].width == 320 and decoded[0].height == 180
    # Second call hits the cache and returns the same packets.
    again = fixtures.load_or_build(tmp_path, seconds=0.5, width=320, height=180)
    assert [f.payloads for f in again.video_frames] == [f.payloads for f in fixture.video_frames]


def fixtures_vp8_depacketize(payload: bytes) -> bytes:
    from aiortc.codecs.vpx import VpxPayloadDescriptor

    _, rest = VpxPayloadDescriptor.parse(payload)
    return rest


def test_rtp_header_and_audio_level_parse_with_aiortc() -> None:
    header = fixtures.build_rtp_header(111, True, 0x1_0005, 0x1_0000_0007, 0xDEADBEEF, extension=True)
    packet = RtpPacket.parse(header + fixtures.audio_level_extension(42) + b"opus")
    assert (packet.payload_type, packet.marker, packet.sequence_number, packet.timestamp, packet.ssrc) == (
        111,
        1,
        5,
        7,
        0xDEADBEEF,
    )
    assert packet.payload == b"opus"
    ext = fixtures.audio_level_extension(42)
    profile, words = struct.unpack("!HH", ext[:4])
    assert unpack_header_extensions(profile, ext[4 : 4 + 4 * words]) == [(fixtures.AUDIO_LEVEL_EXT_ID, bytes([0x80 | 42]))]


def test_site_audio_levels_make_a_meeting() -> None:
    level = fixtures.site_audio_level
    sites = range(35)
    assert all(0 <= level(s, n) <= 127 for s in sites for n in range(0, 3000, 37))
    # The floor holder is the loudest at every moment; about two others speak up at a time, and
    # who they are changes every 5 s.
    for n in (0, 100, 250, 1000, 2749):
        loudest = sorted(sites, key=lambda s: level(s, n))
        assert loudest[0] == fixtures.FLOOR_SITE
        speaking = {s for s in sites if level(s, n) < 50} - {fixtures.FLOOR_SITE}
        assert 1 <= len(speaking) <= 3
    assert {s for s in sites if level(s, 0) < 50} != {s for s in sites if level(s, 250) < 50}


def test_replay_paces_and_keeps_sequence_continuous_across_loops(tmp_path: Path) -> None:
    from bench._sfu_load import ReceiveStats, SiteReplay, percentile

    fixture = fixtures.load_or_build(tmp_path, seconds=0.2, width=160, height=96)  # 6 frames, 10 audio
    replay = SiteReplay(fixture, site=3, video_ssrc=11, audio_ssrc=12)
    first = replay.due(0.0)
    assert {p.ssrc for p in first} == {11, 12}  # frame 0 and audio packet 0 are due at once
    assert replay.due(0.0) == []
    later = replay.due(1.0)  # loops the 0.2 s fixture: 30 frames, 50 audio packets in all
    packets = first + later
    assert [p.send_at for p in later] == sorted(p.send_at for p in later)
    stats = ReceiveStats()
    for p in packets:
        stats.record(p.data, received_at=p.send_at + 0.001, sent_at=p.send_at)
    assert stats.frames[11] == 31 and stats.packets[12] == 51
    video_seqs = [p.seq for p in packets if p.ssrc == 11]
    assert sorted(video_seqs) == list(range(3000, 3000 + len(video_seqs)))
    assert percentile(stats.latencies_s, 50) is not None and abs(percentile(stats.latencies_s, 99) - 0.001) < 1e-9
    assert percentile([], 50) is None
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0


# ---- latency tags, keyframe requests, replay layers (bench/_sfu_load.py) ----


def test_latency_tag_survives_header_rewrite_and_extension_stripping() -> None:
    from bench._sfu_load import packet_tag, tag_packet

    header = fixtures.build_rtp_header(111, False, 7, 9000, 0x1234, extension=True)
    tagged = tag_packet(header + fixtures.audio_level_extension(30, 2) + b"opus payload", 0xCAFE01)
    parsed = RtpPacket.parse(tagged)
    assert parsed.payload.startswith(b"opus payload") and parsed.sequence_number == 7
    # What a forwarder does: drop the extension block, rewrite seq/ts/SSRC.
    forwarded = bytearray(bytes((tagged[0] & 0xEF,)) + tagged[1:12] + tagged[20:])
    struct.pack_into("!HII", forwarded, 2, 65535, 123456, 0xABCDEF)
    assert packet_tag(bytes(forwarded)) == 0xCAFE01
    assert packet_tag(header + b"untagged payload") is None
    assert packet_tag(b"\x80" * 12 + b"LTag") is None  # too short to hold a tag


def test_keyframe_requests_in_compound_rtcp() -> None:
    from bench._sfu_load import keyframe_requests

    rr = struct.pack("!BBHI", 0x80, 201, 1, 1)
    pli = struct.pack("!BBHII", 0x81, 206, 2, 1, 0xAAAA)
    fir = struct.pack("!BBHII", 0x84, 206, 6, 1, 0) + struct.pack("!IBxxx", 0xBBBB, 1) + struct.pack("!IBxxx", 0xCCCC, 2)
    nack = struct.pack("!BBHIIHH", 0x81, 205, 3, 1, 0xDDDD, 10, 0)
    remb = struct.pack("!BBHII", 0x8F, 206, 4, 1, 0) + b"REMB" + b"\x01\x0a\x00\x00" + b"\x00\x00\xee\xee"
    assert keyframe_requests(rr + pli + nack + fir + remb) == [0xAAAA, 0xBBBB, 0xCCCC]
    assert keyframe_requests(pli[:10]) == []  # truncated: ignored, no exception


def test_replay_thumbnail_layer_and_keyframe_on_request(tmp_path: Path) -> None:
    from bench._sfu_fixtures import VideoFrameRtp
    from bench._sfu_load import SiteReplay

    fixture = fixtures.load_or_build(tmp_path, seconds=0.2, width=160, height=96)
    fixture.video_frames = [VideoFrameRtp([bytes([i]) * 3, bytes([i]) * 2], keyframe=i == 0) for i in range(6)]
    thumb = fixtures.MediaFixture(80, 48, [VideoFrameRtp([b"t%d" % i], keyframe=i == 0) for i in range(6)], fixture.audio_payloads)
    replay = SiteReplay(fixture, 1, video_ssrc=21, audio_ssrc=22, thumb=thumb, thumb_ssrc=23, audio_level_id=2, phase=0.01)
    assert replay.due(0.0) == []  # this site's clock starts 10 ms later
    first = replay.due(0.1)
    assert [p.ssrc for p in first if p.ssrc != 22] == [21, 21, 23, 21, 21, 23, 21, 21, 23]  # 3 frames, in time order
    audio = next(p for p in first if p.ssrc == 22)
    ext = audio.data[12:20]
    assert ext[4] >> 4 == 2  # the negotiated audio level id
    assert replay.request_keyframe(21) and not replay.request_keyframe(99)
    assert replay.request_keyframe(21)  # a second request before it is sent: the keyframe is next anyway
    assert replay.keyframes_on_request == 1
    after = [p for p in replay.due(0.134) if p.ssrc == 21]  # one more frame (4th) is due
    assert after[0].data[12:] == b"\x00\x00\x00"  # fixture frame 0 (the keyframe) again
    assert [p.seq for p in after] == [1006, 1007]  # sequence numbers stay continuous
    assert [p for p in first if p.ssrc == 23][0].data[12:] == b"t0" and [p.seq for p in first if p.ssrc == 23] == [1500, 1501, 1502]


# ---- the search for the largest meeting and the JSON line (bench/sfu.py) ----


def test_site_count_search_grows_bisects_and_stops_at_the_generator() -> None:
    from bench._sfu_load import Trial, largest_held, next_site_count

    assert next_site_count([Trial(34, True)]) == 51
    assert next_site_count([Trial(34, False)]) == 17
    assert next_site_count([Trial(34, True), Trial(51, False)]) == 42
    trials = [Trial(34, True), Trial(51, False), Trial(42, True), Trial(46, True), Trial(48, False)]
    assert next_site_count(trials) is None and largest_held(trials) == 46
    # The generator fell behind at 51: never try 51 or more, and 51 is not an SFU failure;
    # sizes between the last that held and 51 are still worth measuring.
    limited = [Trial(34, True), Trial(51, False, limited_by="load generator")]
    assert next_site_count(limited) == 42 and largest_held(limited) == 34
    limited += [Trial(42, True)]
    assert next_site_count(limited) == 46
    limited += [Trial(46, False, limited_by="load generator")]
    assert next_site_count(limited) is None and largest_held(limited) == 42   # 46 is within 10% of 42
    # an SFU failure below the generator's limit: bisect as usual, under both
    mixed = [Trial(34, True), Trial(60, False, limited_by="load generator"), Trial(47, False)]
    assert next_site_count(mixed) == 40
    assert next_site_count([Trial(1, False)]) is None and largest_held([Trial(1, False)]) is None


def test_assemble_computes_the_ratios_from_the_same_run() -> None:
    from bench._sfu_load import Trial
    from bench.sfu import assemble

    ours = {"sites": 34, "held": True, "limited_by": None, "sfu_cpu_us_per_packet": 10.0,
            "forwarded_packets_per_s": 18000.4, "expected_packets_per_s": 18000.0, "sfu_cpu_cores": 0.18, "added_latency_ms_p50": 0.4,
            "added_latency_ms_p99": 2.5, "video_fps_min": 29.9, "video_fps_mean": 30.0, "video_streams": 280,
            "audio_streams": 105, "audio_pps_min": 50.0, "latency_ms_p50": 0.6, "latency_ms_p99": 3.0,
            "direct_latency_ms_p50": 0.2, "direct_latency_ms_p99": 0.5, "untagged_packets": 0, "sfu_reported": {},
            "generator_cpu_cores": 0.5, "generator_lateness_ms_p99": 1.0}
    relay = {"cpu_cores_per_stream": 0.1, "received_fps_per_stream": 30.0}
    janus = {"cpu_us_per_packet": 40.0, "forwarded_packets_per_s": 9000.0, "sites": 16}
    trials = [Trial(34, True), Trial(51, True), Trial(76, False, limited_by="load generator")]
    out = assemble(ours, None, trials, True, relay, 100.0, janus, None, None, {})
    assert out["sfu_cpu_us_per_packet"] == 10.0 and out["forwarded_packets_per_s"] == 18000
    assert out["mediarelay_cpu_ratio"] == 100.0  # 0.1 core / (10 us x 100 packets/s)
    assert out["janus_cpu_ratio"] == 0.25
    assert out["max_sites_one_core"] == 51 and out["max_sites_limited_by"] == "load generator at S=76"
    assert out["max_participants_one_core"] == 52
    # 10 us x 18000 packets/s over 35 participants: 0.95 core at 184 participants
    assert out["max_sites_one_core_estimate"] == int(0.95 / (10e-6 * 18000 / 35)) - 1
    assert out["delivered_fraction"] == 1.0
    none = assemble(None, "why", [], False, relay, 100.0, None, "no janus", None, {})
    for key in ("sfu_cpu_us_per_packet", "forwarded_packets_per_s", "max_sites_one_core", "added_latency_ms_p50",
                "added_latency_ms_p99", "mediarelay_cpu_ratio", "janus_cpu_ratio"):
        assert none[key] is None
    assert none["sfu_skipped"] == "why" and none["janus_skipped"] == "no janus"
    ref = {"cpu_us_per_packet": 8.0, "latency_ms_p50": 1.0, "latency_ms_p99": 2.0, "direct_latency_ms_p50": 0.5,
           "direct_latency_ms_p99": 1.0, "compiled": {"cpu_us_per_packet": 5.0}}
    with_ref = assemble(ours, None, trials, True, relay, 100.0, janus, None, ref, {})
    assert with_ref["reference_forwarder_us_per_packet"] == 8.0 and with_ref["reference_compiled_us_per_packet"] == 5.0
    assert with_ref["reference_compiled_janus_ratio"] == 0.125 and with_ref["sfu_over_reference_compiled"] == 2.0
    # alternating pairs: the median of the pairs' ratios (not the ratio of medians, not the first pair)
    pairs = [(10.0, 40.0), (12.0, 20.0), (9.0, 30.0)]
    alternated = assemble(ours, None, trials, True, relay, 100.0, janus, None, ref, {}, janus_pairs=pairs)
    assert alternated["janus_cpu_ratio"] == 0.3 and alternated["janus_cpu_ratio_pairs"][1] == [12.0, 20.0, 0.6]
    assert alternated["reference_compiled_janus_ratio"] == 0.167    # 5 us / the median Janus (30 us)
    # the all-C floor, both send modes, against the median Janus of the pairs
    ref_c = dict(ref, native={"sendto": {"cpu_us_per_packet": 6.0}, "sendmmsg": {"cpu_us_per_packet": 4.5}})
    with_c = assemble(ours, None, trials, True, relay, 100.0, janus, None, ref_c, {}, janus_pairs=pairs)
    assert with_c["reference_c_us_per_packet"] == 6.0 and with_c["reference_c_janus_ratio"] == 0.2
    assert with_c["reference_c_sendmmsg_janus_ratio"] == 0.15 and with_c["sfu_over_reference_c"] == 1.667
    assert "reference_c_skipped" not in with_c and "reference_c_us_per_packet" not in with_ref
    skipped = assemble(ours, None, trials, True, relay, 100.0, janus, None, dict(ref, native_skipped="no cc"), {})
    assert skipped["reference_c_skipped"] == "no cc" and "reference_c_janus_ratio" not in skipped
    single = assemble(ours, None, trials, True, relay, 100.0, janus, None, None, {}, janus_pairs=pairs[:1])
    assert single["janus_cpu_ratio"] == 0.25 and "janus_cpu_ratio_pairs" not in single


async def _inboxes(queues: list[Any]) -> list[Any]:
    """One UDP socket on 127.0.0.1 per queue, putting every datagram it receives there."""
    import asyncio

    class Inbox(asyncio.DatagramProtocol):
        def __init__(self, queue: asyncio.Queue[bytes]) -> None:
            self.queue = queue

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            self.queue.put_nowait(data)

    loop = asyncio.get_running_loop()
    return [(await loop.create_datagram_endpoint(lambda q=q: Inbox(q), local_addr=("127.0.0.1", 0)))[0]  # type: ignore[misc]
            for q in queues]


@pytest.mark.parametrize("compiled", [False, True], ids=["python", "compiled"])
async def test_reference_forwarder_rewrites_protects_and_sends_to_every_subscriber(compiled: bool) -> None:
    """bench/_sfu_reference.py over loopback: one SRTP packet in, one per subscriber out, each
    with its own sequence numbers and SSRC, the payload and timestamp untouched."""
    import asyncio

    from pylibsrtp import Policy

    from bench import _sfu_reference as reference

    if compiled and not reference.compiled_available():
        pytest.skip("media._fastpath is not built (no C compiler)")
    loop = asyncio.get_running_loop()
    inboxes: list[asyncio.Queue[bytes]] = [asyncio.Queue(), asyncio.Queue()]
    subs = await _inboxes(inboxes)
    fwd_transport, _ = await loop.create_datagram_endpoint(
        lambda: reference._Forwarder([t.get_extra_info("sockname") for t in subs], compiled), local_addr=("127.0.0.1", 0))
    sender, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
    try:
        protect = reference.session(Policy.SSRC_ANY_OUTBOUND).protect
        unprotect = [reference.session(Policy.SSRC_ANY_INBOUND).unprotect for _ in subs]
        payloads = [bytes([n]) * (100 + n) for n in range(3)]
        for n, payload in enumerate(payloads):
            packet = struct.pack("!BBHII", 0x80, 0x80 | 96, 500 + n, 9000 * n, 0x1234) + payload
            sender.sendto(protect(packet), fwd_transport.get_extra_info("sockname"))
        for i, queue in enumerate(inboxes):
            for n, payload in enumerate(payloads):
                got = unprotect[i](await asyncio.wait_for(queue.get(), 5))
                assert got == struct.pack("!BBHII", 0x80, 0x80 | 96, n, 9000 * n, 0x1234 ^ (i + 1)) + payload
    finally:
        for t in (*subs, fwd_transport, sender):
            t.close()


@pytest.mark.parametrize("mode", ["sendto", "connected", "sendmmsg"])
async def test_all_c_floor_forwarder_rewrites_protects_and_sends_to_every_subscriber(mode: str) -> None:
    """bench/_sfu_floor.c, built here, in each send mode: the same contract as the Python
    reference forwarder (own seq and SSRC per subscriber, timestamp and payload untouched),
    and a packet that does not authenticate is dropped, not forwarded (forwarded, it would fail
    its subscriber's unprotect and shift that subscriber's sequence numbers)."""
    import asyncio

    from pylibsrtp import Policy

    from bench import _sfu_reference as reference

    reason = reference.native_skipped()
    if reason:
        pytest.skip(f"the all-C floor cannot be built here: {reason}")
    loop = asyncio.get_running_loop()
    inboxes: list[asyncio.Queue[bytes]] = [asyncio.Queue() for _ in range(3)]
    subs = await _inboxes(inboxes)
    addrs = [f"{h}:{p}" for h, p in (t.get_extra_info("sockname") for t in subs)]
    proc = await asyncio.create_subprocess_exec(str(reference.native_binary()), mode, *addrs,
                                                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    sender, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
    try:
        assert proc.stdout is not None
        port = int(await asyncio.wait_for(proc.stdout.readline(), 10))
        protect = reference.session(Policy.SSRC_ANY_OUTBOUND).protect
        unprotect = [reference.session(Policy.SSRC_ANY_INBOUND).unprotect for _ in subs]
        payloads = [bytes([n]) * (100 + 300 * n) for n in range(4)]
        for n, payload in enumerate(payloads):
            packet = struct.pack("!BBHII", 0x80, 0x80 | 96, 65534 + n & 0xFFFF, 9000 * n, 0x1234 + n % 2) + payload
            protected = protect(packet)
            if n == 2:   # tampered on the way: fails authentication, so nobody gets it
                sender.sendto(protected[:-1] + bytes([protected[-1] ^ 1]), ("127.0.0.1", port))
            sender.sendto(protected, ("127.0.0.1", port))
        for i, queue in enumerate(inboxes):
            counts = {0x1234: 0, 0x1235: 0}
            for n, payload in enumerate(payloads):
                ssrc = 0x1234 + n % 2
                got = unprotect[i](await asyncio.wait_for(queue.get(), 5))
                assert got == struct.pack("!BBHII", 0x80, 0x80 | 96, counts[ssrc], 9000 * n, ssrc ^ (i + 1)) + payload
                counts[ssrc] += 1
    finally:
        sender.close()
        if proc.stdin is not None:
            proc.stdin.close()
        assert await asyncio.wait_for(proc.wait(), 10) == 0   # its input closed: it stops by itself
        for t in subs:
            t.close()


# ---- the SFU child process and its control pipe (bench/_sfu_ours.py) ----


async def test_sfu_child_process_joins_reports_refusals_and_stops() -> None:
    from bench._sfu_ours import SfuError, SfuProcess
    from media import native

    sfu = SfuProcess(cpu=None)
    async with sfu:
        assert sfu.native == (native.fastpath is not None)
        chair = await sfu.join("c", "Chủ trì", "chair")
        site = await sfu.join("s1", "Điểm cầu 1", "site")
        assert [e["slot"] for e in site["layout"][:4]] == ["audio-0", "main", "chair", "screen"]
        assert (await sfu.snapshot(site["id"]))["slots"]["chair"] == chair["id"]
        try:
            await sfu.call(site["id"], "set_floor", site["id"])
        except SfuError as exc:
            assert exc.code == "not_chair"
        else:
            raise AssertionError("a site gave itself the floor")
        await sfu.call(chair["id"], "set_floor", site["id"])
        assert any(pid == chair["id"] and e["type"] == "floor" for pid, e in sfu.events) or sfu.slots
        assert sfu.cpu_seconds() > 0
        assert isinstance(await sfu.counters(), dict)
        pid = sfu.pid
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


async def test_sfu_child_without_the_compiled_path_runs_everything_in_python() -> None:
    """bench.sfu's same-run comparison (``sfu_cpu_us_per_packet_python_send``) must measure the
    SFU as a machine without a C compiler runs it."""
    from bench._sfu_ours import SfuProcess

    async with SfuProcess(cpu=None, compiled=False) as sfu:
        assert sfu.native is False
        await sfu.join("c", "Chủ trì", "chair")


# ---- the whole SFU scenario, tiny (bench/_sfu_sites.py against media.MediaService) ----


async def test_tiny_meeting_through_our_sfu_is_counted_and_timed(tmp_path: Path) -> None:
    from bench._sfu_sites import drive

    fixture = fixtures.load_or_build(tmp_path, seconds=0.5, width=160, height=96)
    thumb = fixtures.load_or_build(tmp_path, 0.5, 80, 48, fixtures.THUMB_BITRATE)
    lines: list[str] = []
    r = await drive(fixture, thumb, sites=2, warmup=1.0, window=1.0, progress=lines.append, cpu=None)
    assert r["participants"] == 3 and lines
    # Which slots are fed is the forwarder's policy; every subscriber gets some video and audio.
    assert r["video_streams"] >= 3 and r["audio_streams"] >= 3
    assert r["forwarded_packets"] > 0 and r["sfu_cpu_us_per_packet"] is not None
    assert r["untagged_packets"] == 0, "the SFU changed the end of the payload, where the latency tag is"
    assert r["latency_samples"] == r["forwarded_packets"] or r["latency_samples"] > 0
    assert r["direct_latency_ms_p50"] is not None and r["added_latency_ms_p50"] is not None
    assert any(k.startswith("lienthong_media_forwarded_packets_total") for k in r["sfu_reported"])


def test_replay_next_due_is_when_due_returns_packets(tmp_path: Path) -> None:
    from bench._sfu_load import SiteReplay

    fixture = fixtures.load_or_build(tmp_path, seconds=0.2, width=160, height=96)
    replay = SiteReplay(fixture, 2, video_ssrc=1, audio_ssrc=2, phase=0.005)
    assert replay.next_due() == 0.005
    replay.due(0.005)
    t = replay.next_due()
    assert abs(t - (0.005 + 0.020)) < 1e-9  # audio (20 ms) before the next video frame (33 ms)
    assert replay.due(t - 1e-6) == [] and len(replay.due(t)) == 1
