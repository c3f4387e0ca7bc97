from __future__ import annotations

import functools
import struct

import pytest

from media.rtp_rewrite import SlotRewriter, payload_offset
from media.vp8 import Vp8Rewriter, descriptor_layout, is_keyframe, keyframe_size, parse_descriptor
from tests.media.implementations import REWRITERS


@pytest.fixture(autouse=True, params=REWRITERS)
def implementation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test here runs on the Python rewriters and on media._fastpath's."""
    slot, vp8_rewriter = request.param
    monkeypatch.setitem(globals(), "SlotRewriter", slot)
    monkeypatch.setitem(globals(), "Vp8Rewriter", vp8_rewriter)


def descriptor(*, start: bool = True, pid_part: int = 0, n: bool = False, picture_id: int | None = None,
               bits: int = 15, tl0: int | None = None, tid: int | None = None, y: bool = False,
               keyidx: int | None = None) -> bytes:
    b0 = (0x10 if start else 0) | (0x20 if n else 0) | pid_part
    x = (0x80 if picture_id is not None else 0) | (0x40 if tl0 is not None else 0) \
        | (0x20 if tid is not None else 0) | (0x10 if keyidx is not None else 0)
    if not x:
        return bytes([b0])
    out = bytes([b0 | 0x80, x])
    if picture_id is not None:
        out += struct.pack("!H", 0x8000 | picture_id) if bits == 15 else bytes([picture_id])
    if tl0 is not None:
        out += bytes([tl0])
    if tid is not None or keyidx is not None:
        out += bytes([((tid or 0) << 6) | (0x20 if y else 0) | (keyidx or 0)])
    return out


def keyframe_payload(width: int = 640, height: int = 360) -> bytes:
    # frame tag: P=0 (keyframe), version 0, show_frame 1, first partition size; then start code
    return b"\x10\x02\x00" + b"\x9d\x01\x2a" + struct.pack("<HH", width, height) + b"\x00" * 8


DELTA = b"\x31\x02\x00" + b"\x00" * 10


def rtp(payload: bytes, seq: int = 1, ts: int = 0, ssrc: int = 1) -> bytes:
    return struct.pack("!BBHII", 0x80, 96, seq, ts, ssrc) + payload


# ---- parsing ----

def test_parse_full_descriptor_15bit() -> None:
    d = parse_descriptor(descriptor(picture_id=0x1234, tl0=200, tid=2, y=True, keyidx=17, n=True) + DELTA)
    assert d is not None
    assert d.start and d.partition_id == 0 and d.non_reference
    assert (d.picture_id, d.picture_id_bits, d.tl0picidx, d.tid, d.layer_sync, d.keyidx) == (0x1234, 15, 200, 2, True, 17)
    assert d.size == 6


def test_parse_7bit_picture_id_and_minimal_descriptor() -> None:
    d = parse_descriptor(descriptor(picture_id=100, bits=7, start=False, pid_part=3) + DELTA)
    assert d is not None and (d.picture_id, d.picture_id_bits, d.size, d.start, d.partition_id) == (100, 7, 3, False, 3)
    m = parse_descriptor(b"\x10" + DELTA)
    assert m is not None and m.picture_id is None and m.picture_id_bits == 0 and m.size == 1


def test_parse_at_offset() -> None:
    packet = rtp(descriptor(picture_id=5, tl0=1) + DELTA)
    d = parse_descriptor(packet, payload_offset(packet) or 0)
    assert d is not None and d.picture_id == 5 and d.tl0picidx == 1


def test_tid_without_keyidx_and_keyidx_without_tid() -> None:
    d = parse_descriptor(descriptor(tid=1) + DELTA)
    assert d is not None and d.tid == 1 and d.keyidx is None
    k = parse_descriptor(descriptor(keyidx=3) + DELTA)
    assert k is not None and k.tid is None and k.keyidx == 3


