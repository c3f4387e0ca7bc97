"""Fast checks of the SFU benchmark's pieces that need no SFU: fixture encoding and packetization."""

from __future__ import annotations

import struct
from pathlib import Path

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


def test_site_audio_levels_vary_per_site() -> None:
    levels = {fixtures.site_audio_level(site, 0) for site in range(10)}
    assert len(levels) > 5
    assert all(0 <= level <= 127 for level in levels)


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
