"""media._fastpath's SlotRewriter and Vp8Rewriter against the Python reference classes: the same
random packet sequences (reordering, losses, 16-bit wrap-arounds, source switches, pauses, 7- and
15-bit PictureIDs, TL0PICIDX, KEYIDX, truncated descriptors, retransmissions, copies) must give the
same results and the same visible state after every step."""

from __future__ import annotations

import copy
import random
import struct
from typing import Any

import pytest

from media import native
from media.rtp_rewrite import PySlotRewriter
from media.vp8 import PyVp8Rewriter

fastpath = native.fastpath
pytestmark = pytest.mark.skipif(fastpath is None, reason="media._fastpath is not built (no C compiler)")

SEEDS = range(12)


def packet(seq: int, ts: int, ssrc: int, payload: bytes = b"\x10\x00\x00") -> bytes:
    return struct.pack("!BBHII", 0x80, 96, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload


def slot_state(r: Any) -> tuple[Any, ...]:
    return (r.source_ssrc, r.seq_offset, r.ts_offset, r.last_seq, r.last_ts, r.switches, r.out_ssrc, r.ts_gap,
            r.clock_rate)


class _Stream:
    """One publisher's stream: mostly in order, sometimes reordered, lost, or jumping."""

    def __init__(self, rnd: random.Random, ssrc: int):
        self.rnd = rnd
        self.ssrc = ssrc
        self.seq = rnd.choice([rnd.randrange(65536), 65530, 0])
        self.ts = rnd.choice([rnd.randrange(1 << 32), 0xFFFFFF00])

    def next(self) -> tuple[int, int, int]:
        rnd = self.rnd
        roll = rnd.random()
        if roll < 0.08:                       # a late packet
            return (self.seq - rnd.randrange(1, 40)) & 0xFFFF, self.ts - 3000, self.ssrc
        if roll < 0.12:                       # losses
            self.seq += rnd.randrange(2, 30)
        elif roll < 0.13:                     # a long jump (a publisher restart)
            self.seq += rnd.randrange(0x4000, 0x9000)
        else:
            self.seq += 1
        self.ts += rnd.choice([0, 0, 3000, 960])
        self.seq &= 0xFFFF
        self.ts &= 0xFFFFFFFF
        return self.seq, self.ts, self.ssrc


@pytest.mark.parametrize("seed", SEEDS)
def test_slot_rewriter_matches_the_python_reference(seed: int) -> None:
    rnd = random.Random(seed)
    kwargs = rnd.choice([{}, {"ts_gap": 960, "clock_rate": 48000}, {"ts_gap": 3000, "clock_rate": 90000}])
    out_ssrc = rnd.randrange(1 << 32)
    ref, fast = PySlotRewriter(out_ssrc, **kwargs), fastpath.SlotRewriter(out_ssrc, **kwargs)
    streams = [_Stream(rnd, ssrc) for ssrc in rnd.sample(range(1, 1 << 32), 3)]
    current = streams[0]
    now = 100.0
    sent: list[bytes] = []
    for step in range(4000):
        roll = rnd.random()
        if roll < 0.02:
            current = rnd.choice(streams)
            ref.switch(), fast.switch()
        elif roll < 0.03:
            ref.hide_gap(), fast.hide_gap()
        elif roll < 0.04:
            current = rnd.choice(streams)      # another SSRC without switch(): re-anchors too
        elif roll < 0.06:
            out_seq = rnd.choice([rnd.randrange(65536), (ref.last_seq or 0) - rnd.randrange(50)]) & 0xFFFF
            assert fast.source_seq(out_seq) == ref.source_seq(out_seq), (seed, step)
        elif roll < 0.08 and sent:
            cached = rnd.choice(sent)
            assert fast.retransmit(cached) == ref.retransmit(cached), (seed, step)
        elif roll < 0.085:
            ref, fast = copy.copy(ref), copy.copy(fast)
        else:
            now += rnd.choice([0.0, 0.02, 0.033, 0.5, 3.0])
            when: float | None = None if rnd.random() < 0.1 else now
            seq, ts, ssrc = current.next()
            how = rnd.random()
            if how < 0.6:
                assert fast.map(seq, ts, ssrc, when) == ref.map(seq, ts, ssrc, when), (seed, step)
            elif how < 0.8:
                a, b = bytearray(packet(seq, ts, ssrc)), bytearray(packet(seq, ts, ssrc))
                assert fast.rewrite_in_place(a, when) == ref.rewrite_in_place(b, when), (seed, step)
                assert a == b
            else:
                data = packet(seq, ts, ssrc)
                assert fast.rewrite(data, now=when) == ref.rewrite(data, now=when), (seed, step)
            sent.append(packet(seq, ts, ssrc))
            del sent[:-200]
        assert slot_state(fast) == slot_state(ref), (seed, step)
    assert ref.switches > 10


def test_slot_rewriter_long_epochs_and_untimed_packets_match() -> None:
    ref, fast = PySlotRewriter(7), fastpath.SlotRewriter(7)
    # an epoch longer than the 16-bit reach of NACK translation: its start follows behind
    for r in (ref, fast):
        r.map(0, 0, 1, 1.0)
        r.switch()
    probes = range(0, 65536, 5)
    for seq in range(1, 0x4400):
        assert fast.map(seq, 3000 * seq, 2, 1.5) == ref.map(seq, 3000 * seq, 2, 1.5)
        if seq > 0x3F00 and seq % 16 == 0:
            assert [fast.source_seq(s) for s in probes] == [ref.source_seq(s) for s in probes], seq
    assert slot_state(fast) == slot_state(ref)
    # packets mapped without a time, then a switch with one: the gap is ts_gap, not "since 0"
    ref, fast = PySlotRewriter(7), fastpath.SlotRewriter(7)
    for r in (ref, fast):
        r.map(10, 1000, 1)
        r.switch()
    assert fast.map(500, 90_000, 2, 50.0) == ref.map(500, 90_000, 2, 50.0)
    assert slot_state(fast) == slot_state(ref)


def test_slot_rewriter_errors_and_attributes_match() -> None:
    for cls in (PySlotRewriter, fastpath.SlotRewriter):
        r = cls(7)
        with pytest.raises(ValueError, match="shorter than its fixed header"):
            r.rewrite_in_place(bytearray(11))
        with pytest.raises(ValueError):
            r.rewrite(b"\x80" * 11)
        assert r.retransmit(b"\x80" * 11) is None and r.source_seq(5) is None
        assert r.last_seq is None and r.last_ts is None and r.source_ssrc is None
        r.out_ssrc = 9
        assert r.rewrite(packet(1, 2, 3))[8:12] == struct.pack("!I", 9)
    with pytest.raises(OverflowError):
        fastpath.SlotRewriter(1 << 32)


def vp8_descriptor(rnd: random.Random, state: dict[str, int]) -> bytes:
    """A VP8 payload descriptor as browsers and encoders send them, advancing the stream's
    PictureID/TL0PICIDX/KEYIDX (sometimes out of order, sometimes truncated)."""
    kind = rnd.random()
    state["pid"] = (state["pid"] + rnd.choice([0, 1, 1, 1, 2, -3, 40])) & 0x7FFF
    if rnd.random() < 0.3:
        state["tl0"] = (state["tl0"] + 1) & 0xFF
    if rnd.random() < 0.05:
        state["key"] = (state["key"] + 1) & 0x1F
    b0 = 0x10 if rnd.random() < 0.3 else 0x00
    if kind < 0.05:
        return bytes([b0, 0x55])                               # no extension at all
    if kind < 0.08:
        return bytes([b0 | 0x80])                              # truncated
    x = 0
    out = b""
    if kind < 0.6 or rnd.random() < state["pid_mode"]:
        x |= 0x80
        if state["bits"] == 15:
            out += struct.pack("!H", 0x8000 | state["pid"])
        else:
            out += bytes([state["pid"] & 0x7F])
    if kind > 0.55 and rnd.random() < 0.6:
        x |= 0x40
        out += bytes([state["tl0"]])
    if kind > 0.7 and rnd.random() < 0.5:
        x |= 0x10 | (0x20 if rnd.random() < 0.5 else 0)
        out += bytes([(rnd.randrange(4) << 6) | state["key"]])
    return bytes([b0 | 0x80, x]) + out + b"\x9d" * rnd.randrange(0, 3)


def vp8_state(v: Any) -> tuple[Any, ...]:
    return v.last_picture_id, v.last_tl0picidx


@pytest.mark.parametrize("seed", SEEDS)
def test_vp8_rewriter_matches_the_python_reference(seed: int) -> None:
    from media.vp8 import descriptor_layout

    rnd = random.Random(seed)
    ref, fast = PyVp8Rewriter(), fastpath.Vp8Rewriter()
    streams = [{"ssrc": rnd.randrange(1, 1 << 32), "pid": rnd.randrange(0x8000), "tl0": rnd.randrange(256),
                "key": rnd.randrange(32), "bits": rnd.choice([15, 15, 7]), "pid_mode": rnd.random()}
               for _ in range(3)]
    current = streams[0]
    sent: list[bytes] = []
    for step in range(4000):
        roll = rnd.random()
        if roll < 0.03:
            current = rnd.choice(streams)
            if rnd.random() < 0.5:
                ref.switch(), fast.switch()
        elif roll < 0.035:
            ref, fast = copy.copy(ref), copy.copy(fast)
        elif roll < 0.07 and sent:
            data = rnd.choice(sent)
            a, b = bytearray(data), bytearray(data)
            ra, rb = fast.retransmit(a, 12), ref.retransmit(b, 12)
            assert (ra is None) == (rb is None) and (ra is None or bytes(ra) == bytes(rb)), (seed, step)
            assert (ra is a) == (rb is b)
        elif roll < 0.15:
            pid = current["pid"] if rnd.random() < 0.8 else rnd.randrange(0x8000)
            ssrc = rnd.choice([None, current["ssrc"], rnd.randrange(1 << 32)])
            assert fast.picture_id(pid, ssrc) == ref.picture_id(pid, ssrc), (seed, step)
        else:
            data = b"\x80" * 12 + vp8_descriptor(rnd, current) + b"payload"
            a, b = bytearray(data), bytearray(data)
            ssrc = current["ssrc"] if rnd.random() < 0.95 else None
            layout = descriptor_layout(data, 12) if rnd.random() < 0.5 else None
            ra = fast.rewrite(a, 12, ssrc, layout)
            rb = ref.rewrite(b, 12, ssrc, layout)
            assert (ra is None) == (rb is None), (seed, step, data.hex())
            if ra is not None:
                assert bytes(ra) == bytes(rb), (seed, step, data.hex())
                assert (ra is a) == (rb is b)
                sent.append(bytes(ra))
                del sent[:-100]
        assert vp8_state(fast) == vp8_state(ref), (seed, step)
    assert ref.last_picture_id is not None


def test_vp8_rewriter_refuses_what_python_refuses() -> None:
    for cls in (PyVp8Rewriter, fastpath.Vp8Rewriter):
        with pytest.raises(TypeError):
            cls().rewrite(b"\x90\x80\x80\x01abc", 0)                   # bytes: not rewritable in place
        with pytest.raises(IndexError):
            cls().rewrite(bytearray(b"\x90\x80\x80"), 0, None, (2, 15, -1, -1))   # a layout past the end
        assert cls().retransmit(bytearray(b"\x90\x80\x80\x01abc"), 0) is None  # no mapping yet