@pytest.mark.parametrize("data", [
    b"",
    b"\x90",                      # X set, no extension byte
    b"\x90\x80",                  # I set, no PictureID
    b"\x90\x80\x81",              # M set, second PictureID byte missing
    b"\x90\x40",                  # L set, no TL0PICIDX
    b"\x90\x20",                  # T set, no TID byte
    b"\x90\x80\x81\x02",          # descriptor complete, no VP8 payload
    b"\x10",                      # minimal descriptor, no VP8 payload
])
def test_truncated_descriptors(data: bytes) -> None:
    assert parse_descriptor(data) is None
    assert not is_keyframe(data)
    assert keyframe_size(data) is None
    assert Vp8Rewriter().rewrite(bytearray(data), 0) is None
    assert descriptor_layout(data) is None


def test_offset_out_of_range() -> None:
    assert parse_descriptor(b"\x10abc", 10) is None
    assert parse_descriptor(b"\x10abc", -1) is None
    assert not is_keyframe(b"\x10abc", 7)
    assert Vp8Rewriter().rewrite(bytearray(b"\x10abc"), 9) is None


# ---- keyframes ----

def test_keyframe_detection() -> None:
    assert is_keyframe(descriptor(picture_id=1, tl0=0, tid=0) + keyframe_payload())
    assert is_keyframe(b"\x10" + keyframe_payload())
    assert keyframe_size(descriptor(picture_id=1) + keyframe_payload(1280, 720)) == (1280, 720)


def test_not_keyframes() -> None:
    assert not is_keyframe(descriptor(picture_id=1) + DELTA)                              # P bit set
    assert not is_keyframe(descriptor(picture_id=1, start=False) + keyframe_payload())    # continuation
    assert not is_keyframe(descriptor(picture_id=1, pid_part=1) + keyframe_payload())     # partition 1
    assert not is_keyframe(descriptor(picture_id=1) + b"\x10\x02\x00\x00\x00\x00abcd")   # no start code
    assert not is_keyframe(descriptor(picture_id=1) + b"\x10\x02")                        # too short
    assert keyframe_size(descriptor(picture_id=1) + DELTA) is None


def test_keyframe_size_truncated_dimensions() -> None:
    assert keyframe_size(b"\x10" + b"\x10\x02\x00\x9d\x01\x2a\x80") is None


def test_keyframe_inside_rtp_packet() -> None:
    packet = rtp(descriptor(picture_id=9) + keyframe_payload())
    assert is_keyframe(packet, payload_offset(packet) or 0)
    assert not is_keyframe(packet, 0)


# ---- rewriting ----

def rewrite(r: Vp8Rewriter, payload: bytes, ssrc: int | None = None) -> bytes:
    out = r.rewrite(bytearray(payload), 0, ssrc)
    assert out is not None
    return bytes(out)


def fields(payload: bytes) -> tuple[int | None, int | None, int | None]:
    d = parse_descriptor(payload)
    assert d is not None
    return d.picture_id, d.tl0picidx, d.keyidx


def test_first_source_passes_through() -> None:
    r = Vp8Rewriter()
    p = descriptor(picture_id=0x7FF0, tl0=9, tid=0, keyidx=4) + DELTA
    assert rewrite(r, p) == p
    assert r.last_picture_id == 0x7FF0 and r.last_tl0picidx == 9


def test_switch_continues_picture_id_tl0_keyidx() -> None:
    r = Vp8Rewriter()
    for pic in (0x7FFE, 0x7FFF):
        rewrite(r, descriptor(picture_id=pic, tl0=255, tid=0, keyidx=31) + DELTA)
    r.switch()
    out = rewrite(r, descriptor(picture_id=1000, tl0=17, tid=0, keyidx=2) + keyframe_payload())
    assert fields(out) == (0, 0, 0)
    out = rewrite(r, descriptor(picture_id=1001, tl0=17, tid=1, keyidx=2) + DELTA)
    assert fields(out) == (1, 0, 0)
    out = rewrite(r, descriptor(picture_id=1002, tl0=18, tid=0, keyidx=2) + DELTA)
    assert fields(out) == (2, 1, 0)


def test_packets_of_one_frame_share_the_picture_id() -> None:
    r = Vp8Rewriter()
    rewrite(r, descriptor(picture_id=10) + DELTA)
    r.switch()
    a = rewrite(r, descriptor(picture_id=500) + keyframe_payload())
    b = rewrite(r, descriptor(picture_id=500, start=False) + b"more")
    assert fields(a)[0] == fields(b)[0] == 11


