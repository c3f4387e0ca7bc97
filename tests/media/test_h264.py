from __future__ import annotations

import struct

import pytest

from media.h264 import is_keyframe, nal_types
from media.rtp_rewrite import payload_offset

SPS = b"\x67\x42\xc0\x1f\xda\x01\x40\x16\xe8"
PPS = b"\x68\xce\x3c\x80"
IDR = b"\x65\x88\x84\x00\x33\xff"
SLICE = b"\x41\x9a\x02\x03"
SEI = b"\x06\x05\x01\x02"


def stap_a(*nalus: bytes) -> bytes:
    return b"\x78" + b"".join(struct.pack("!H", len(n)) + n for n in nalus)


def stap_b(*nalus: bytes) -> bytes:
    return b"\x79\x00\x01" + b"".join(struct.pack("!H", len(n)) + n for n in nalus)


def fu_a(nalu: bytes, start: bool, end: bool = False) -> bytes:
    indicator = (nalu[0] & 0xE0) | 28
    header = (0x80 if start else 0) | (0x40 if end else 0) | (nalu[0] & 0x1F)
    return bytes([indicator, header]) + nalu[1:]


def fu_b(nalu: bytes, start: bool) -> bytes:
    indicator = (nalu[0] & 0xE0) | 29
    return bytes([indicator, (0x80 if start else 0) | (nalu[0] & 0x1F)]) + b"\x00\x07" + nalu[1:]


def test_single_nal_units() -> None:
    assert nal_types(SPS) == [7] and is_keyframe(SPS)
    assert nal_types(IDR) == [5] and is_keyframe(IDR)
    assert nal_types(PPS) == [8] and not is_keyframe(PPS)
    assert nal_types(SLICE) == [1] and not is_keyframe(SLICE)
    assert not is_keyframe(SEI)


def test_stap_a_with_sps_pps_idr() -> None:
    p = stap_a(SPS, PPS, IDR)
    assert nal_types(p) == [7, 8, 5]
    assert is_keyframe(p) and is_keyframe(p, require_sps=True)


def test_stap_a_without_keyframe() -> None:
    p = stap_a(SEI, SLICE)
    assert nal_types(p) == [6, 1]
    assert not is_keyframe(p)


def test_stap_b_skips_don() -> None:
    p = stap_b(SPS, PPS)
    assert nal_types(p) == [7, 8] and is_keyframe(p)


def test_fu_a_only_start_fragment_counts() -> None:
    assert nal_types(fu_a(IDR, start=True)) == [5]
    assert is_keyframe(fu_a(IDR, start=True))
    assert not is_keyframe(fu_a(IDR, start=False))
    assert not is_keyframe(fu_a(IDR, start=False, end=True))
    assert nal_types(fu_a(IDR, start=False)) == []
    assert not is_keyframe(fu_a(SLICE, start=True))


def test_fu_b() -> None:
    assert is_keyframe(fu_b(IDR, start=True))
    assert not is_keyframe(fu_b(IDR, start=False))


def test_require_sps_rejects_bare_idr() -> None:
    assert not is_keyframe(IDR, require_sps=True)
    assert not is_keyframe(fu_a(IDR, start=True), require_sps=True)
    assert is_keyframe(SPS, require_sps=True)


@pytest.mark.parametrize("data", [
    b"",
    b"\x7c",                         # FU-A without FU header
    b"\x78",                         # empty STAP-A
    b"\x78\x00",                     # STAP-A size cut
    b"\x78\x00\x09\x67",             # STAP-A unit longer than the packet
    b"\x78\x00\x00\x67\x42",         # zero-size unit
    b"\x7a\x00\x01\x00\x00\x00\x04",  # MTAP16: not handled
    b"\x00",                         # type 0: reserved
    b"\x1f\x00",                     # type 31: reserved
])
def test_malformed_or_unhandled(data: bytes) -> None:
    assert nal_types(data) == []
    assert not is_keyframe(data)


def test_stap_a_cut_short_keeps_leading_units() -> None:
    p = stap_a(SPS, PPS, IDR)[:-3]
    assert nal_types(p) == [7, 8]
    assert is_keyframe(p)


def test_offset_in_rtp_packet_and_out_of_range() -> None:
    packet = struct.pack("!BBHII", 0x80, 102, 1, 2, 3) + stap_a(SPS, PPS, IDR)
    off = payload_offset(packet)
    assert off == 12 and is_keyframe(packet, off)
    assert nal_types(packet, 99) == [] and not is_keyframe(packet, -1)


def test_random_bytes_never_raise() -> None:
    import random
    rnd = random.Random(2)
    for _ in range(3000):
        data = bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(0, 20)))
        types = nal_types(data)
        assert all(0 <= t < 32 for t in types)
        is_keyframe(data)
        is_keyframe(data, require_sps=True)


# ---- real encoder output (libx264 through aiortc's packetizer, used as a reference only) ----

def test_real_h264_keyframe_and_delta_frames() -> None:
    import fractions

    import av
    import numpy as np
    from aiortc.codecs.h264 import H264Encoder

    rnd = np.random.default_rng(1)
    encoder = H264Encoder()
    frames = []
    for i in range(3):
        image = rnd.integers(0, 255, (360, 640, 3), dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts, frame.time_base = i * 3000, fractions.Fraction(1, 90000)
        payloads, _ = encoder.encode(frame, force_keyframe=(i == 0))
        frames.append(payloads)
    key, *deltas = frames
    assert len(key) > 1  # SPS/PPS aggregated, the IDR slice in FU-A fragments
    assert is_keyframe(key[0]) and is_keyframe(key[0], require_sps=True)
    assert any(5 in nal_types(p) for p in key)
    assert not any(is_keyframe(p) for frame in deltas for p in frame)
