from __future__ import annotations

import struct

from media.rtp_rewrite import SlotRewriter


def rtp(seq: int, ts: int, ssrc: int, payload: bytes = b"x") -> bytes:
    return struct.pack("!BBHII", 0x80, 96, seq, ts, ssrc) + payload


def header(p: bytes) -> tuple[int, int, int]:
    return struct.unpack_from("!HII", p, 2)


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