def test_source_picture_id_wraps_15bit() -> None:
    r = Vp8Rewriter()
    rewrite(r, descriptor(picture_id=100) + DELTA)
    r.switch()
    outs = [fields(rewrite(r, descriptor(picture_id=p) + DELTA))[0] for p in (0x7FFE, 0x7FFF, 0, 1)]
    assert outs == [101, 102, 103, 104]


def test_7bit_source_is_widened_and_unwrapped() -> None:
    r = Vp8Rewriter()
    rewrite(r, descriptor(picture_id=0x7FFF) + DELTA)
    r.switch()
    outs = []
    for pic in (126, 127, 0, 1):
        src = descriptor(picture_id=pic, bits=7, tl0=3) + DELTA
        buf = bytearray(src)
        out = r.rewrite(buf, 0)
        assert out is not None and out is not buf and len(out) == len(src) + 1
        d = parse_descriptor(out)
        assert d is not None and d.picture_id_bits == 15 and d.tl0picidx == 3  # first TL0PICIDX ever: as is
        assert bytes(out[d.size:]) == DELTA
        outs.append(d.picture_id)
    assert outs == [0, 1, 2, 3]


def test_15bit_rewrite_is_in_place() -> None:
    r = Vp8Rewriter()
    buf = bytearray(descriptor(picture_id=5) + DELTA)
    assert r.rewrite(buf, 0) is buf


def test_switch_from_7bit_to_15bit_source() -> None:
    r = Vp8Rewriter()
    out = rewrite(r, descriptor(picture_id=120, bits=7) + DELTA)
    assert fields(out)[0] == 120
    r.switch()
    assert fields(rewrite(r, descriptor(picture_id=30000) + DELTA))[0] == 121


def test_reordered_packet_does_not_move_anchor() -> None:
    r = Vp8Rewriter()
    rewrite(r, descriptor(picture_id=10, tl0=1) + DELTA)
    rewrite(r, descriptor(picture_id=12, tl0=3) + DELTA)
    assert fields(rewrite(r, descriptor(picture_id=11, tl0=2) + DELTA)) == (11, 2, None)
    r.switch()
    assert fields(rewrite(r, descriptor(picture_id=0, tl0=0) + DELTA)) == (13, 4, None)


def test_ssrc_change_reanchors_without_switch() -> None:
    r = Vp8Rewriter()
    rewrite(r, descriptor(picture_id=40) + DELTA, ssrc=1)
    rewrite(r, descriptor(picture_id=41) + DELTA, ssrc=1)
    assert fields(rewrite(r, descriptor(picture_id=7000) + DELTA, ssrc=2))[0] == 42
    assert fields(rewrite(r, descriptor(picture_id=7001) + DELTA, ssrc=2))[0] == 43


def test_descriptor_without_extension_passes_unchanged() -> None:
    r = Vp8Rewriter()
    p = b"\x10" + DELTA
    assert rewrite(r, p) == p


def test_source_without_picture_id_keeps_state_for_next() -> None:
    r = Vp8Rewriter()
    rewrite(r, descriptor(picture_id=50) + DELTA)
    r.switch()
    assert rewrite(r, descriptor(tl0=5) + DELTA) == descriptor(tl0=5) + DELTA  # first tl0 ever: passthrough
    r.switch()
    assert fields(rewrite(r, descriptor(picture_id=9, tl0=100) + DELTA)) == (51, 6, None)


def test_retransmit_uses_mapping_even_while_switch_pending() -> None:
    r = Vp8Rewriter()
    rewrite(r, descriptor(picture_id=1) + DELTA)
    r.switch()
    lost = descriptor(picture_id=300, tl0=8) + DELTA
    first = rewrite(r, lost)
    rewrite(r, descriptor(picture_id=301, tl0=8) + DELTA)
    r.switch()
    again = r.retransmit(bytearray(lost), 0)
    assert again is not None and bytes(again) == first
    assert fields(rewrite(r, descriptor(picture_id=5, tl0=0) + DELTA)) == (4, 9, None)


