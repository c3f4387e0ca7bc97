from __future__ import annotations

import struct

import pytest

from media.rtp_rewrite import (
    SlotRewriter,
    abs_send_time,
    audio_level,
    build_rtx,
    extension_block,
    find_extension,
    parse_header,
    payload_bounds,
    payload_offset,
    seq_delta,
    seq_newer,
    set_extension,
    unwrap_rtx,
    with_extension_block,
)
from tests.media.implementations import REWRITERS


@pytest.fixture(autouse=True, params=REWRITERS)
def implementation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test here runs on the Python rewriters and on media._fastpath's."""
    slot, vp8_rewriter = request.param
    monkeypatch.setitem(globals(), "SlotRewriter", slot)
    monkeypatch.setitem(globals(), "Vp8Rewriter", vp8_rewriter)


def rtp(seq: int, ts: int, ssrc: int, payload: bytes = b"x", *, marker: bool = False, pt: int = 96,
        csrcs: tuple[int, ...] = (), ext: tuple[int, bytes] | None = None, padding: int = 0) -> bytes:
    b0 = 0x80 | len(csrcs) | (0x10 if ext else 0) | (0x20 if padding else 0)
    out = struct.pack("!BBHII", b0, (0x80 if marker else 0) | pt, seq, ts, ssrc)
    out += b"".join(struct.pack("!I", c) for c in csrcs)
    if ext:
        profile, data = ext
        assert len(data) % 4 == 0
        out += struct.pack("!HH", profile, len(data) // 4) + data
    out += payload
    if padding:
        out += b"\x00" * (padding - 1) + bytes([padding])
    return out


def one_byte_ext(*elements: tuple[int, bytes], pad_between: int = 0) -> tuple[int, bytes]:
    data = b""
    for eid, value in elements:
        data += bytes([(eid << 4) | (len(value) - 1)]) + value + b"\x00" * pad_between
    data += b"\x00" * (-len(data) % 4)
    return 0xBEDE, data


def two_byte_ext(*elements: tuple[int, bytes]) -> tuple[int, bytes]:
    data = b""
    for eid, value in elements:
        data += bytes([eid, len(value)]) + value
    data += b"\x00" * (-len(data) % 4)
    return 0x1000, data


def header(p: bytes) -> tuple[int, int, int]:
    return struct.unpack_from("!HII", p, 2)


# ---- header parsing ----

def test_parse_plain_header() -> None:
    h = parse_header(rtp(513, 0xDEADBEEF, 0x01020304, b"payload", marker=True, pt=111))
    assert h is not None
    assert (h.marker, h.payload_type, h.seq, h.timestamp, h.ssrc) == (True, 111, 513, 0xDEADBEEF, 0x01020304)
    assert h.csrcs == () and h.ext_profile == 0
    assert (h.payload_start, h.payload_end) == (12, 19)


def test_parse_csrcs_extension_and_padding() -> None:
    p = rtp(1, 2, 3, b"abcd", csrcs=(10, 11), ext=one_byte_ext((1, b"\x85")), padding=4)
    h = parse_header(p)
    assert h is not None
    assert h.csrcs == (10, 11)
    assert h.ext_profile == 0xBEDE
    assert (h.ext_start, h.ext_end) == (12 + 8 + 4, 12 + 8 + 8)
    assert p[h.payload_start:h.payload_end] == b"abcd"
    assert payload_offset(p) == h.payload_start
    assert payload_bounds(p) == (h.payload_start, h.payload_end)


def test_payload_offset_without_extension_is_12() -> None:
    assert payload_offset(rtp(1, 2, 3)) == 12
    assert payload_bounds(rtp(1, 2, 3, b"")) == (12, 12)


@pytest.mark.parametrize("packet", [
    b"",
    b"\x80" * 11,
    struct.pack("!BBHII", 0x40, 96, 1, 2, 3),                     # version 1
    struct.pack("!BBHII", 0x82, 96, 1, 2, 3) + b"\x00" * 4,       # 2 CSRCs announced, 1 present
    struct.pack("!BBHII", 0x90, 96, 1, 2, 3) + b"\xbe\xde",       # extension header cut short
    struct.pack("!BBHII", 0x90, 96, 1, 2, 3) + b"\xbe\xde\x00\x05" + b"\x00" * 4,  # ext too long
    struct.pack("!BBHII", 0xA0, 96, 1, 2, 3) + b"ab\x00",         # padding length 0
    struct.pack("!BBHII", 0xA0, 96, 1, 2, 3) + b"ab\x09",         # padding longer than payload
])
def test_malformed_headers_give_none(packet: bytes) -> None:
    assert payload_offset(packet) is None
    assert payload_bounds(packet) is None
    assert parse_header(packet) is None
    assert find_extension(packet, 1) is None
    assert audio_level(packet, 1) is None
    assert build_rtx(packet, 97, 5, 1) is None


def test_seq_helpers_wrap() -> None:
    assert seq_newer(0, 0xFFFF) and not seq_newer(0xFFFF, 0)
    assert not seq_newer(5, 5)
    assert seq_delta(2, 0xFFFE) == 4 and seq_delta(0xFFFE, 2) == -4
    assert seq_delta(0x8000, 0) == -0x8000


# ---- header extensions ----

def test_one_byte_extension_found_by_id() -> None:
    p = rtp(1, 2, 3, ext=one_byte_ext((3, b"\x01\x02\x03"), (1, b"\x9e")))
    assert find_extension(p, 3) == b"\x01\x02\x03"
    assert find_extension(p, 1) == b"\x9e"
    assert find_extension(p, 2) is None


def test_one_byte_extension_skips_padding_bytes() -> None:
    p = rtp(1, 2, 3, ext=one_byte_ext((4, b"ab"), (1, b"\x05"), pad_between=2))
    assert find_extension(p, 1) == b"\x05"


def test_one_byte_extension_id15_stops_parsing() -> None:
    p = rtp(1, 2, 3, ext=(0xBEDE, b"\xf0\x00\x10\x05"))
    assert find_extension(p, 1) is None


def test_one_byte_extension_element_running_past_block_is_none() -> None:
    p = rtp(1, 2, 3, ext=(0xBEDE, b"\x1f\x01\x02\x03"))  # id 1, 16 bytes announced
    assert find_extension(p, 1) is None


def test_two_byte_extension_found_by_id() -> None:
    p = rtp(1, 2, 3, ext=two_byte_ext((20, b""), (1, b"\x7f"), (33, b"x" * 20)))
    assert find_extension(p, 1) == b"\x7f"
    assert find_extension(p, 33) == b"x" * 20
    assert find_extension(p, 20) == b""
    assert audio_level(p, 20) is None  # empty: no level


def test_two_byte_extension_truncated_is_none() -> None:
    p = rtp(1, 2, 3, ext=(0x1000, b"\x01\x09ab"))
    assert find_extension(p, 1) is None


def test_unknown_extension_profile_is_none() -> None:
    assert find_extension(rtp(1, 2, 3, ext=(0xABCD, b"\x10\x05\x00\x00")), 1) is None


def test_audio_level_rfc6464() -> None:
    loud_voice = rtp(1, 2, 3, ext=one_byte_ext((1, bytes([0x80 | 12]))))
    silence = rtp(1, 2, 3, ext=one_byte_ext((1, bytes([127]))))
    assert audio_level(loud_voice, 1) == (12, True)
    assert audio_level(silence, 1) == (127, False)
    assert audio_level(rtp(1, 2, 3), 1) is None


# ---- RTX ----

def test_rtx_round_trip_keeps_header_extensions_and_drops_padding() -> None:
    original = rtp(0xFFFE, 9000, 0xAAAA, b"frame", marker=True, pt=96,
                   ext=one_byte_ext((1, b"\x10")), padding=3)
    rtx = build_rtx(original, rtx_pt=97, rtx_ssrc=0xBBBB, rtx_seq=7)
    assert rtx is not None
    h = parse_header(rtx)
    assert h is not None
    assert (h.payload_type, h.seq, h.ssrc, h.timestamp, h.marker) == (97, 7, 0xBBBB, 9000, True)
    assert rtx[h.payload_start:h.payload_end] == b"\xff\xfeframe"
    back = unwrap_rtx(rtx, original_pt=96, original_ssrc=0xAAAA)
    assert back == rtp(0xFFFE, 9000, 0xAAAA, b"frame", marker=True, pt=96, ext=one_byte_ext((1, b"\x10")))


def test_unwrap_rtx_without_osn_is_none() -> None:
    assert unwrap_rtx(rtp(1, 2, 3, b"x"), 96, 1) is None


# ---- SlotRewriter ----

def test_first_source_passes_through_with_new_ssrc() -> None:
    r = SlotRewriter(out_ssrc=7)
    assert header(r.rewrite(rtp(100, 5000, 1))) == (100, 5000, 7)
    assert r.rewrite(rtp(101, 8000, 1, b"pay"))[12:] == b"pay"


def test_switch_keeps_seq_and_ts_continuous_across_wraparound() -> None:
    r = SlotRewriter(out_ssrc=7, ts_gap=3000)
    r.rewrite(rtp(0xFFFF, 0xFFFFF000, 1))
    r.switch()
    assert header(r.rewrite(rtp(500, 123, 2))) == (0, (0xFFFFF000 + 3000) & 0xFFFFFFFF, 7)
    assert header(r.rewrite(rtp(501, 3123, 2))) == (1, (0xFFFFF000 + 6000) & 0xFFFFFFFF, 7)


def test_reordered_old_packet_does_not_move_the_anchor() -> None:
    r = SlotRewriter(out_ssrc=7)
    r.rewrite(rtp(10, 100, 1))
    r.rewrite(rtp(12, 300, 1))
    r.rewrite(rtp(11, 200, 1))  # late
    r.switch()
    assert header(r.rewrite(rtp(0, 0, 2)))[0] == 13


def test_source_wraps_its_own_seq_and_ts_within_an_epoch() -> None:
    r = SlotRewriter(out_ssrc=7)
    r.rewrite(rtp(10, 1000, 1))
    r.switch()
    outs = [header(r.rewrite(rtp(s & 0xFFFF, t & 0xFFFFFFFF, 2)))
            for s, t in [(0xFFFE, 0xFFFFFA00), (0xFFFF, 0xFFFFFD00), (0x10000, 0x100000000), (0x10001, 0x100000300)]]
    assert [o[0] for o in outs] == [11, 12, 13, 14]
    assert [o[1] for o in outs] == [4000, 4768, 5536, 6304]
    assert r.last_seq == 14


def test_many_switches_stay_continuous() -> None:
    r = SlotRewriter(out_ssrc=9, ts_gap=960, clock_rate=48000)
    expected_seq: int | None = None
    last_ts = 0
    for k in range(10):
        r.switch()
        base_seq, base_ts = (k * 7919) & 0xFFFF, (k * 0x9E3779B9) & 0xFFFFFFFF
        for i in range(5):
            seq, ts, ssrc = header(r.rewrite(rtp((base_seq + i) & 0xFFFF, (base_ts + 960 * i) & 0xFFFFFFFF, 100 + k)))
            assert ssrc == 9
            if expected_seq is not None:
                assert seq == expected_seq
                assert (ts - last_ts) & 0xFFFFFFFF == 960
            expected_seq = (seq + 1) & 0xFFFF
            last_ts = ts


def test_ssrc_change_without_switch_reanchors() -> None:
    r = SlotRewriter(out_ssrc=7, ts_gap=3000)
    r.rewrite(rtp(100, 5000, 1))
    assert header(r.rewrite(rtp(40000, 7, 2))) == (101, 8000, 7)
    assert r.source_ssrc == 2 and r.switches == 1


def test_switch_after_pause_advances_ts_by_elapsed_time() -> None:
    r = SlotRewriter(out_ssrc=7, ts_gap=960, clock_rate=48000)
    r.rewrite(rtp(1, 48000, 1), now=10.0)
    r.switch()
    assert header(r.rewrite(rtp(77, 5, 2), now=12.5))[1] == 48000 + 120000
    r.switch()  # quick switch: the minimum gap applies
    assert header(r.rewrite(rtp(9, 5, 3), now=12.5))[1] == 48000 + 120000 + 960


def test_switch_without_any_packet_before_is_passthrough() -> None:
    r = SlotRewriter(out_ssrc=7)
    r.switch()
    assert header(r.rewrite(rtp(1234, 5678, 3))) == (1234, 5678, 7)


def test_offsets_exposed_for_sr_translation() -> None:
    r = SlotRewriter(out_ssrc=7, ts_gap=3000)
    r.rewrite(rtp(100, 5000, 1))
    r.switch()
    r.rewrite(rtp(10, 1_000_000, 2))
    assert (1_000_000 + r.ts_offset) & 0xFFFFFFFF == 8000
    assert (10 + r.seq_offset) & 0xFFFF == 101
    assert r.last_ts == 8000


def test_rewrite_in_place_returns_out_seq_and_keeps_payload() -> None:
    r = SlotRewriter(out_ssrc=0xCAFE)
    buf = bytearray(rtp(5, 6, 1, b"hello", marker=True, ext=one_byte_ext((1, b"\x05"))))
    assert r.rewrite_in_place(buf) == 5
    h = parse_header(buf)
    assert h is not None and h.ssrc == 0xCAFE and h.marker and buf[h.payload_start:] == b"hello"


def test_short_packet_raises_value_error() -> None:
    r = SlotRewriter(out_ssrc=7)
    with pytest.raises(ValueError):
        r.rewrite(b"\x80\x60\x00")
    with pytest.raises(ValueError):
        r.rewrite_in_place(bytearray(5))


def test_source_seq_translates_nacks_in_current_epoch_only() -> None:
    r = SlotRewriter(out_ssrc=7)
    for s in (0xFFF0, 0xFFF1, 0xFFF2):
        r.rewrite(rtp(s, 0, 1))
    r.switch()
    for s in range(300, 310):
        r.rewrite(rtp(s, 0, 2))
    # outgoing 0xFFF3.. 0xFFFC carry source 300..309
    assert r.source_seq(0xFFF3) == 300
    assert r.source_seq(0xFFFC) == 309
    assert r.source_seq(0xFFF2) is None  # the previous source's packet
    assert r.source_seq(0xFFFD) is None  # not sent yet
    assert SlotRewriter(out_ssrc=1).source_seq(0) is None


def test_source_seq_across_outgoing_wrap() -> None:
    r = SlotRewriter(out_ssrc=7)
    r.rewrite(rtp(0xFFFD, 0, 1))
    r.switch()
    for s in range(1000, 1006):
        r.rewrite(rtp(s, 0, 2))  # out 0xFFFE, 0xFFFF, 0, 1, 2, 3
    assert r.source_seq(0xFFFE) == 1000
    assert r.source_seq(0) == 1002
    assert r.source_seq(3) == 1005
    assert r.source_seq(4) is None


def test_retransmit_uses_epoch_offsets_without_moving_anchor() -> None:
    r = SlotRewriter(out_ssrc=7, ts_gap=3000)
    r.rewrite(rtp(100, 5000, 1))
    r.switch()
    cached = rtp(20, 900, 2, b"lost")
    r.rewrite(cached)
    r.rewrite(rtp(21, 900, 2))
    again = r.retransmit(cached)
    assert again is not None and header(again) == (101, 8000, 7) and again[12:] == b"lost"
    r.switch()  # pending switch: retransmissions of the current epoch still translate
    assert r.retransmit(cached) == again
    assert header(r.rewrite(rtp(5, 5, 3)))[0] == 103
    assert r.retransmit(cached) is None        # source 2 no longer feeds the slot
    assert r.retransmit(rtp(6, 5, 3)) is None  # not sent yet
    assert r.retransmit(b"\x80") is None


def test_audio_level_with_csrcs_two_byte_form_and_truncation() -> None:
    p = rtp(1, 2, 3, csrcs=(9,), ext=one_byte_ext((2, b"ab"), (1, bytes([0x80 | 44]))))
    assert audio_level(p, 1) == (44, True)
    assert audio_level(rtp(1, 2, 3, ext=two_byte_ext((1, bytes([33])))), 1) == (33, False)
    assert audio_level(rtp(1, 2, 3, ext=(0xBEDE, b"\x00\x00\x00\x00")), 1) is None
    cut = rtp(1, 2, 3, ext=one_byte_ext((1, b"\x05")))[:16]  # extension block cut
    assert audio_level(cut, 1) is None


def test_hide_gap_keeps_seq_contiguous_and_source_timing() -> None:
    r = SlotRewriter(out_ssrc=7, ts_gap=3000)
    r.rewrite(rtp(100, 5000, 1))
    r.switch()
    r.rewrite(rtp(10, 1000, 2), now=1.0)   # out (101, 8000)
    r.hide_gap()                            # 50 packets of source 2 dropped for this subscriber
    assert header(r.rewrite(rtp(61, 1000 + 90000, 2), now=2.0)) == (102, 8000 + 90000, 7)
    assert header(r.rewrite(rtp(62, 1000 + 93000, 2))) == (103, 8000 + 93000, 7)
    assert r.switches == 1
    assert r.source_seq(102) == 61 and r.source_seq(101) is None


def test_hide_gap_then_other_source_reanchors_fully() -> None:
    r = SlotRewriter(out_ssrc=7, ts_gap=3000)
    r.rewrite(rtp(100, 5000, 1))
    r.hide_gap()
    assert header(r.rewrite(rtp(7, 777, 2))) == (101, 8000, 7)
    r.hide_gap()
    r.switch()  # a real switch wins over a pending hide_gap
    assert header(r.rewrite(rtp(900, 10, 2))) == (102, 11000, 7)


def test_source_seq_in_an_epoch_longer_than_the_seq_space() -> None:
    r = SlotRewriter(out_ssrc=7)
    r.rewrite(rtp(0, 0, 1))
    r.switch()
    for i in range(70000):
        r.rewrite(rtp((5000 + i) & 0xFFFF, i * 3000, 2))
    last = r.last_seq
    assert last is not None
    for back in (0, 1, 100, 1000, 5000):
        out = (last - back) & 0xFFFF
        assert r.source_seq(out) == (5000 + 69999 - back) & 0xFFFF
    assert r.source_seq((last + 1) & 0xFFFF) is None
    assert r.source_seq((last - 0x7000) & 0xFFFF) is None


# ---- writing header extensions ----

def test_abs_send_time_fixed_point_wraps_every_64_s() -> None:
    assert abs_send_time(0.0) == 0
    assert abs_send_time(1.5) == 3 << 17
    assert abs_send_time(64.25) == abs_send_time(0.25) == 1 << 16


def test_extension_block_and_with_extension_block_round_trip() -> None:
    block = extension_block([(3, b"\x01\x02\x03"), (1, b"\x7f")])
    assert block[:2] == b"\xbe\xde" and len(block) % 4 == 0
    plain = rtp(9, 8, 7, b"payload", marker=True, csrcs=(5,), padding=2)
    out = with_extension_block(plain, block)
    assert out is not None
    h = parse_header(out)
    assert h is not None and h.csrcs == (5,) and h.marker and h.seq == 9
    assert out[h.payload_start:h.payload_end] == b"payload"
    assert find_extension(out, 3) == b"\x01\x02\x03" and audio_level(out, 1) == (127, False)


def test_with_extension_block_replaces_an_existing_block() -> None:
    old = rtp(1, 2, 3, b"data", ext=two_byte_ext((9, b"abcdef")))
    out = with_extension_block(old, extension_block([(2, b"\x10\x20\x30")]))
    assert out is not None
    assert find_extension(out, 9) is None and find_extension(out, 2) == b"\x10\x20\x30"
    assert out[payload_offset(out) or 0:] == b"data"
    assert with_extension_block(b"\x80\x60", b"") is None


def test_set_extension_in_place() -> None:
    buf = with_extension_block(rtp(1, 2, 3, b"d"), extension_block([(1, b"\x05"), (4, b"\x00\x00\x00")]))
    assert buf is not None
    assert set_extension(buf, 4, abs_send_time(2.0).to_bytes(3, "big"))
    assert find_extension(buf, 4) == (2 << 18).to_bytes(3, "big")
    assert not set_extension(buf, 4, b"\x00")        # other length
    assert not set_extension(buf, 6, b"\x00")        # absent
    assert not set_extension(bytearray(rtp(1, 2, 3)), 1, b"\x00")


def test_extension_block_rejects_bad_elements() -> None:
    with pytest.raises(ValueError):
        extension_block([(15, b"x")])
    with pytest.raises(ValueError):
        extension_block([(1, b"")])
    with pytest.raises(ValueError):
        extension_block([(1, b"x" * 17)])


# ---- robustness: random input never raises, random switches stay continuous ----

def test_random_bytes_never_raise() -> None:
    import random
    rnd = random.Random(3)
    for _ in range(3000):
        data = bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(0, 40)))
        if data:
            data = bytes([0x80 | (data[0] & 0x3F)]) + data[1:]  # mostly version 2
        payload_offset(data)
        payload_bounds(data)
        parse_header(data)
        find_extension(data, rnd.randrange(0, 16))
        audio_level(data, 1)
        build_rtx(data, 97, 1, 2)
        unwrap_rtx(data, 96, 1)
        with_extension_block(data, b"")
        set_extension(bytearray(data), 1, b"\x00")
        SlotRewriter(out_ssrc=1).retransmit(data)


