"""The pure cores together, the way the forwarder chains them (no sockets): a slot switching
between two VP8 sources, a subscriber NACKing what it lost, answered from the source's packet
cache byte for byte as first sent, RTX round trip, and the RTCP that goes with it."""

from __future__ import annotations

import struct

from media.packet_cache import PacketCache, ReceiveStats
from media.rtcp import Nack, build_nack, parse_compound
from media.rtp_rewrite import SlotRewriter, build_rtx, unwrap_rtx
from media.vp8 import Vp8Rewriter, descriptor_layout, is_keyframe

KEY = b"\x10\x02\x00\x9d\x01\x2a\x80\x02\x68\x01" + b"\x00" * 20
DELTA = b"\x31\x02\x00" + b"\x00" * 27


def vp8_packet(seq: int, ts: int, ssrc: int, picture_id: int, key: bool = False) -> bytes:
    descriptor = bytes([0x90, 0x80]) + struct.pack("!H", 0x8000 | picture_id)
    return struct.pack("!BBHII", 0x80, 96, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + descriptor + (KEY if key else DELTA)


class Slot:
    def __init__(self) -> None:
        self.rtp = SlotRewriter(out_ssrc=0x5107, clock_rate=90000)
        self.vp8 = Vp8Rewriter()
        self.source = 0
        self.waiting = False
        self.sent: dict[int, bytes] = {}

    def switch(self, source: int) -> None:
        self.source = source
        self.rtp.switch()
        self.vp8.switch()
        self.waiting = True

    def forward(self, packet: bytes) -> None:
        layout = descriptor_layout(packet, 12)
        assert layout is not None
        if self.waiting:
            if not is_keyframe(packet, 12):
                return
            self.waiting = False
        buf = bytearray(packet)
        out_seq = self.rtp.rewrite_in_place(buf)
        out = self.vp8.rewrite(buf, 12, self.source, layout)
        assert out is not None
        self.sent[out_seq] = bytes(out)

    def answer_nack(self, seqs: tuple[int, ...], caches: dict[int, PacketCache]) -> list[bytes]:
        answers = []
        for out_seq in seqs:
            src_seq = self.rtp.source_seq(out_seq)
            cached = caches[self.source].get(src_seq) if src_seq is not None else None
            if cached is None:
                continue
            again = self.rtp.retransmit(cached)
            assert again is not None
            out = self.vp8.retransmit(bytearray(again), 12)
            assert out is not None
            answers.append(bytes(out))
        return answers


def test_nack_after_a_switch_is_answered_byte_for_byte() -> None:
    caches = {1: PacketCache(256), 2: PacketCache(256)}
    slot = Slot()
    slot.switch(1)
    for i in range(10):
        p = vp8_packet(100 + i, 3000 * i, 1, 500 + i, key=(i == 0))
        caches[1].put(p)
        slot.forward(p)
    slot.switch(2)
    for i in range(20):  # source 2 wraps its seq and PictureID; its keyframe comes at i = 3
        p = vp8_packet(0xFFF8 + i, 0xFFFFF000 + 3000 * i, 2, (0x7FFA + i) & 0x7FFF, key=(i == 3))
        caches[2].put(p)
        slot.forward(p)
    sent = slot.sent
    assert len(sent) == 10 + 17
    out_seqs = sorted(sent, key=lambda s: (s - 100) & 0xFFFF)
    assert out_seqs == [(100 + i) & 0xFFFF for i in range(27)]  # continuous across the switch
    # the subscriber lost three packets of source 2 and one of source 1 (answered: not any more)
    lost = [out_seqs[4], out_seqs[12], out_seqs[13], out_seqs[26]]
    (nack,) = parse_compound(build_nack(0xAAAA, 0x5107, lost))
    assert isinstance(nack, Nack) and nack.media_ssrc == 0x5107
    answers = slot.answer_nack(nack.seqs, caches)
    assert answers == [sent[s] for s in lost[1:]]


def test_rtx_round_trip_restores_the_forwarded_packet() -> None:
    slot = Slot()
    slot.switch(1)
    p = vp8_packet(7, 0, 1, 9, key=True)
    slot.forward(p)
    (out_seq, original), = slot.sent.items()
    rtx = build_rtx(original, rtx_pt=97, rtx_ssrc=0x5108, rtx_seq=1)
    assert rtx is not None
    assert unwrap_rtx(rtx, original_pt=96, original_ssrc=0x5107) == original


def test_upstream_losses_become_a_nack_to_the_publisher() -> None:
    stats = ReceiveStats(90000, max_nack_retries=2)
    for i, seq in enumerate([0xFFFD, 0xFFFE, 1, 2, 5]):
        stats.on_packet(seq, 3000 * i, 0.03 * i)
    seqs = stats.nacks_due(0.2, retry_interval=0.05)
    (nack,) = parse_compound(build_nack(0x1, 0x2, seqs))
    assert isinstance(nack, Nack) and nack.seqs == (0xFFFF, 0, 3, 4)
    assert stats.nacks_due(0.3, 0.05) == [0xFFFF, 0, 3, 4]
    assert stats.nacks_due(0.4, 0.05) == []  # retry limit reached