def test_retransmit_before_any_mapping_is_none() -> None:
    assert Vp8Rewriter().retransmit(bytearray(descriptor(picture_id=1) + DELTA), 0) is None
    assert Vp8Rewriter().retransmit(bytearray(descriptor(tl0=1) + DELTA), 0) is None


def test_together_with_slot_rewriter_on_one_buffer() -> None:
    slot, vp8 = SlotRewriter(out_ssrc=77), Vp8Rewriter()
    for seq, pic, ssrc in [(10, 100, 1), (11, 101, 1), (5000, 9000, 2), (5001, 9001, 2)]:
        if seq == 5000:
            slot.switch()
            vp8.switch()
        buf = bytearray(rtp(descriptor(picture_id=pic) + DELTA, seq=seq, ssrc=ssrc))
        off = payload_offset(buf)
        assert off is not None
        out = vp8.rewrite(buf, off, ssrc)
        assert out is not None
        slot.rewrite_in_place(out)
        assert struct.unpack_from("!H", out, 2)[0] == {10: 10, 11: 11, 5000: 12, 5001: 13}[seq]
        d = parse_descriptor(out, off)
        assert d is not None and d.picture_id == {10: 100, 11: 101, 5000: 102, 5001: 103}[seq]


def test_descriptor_layout_positions() -> None:
    assert descriptor_layout(descriptor(picture_id=300, tl0=4, tid=1, keyidx=2) + DELTA) == (2, 15, 4, 5)
    assert descriptor_layout(descriptor(picture_id=30, bits=7, tid=1) + DELTA) == (2, 7, -1, -1)
    assert descriptor_layout(b"\x10" + DELTA) == (-1, 0, -1, -1)
    packet = rtp(descriptor(picture_id=300) + DELTA)
    assert descriptor_layout(packet, 12) == (14, 15, -1, -1)


def test_fan_out_with_shared_layout_matches_parsing_each_copy() -> None:
    sources = [descriptor(picture_id=p, tl0=p & 0xFF, tid=0, keyidx=p & 0x1F) + DELTA for p in range(1000, 1010)]
    a, b = Vp8Rewriter(), Vp8Rewriter()
    for i, src in enumerate(sources):
        if i == 5:
            a.switch()
            b.switch()
        packet = rtp(src) if i < 5 else rtp(descriptor(picture_id=9 + i, tl0=i, tid=0, keyidx=i) + DELTA)
        layout = descriptor_layout(packet, 12)
        out_a = a.rewrite(bytearray(packet), 12, None, layout)
        out_b = b.rewrite(bytearray(packet), 12)
        assert out_a is not None and out_a == out_b


def test_random_bytes_never_raise_and_layout_agrees_with_parse() -> None:
    import random
    rnd = random.Random(5)
    rewriter = Vp8Rewriter()
    for _ in range(3000):
        data = bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(0, 12)))
        d = parse_descriptor(data)
        layout = descriptor_layout(data)
        assert (d is None) == (layout is None)
        if d is not None and layout is not None:
            assert layout[1] == d.picture_id_bits
        is_keyframe(data)
        keyframe_size(data)
        out = rewriter.rewrite(bytearray(data), 0, rnd.choice((1, 2)))
        assert (out is None) == (d is None)
        rewriter.retransmit(bytearray(data), 0)
        if rnd.random() < 0.1:
            rewriter.switch()


def test_random_switches_keep_picture_id_continuous() -> None:
    import random
    rnd = random.Random(11)
    r = Vp8Rewriter()
    last: int | None = None
    for k in range(100):
        r.switch()
        bits = rnd.choice((7, 15))
        pic = rnd.getrandbits(bits)
        for _ in range(rnd.randrange(1, 300)):
            src = descriptor(picture_id=pic, bits=bits) + DELTA
            out = r.rewrite(bytearray(src), 0, k)
            assert out is not None
            d = parse_descriptor(out)
            assert d is not None and d.picture_id is not None and d.picture_id_bits == 15
            if last is not None:
                assert d.picture_id == (last + 1) & 0x7FFF
            last = d.picture_id
            pic = (pic + 1) & ((1 << bits) - 1)


# ---- real encoder output (libvpx through aiortc's packetizer, used as a reference only) ----