def test_random_switches_keep_outgoing_stream_continuous() -> None:
    import random
    rnd = random.Random(7)
    r = SlotRewriter(out_ssrc=42, ts_gap=3000)
    prev: tuple[int, int] | None = None
    for _ in range(200):
        r.switch()
        ssrc = rnd.getrandbits(32)
        seq, ts = rnd.getrandbits(16), rnd.getrandbits(32)
        for i in range(rnd.randrange(1, 30)):
            out_seq, out_ts, out_ssrc = header(r.rewrite(rtp(seq, ts, ssrc)))
            assert out_ssrc == 42
            if prev is not None:
                assert out_seq == (prev[0] + 1) & 0xFFFF
                step = (out_ts - prev[1]) & 0xFFFFFFFF
                assert step == 3000 if i == 0 else step in (0, 3000)  # a switch: one frame later
            prev = (out_seq, out_ts)
            seq, ts = (seq + 1) & 0xFFFF, (ts + rnd.choice((0, 3000))) & 0xFFFFFFFF


def test_copy_is_an_independent_snapshot_of_the_epoch() -> None:
    # the forwarder keeps copy.copy(rewriter) of the epoch before a switch to answer late NACKs
    import copy
    r = SlotRewriter(out_ssrc=7)
    r.rewrite(rtp(100, 5000, 1))
    r.rewrite(rtp(101, 8000, 1))
    kept = copy.copy(r)
    r.switch()
    r.rewrite(rtp(9, 9, 2))
    assert kept.source_seq(101) == 101 and r.source_seq(101) is None
    again = kept.retransmit(rtp(101, 8000, 1, b"y"))
    assert again is not None and header(again) == (101, 8000, 7)
    assert header(r.rewrite(rtp(10, 3009, 2)))[0] == 103