@functools.lru_cache(maxsize=1)
def _encoded_vp8_frames() -> list[list[bytes]]:
    import fractions

    import av
    import numpy as np
    from aiortc.codecs.vpx import Vp8Encoder

    rnd = np.random.default_rng(1)
    encoder = Vp8Encoder()
    frames = []
    for i in range(3):
        image = rnd.integers(0, 255, (360, 640, 3), dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts, frame.time_base = i * 3000, fractions.Fraction(1, 90000)
        payloads, _ = encoder.encode(frame, force_keyframe=(i == 0))
        frames.append(payloads)
    return frames


def test_real_vp8_keyframe_and_delta_frames() -> None:
    key, *deltas = _encoded_vp8_frames()
    assert len(key) > 1  # a noisy 640x360 keyframe spans several packets
    assert is_keyframe(key[0]) and keyframe_size(key[0]) == (640, 360)
    assert not any(is_keyframe(p) for p in key[1:])
    assert not any(is_keyframe(p) for frame in deltas for p in frame)
    first = parse_descriptor(key[0])
    assert first is not None and first.picture_id_bits == 15 and first.start


def test_real_vp8_stream_rewritten_across_a_switch_keeps_payload() -> None:
    key, *deltas = _encoded_vp8_frames()
    r = Vp8Rewriter()
    rewrite(r, descriptor(picture_id=77) + DELTA, ssrc=1)
    ids = []
    for frame in [key, *deltas]:
        for p in frame:
            d = parse_descriptor(p)
            assert d is not None
            out = r.rewrite(bytearray(p), 0, 2)
            assert out is not None
            o = parse_descriptor(out)
            assert o is not None and bytes(out[o.size:]) == p[d.size:]
            ids.append(o.picture_id)
    assert ids[0] == 78 and sorted({i for i in ids if i is not None}) == [78, 79, 80] and None not in ids


def test_copy_is_an_independent_snapshot() -> None:
    import copy
    r = Vp8Rewriter()
    rewrite(r, descriptor(picture_id=40, tl0=3) + DELTA, ssrc=1)
    kept = copy.copy(r)
    r.switch()
    assert fields(rewrite(r, descriptor(picture_id=900, tl0=77) + DELTA, ssrc=2)) == (41, 4, None)
    again = kept.retransmit(bytearray(descriptor(picture_id=40, tl0=3) + DELTA), 0)
    assert again is not None and fields(bytes(again)) == (40, 3, None)


def test_picture_id_fast_path_matches_rewrite_or_declines() -> None:
    """``picture_id`` (the forwarder's fast path for PictureID-only descriptors) gives what
    ``rewrite`` writes, and declines (-1, no state change) whenever rewrite must anchor."""
    fast, full = Vp8Rewriter(), Vp8Rewriter()
    assert fast.picture_id(100, 1) == -1          # nothing anchored yet
    def both(pid: int, ssrc: int) -> int:
        buf = bytearray(rtp(descriptor(picture_id=pid) + DELTA, ssrc=ssrc))
        layout = descriptor_layout(buf, 12)
        out = fast.picture_id(pid, ssrc)
        if out < 0:   # the forwarder then calls rewrite
            out = parse_descriptor(fast.rewrite(bytearray(buf), 12, ssrc, layout), 12).picture_id  # type: ignore[arg-type, union-attr]
        expected = parse_descriptor(full.rewrite(buf, 12, ssrc, layout), 12).picture_id  # type: ignore[arg-type, union-attr]
        assert out == expected
        return out
    assert both(0x7FFE, 1) == 0x7FFE
    assert both(0x7FFF, 1) == 0x7FFF
    assert fast.picture_id(0, 1) == 0             # wraps like rewrite
    full.rewrite(bytearray(rtp(descriptor(picture_id=0) + DELTA, ssrc=1)), 12, 1)
    assert both(0x7FFF, 1) == 0x7FFF              # late packet: old mapping, anchor kept
    assert both(1, 1) == 1
    assert fast.picture_id(500, 2) == -1          # another source: rewrite re-anchors
    assert both(500, 2) == 2
    fast.switch()
    full.switch()
    assert fast.picture_id(9000, 3) == -1         # switch pending
    assert both(9000, 3) == 3
    assert both(9001, 3) == 4