def test_map_on_parsed_fields_is_rewrite_in_place() -> None:
    """The forwarder parses a packet once and writes each slot's header itself (``map``); the
    mapping must be rewrite_in_place's across switches, reordering, wrap-around and pauses."""
    steps: list[tuple[str, int, int, int, float]] = [
        ("pkt", 0xFFFE, 0xFFFFF000, 1, 0.00), ("pkt", 0xFFFF, 0xFFFFF000 + 3000, 1, 0.03),
        ("pkt", 0, 3000 - 0x1000 + 3000, 1, 0.06), ("pkt", 0xFFFF, 0xFFFFF000 + 3000, 1, 0.07),  # late
        ("switch", 0, 0, 0, 0.0), ("pkt", 500, 123, 2, 0.50), ("pkt", 501, 3123, 2, 0.53),
        ("pkt", 40, 9000, 3, 0.56),                                      # another SSRC: re-anchors
        ("hide", 0, 0, 0, 0.0), ("pkt", 45, 24000, 3, 0.70), ("pkt", 46, 27000, 3, 0.73),
    ]
    by_buffer, by_fields = SlotRewriter(out_ssrc=7, clock_rate=90000), SlotRewriter(out_ssrc=7, clock_rate=90000)
    for kind, seq, ts, ssrc, now in steps:
        if kind == "switch":
            by_buffer.switch()
            by_fields.switch()
            continue
        if kind == "hide":
            by_buffer.hide_gap()
            by_fields.hide_gap()
            continue
        buf = bytearray(rtp(seq, ts, ssrc))
        out_seq = by_buffer.rewrite_in_place(buf, now)
        assert by_fields.map(seq, ts, ssrc, now) == (out_seq, header(buf)[1])
        assert (by_fields.last_seq, by_fields.last_ts, by_fields.ts_offset) == \
            (by_buffer.last_seq, by_buffer.last_ts, by_buffer.ts_offset)
    assert by_fields.source_seq(by_fields.last_seq) == by_buffer.source_seq(by_buffer.last_seq)  # type: ignore[arg-type]
