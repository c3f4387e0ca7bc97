from __future__ import annotations

import struct

import pytest

from media.packet_cache import PacketCache, ReceiveStats
from media.rtcp import ReportBlock, build_rr, ntp_from_unix, ntp_middle, parse_compound


def rtp(seq: int, ts: int = 0, payload: bytes = b"p") -> bytes:
    return struct.pack("!BBHII", 0x80, 96, seq & 0xFFFF, ts & 0xFFFFFFFF, 1) + payload


# ---- PacketCache ----

def test_put_get_by_seq() -> None:
    c = PacketCache(size=8)
    for s in range(100, 105):
        assert c.put(rtp(s))
    assert c.get(102) == rtp(102)
    assert c.get(99) is None and c.get(105) is None
    assert len(c) == 5 and c.newest == 104


def test_bounded_by_count() -> None:
    c = PacketCache(size=16)
    for s in range(1000):
        c.put(rtp(s))
    assert len(c) == 16
    assert c.get(983) is None
    assert c.get(984) == rtp(984) and c.get(999) == rtp(999)


def test_wraps_around_16_bits() -> None:
    c = PacketCache(size=8)
    for s in range(0xFFFC, 0x10004):
        c.put(rtp(s))
    assert c.newest == 3
    assert c.get(0xFFFC) == rtp(0xFFFC)
    assert c.get(0xFFFF) == rtp(0xFFFF) and c.get(0) == rtp(0) and c.get(3) == rtp(3)
    assert c.get(0xFFFB) is None


def test_stale_slot_with_same_index_is_not_returned_after_a_jump() -> None:
    c = PacketCache(size=8)
    c.put(rtp(10))
    c.put(rtp(2000))  # the stream jumped far ahead
    assert c.get(10) is None
    assert c.get(2000) == rtp(2000)


def test_same_seq_one_full_cycle_later_is_not_confused() -> None:
    c = PacketCache(size=8)
    c.put(rtp(5, payload=b"old"))
    for s in range(6, 5 + 0x8000, 997):
        c.put(rtp(s))
    c.put(rtp(5 + 0x8000))
    for s in range(5 + 0x8000, 5 + 0x10000, 997):
        c.put(rtp(s))
    assert c.get(5) is None


def test_late_packet_within_window_is_stored_older_is_refused() -> None:
    c = PacketCache(size=8)
    c.put(rtp(20))
    assert c.put(rtp(15))
    assert c.get(15) == rtp(15)
    assert not c.put(rtp(12))  # 8 behind: would evict 20
    assert c.get(20) == rtp(20)


def test_reordered_around_wrap() -> None:
    c = PacketCache(size=8)
    c.put(rtp(1))
    assert c.put(rtp(0xFFFE))
    assert c.newest == 1 and c.get(0xFFFE) == rtp(0xFFFE)


def test_short_packet_and_bad_sizes() -> None:
    c = PacketCache(size=8)
    assert not c.put(b"\x80\x60")
    assert c.get(0) is None
    for size in (0, 3, 100, 65536):
        with pytest.raises(ValueError):
            PacketCache(size=size)


def test_clear() -> None:
    c = PacketCache(size=8)
    c.put(rtp(1))
    c.clear()
    assert c.get(1) is None and len(c) == 0 and c.newest is None


# ---- ReceiveStats: losses and NACKs ----

def feed(stats: ReceiveStats, seqs: list[int], start: float = 0.0, step: float = 0.01, ts_step: int = 900) -> float:
    t = start
    for s in seqs:
        stats.on_packet(s & 0xFFFF, (s * ts_step) & 0xFFFFFFFF, t)
        t += step
    return t


def test_no_loss() -> None:
    st = ReceiveStats(90000)
    feed(st, list(range(100)))
    assert st.missing() == [] and st.nacks_due(10.0, 0.05) == []
    block = st.take_report(7, 1.0)
    assert (block.fraction_lost, block.packets_lost, block.highest_seq) == (0, 0, 99)


def test_gap_is_missing_and_nacked_with_retry_limit() -> None:
    st = ReceiveStats(90000, max_nack_retries=3)
    feed(st, [1, 2, 5, 6])
    assert st.missing() == [3, 4]
    assert st.nacks_due(1.0, retry_interval=0.1) == [3, 4]
    assert st.nacks_due(1.05, retry_interval=0.1) == []       # not due again yet
    assert st.nacks_due(1.1, retry_interval=0.1) == [3, 4]
    st.on_packet(3, 2700, 1.12)                                # retransmission arrives
    assert st.missing() == [4]
    assert st.nacks_due(1.25, retry_interval=0.1) == [4]
    assert st.nacks_due(1.4, retry_interval=0.1) == []         # 3 NACKs sent: give up
    assert st.nacks_due(5.0, retry_interval=0.1) == [] and st.missing() == []


def test_missing_across_wrap() -> None:
    st = ReceiveStats(48000)
    feed(st, [0xFFFD, 0xFFFE, 1, 2])
    assert st.missing() == [0xFFFF, 0]
    assert st.nacks_due(1.0, 0.1) == [0xFFFF, 0]
    assert st.highest_ext_seq == 0x10002


def test_missing_set_is_bounded() -> None:
    st = ReceiveStats(90000, max_missing=10)
    feed(st, [0, 500])
    assert st.missing() == list(range(490, 500))


def test_old_missing_entries_age_out() -> None:
    st = ReceiveStats(90000, max_age=50)
    feed(st, [0, 2])
    feed(st, list(range(3, 100)), start=1.0)
    assert st.missing() == []
    assert st.nacks_due(5.0, 0.1) == []


def test_duplicates_are_not_counted() -> None:
    st = ReceiveStats(90000)
    feed(st, [1, 2, 2, 3, 1])
    assert st.received == 3 and st.duplicates == 2
    assert st.take_report(1, 1.0).packets_lost == 0


def test_stray_packet_far_ahead_does_not_reset() -> None:
    st = ReceiveStats(90000)
    feed(st, list(range(10, 20)))
    st.on_packet(40000, 0, 1.0)
    feed(st, [20, 21], start=1.01)
    assert st.highest_ext_seq == 21 and st.missing() == []
    assert st.received == 12


def test_restart_confirmed_by_two_sequential_packets() -> None:
    st = ReceiveStats(90000)
    feed(st, list(range(10, 20)))
    feed(st, [40000, 40001, 40002], start=1.0)
    assert st.highest_ext_seq == 40002
    assert st.expected == 2 and st.received == 2


# ---- ReceiveStats: report blocks ----

def test_report_fraction_and_cumulative_loss_per_interval() -> None:
    st = ReceiveStats(90000)
    feed(st, [s for s in range(0, 100) if s % 4 != 1])        # 25 of 100 lost
    b1 = st.take_report(0xABC, 1.0)
    assert b1.ssrc == 0xABC and b1.fraction_lost == 64 and b1.packets_lost == 25
    assert st.loss_fraction == 0.25
    feed(st, list(range(100, 200)), start=2.0)                # clean interval
    b2 = st.take_report(0xABC, 3.0)
    assert b2.fraction_lost == 0 and b2.packets_lost == 25 and b2.highest_seq == 199
    assert st.loss_fraction == 0.0


def test_recovered_packets_reduce_loss() -> None:
    st = ReceiveStats(90000)
    feed(st, [0, 1, 3, 4])
    st.on_packet(2, 1800, 0.5)
    assert st.take_report(1, 1.0).packets_lost == 0


def test_jitter_zero_for_perfect_pacing_and_grows_with_variation() -> None:
    steady = ReceiveStats(90000)
    feed(steady, list(range(50)), step=0.01, ts_step=900)
    assert steady.jitter == 0
    jittery = ReceiveStats(90000)
    for i in range(200):
        jittery.on_packet(i, i * 900, i * 0.01 + (0.005 if i % 2 else 0.0))
    assert 300 <= jittery.jitter <= 450  # ~|±450| per packet in 90 kHz units


def test_jitter_across_timestamp_wrap() -> None:
    st = ReceiveStats(90000)
    base = 0xFFFFFFFF - 5 * 900
    for i in range(20):
        st.on_packet(i, (base + i * 900) & 0xFFFFFFFF, 100.0 + i * 0.01)
    assert st.jitter == 0


def test_lsr_dlsr_from_sender_report() -> None:
    st = ReceiveStats(90000)
    feed(st, [1, 2, 3])
    assert st.take_report(1, 0.5).lsr == 0
    ntp = ntp_from_unix(1_700_000_000.0)
    st.on_sender_report(ntp, arrival=10.0)
    block = st.take_report(1, 10.5)
    assert block.lsr == ntp_middle(ntp) and block.dlsr == 32768


def test_report_block_serializes() -> None:
    st = ReceiveStats(90000)
    feed(st, [0, 2])
    block = st.take_report(5, 1.0)
    (rr,) = parse_compound(build_rr(99, [block]))
    assert rr.reports == (block,)  # type: ignore[union-attr]
    assert isinstance(block, ReportBlock)


def test_empty_stats_report() -> None:
    block = ReceiveStats(90000).take_report(1, 0.0)
    assert (block.fraction_lost, block.packets_lost, block.highest_seq, block.jitter) == (0, 0, 0, 0)


def test_random_arrival_orders_keep_counts_consistent() -> None:
    import random
    rnd = random.Random(4)
    for _ in range(50):
        st = ReceiveStats(90000, max_missing=2000, max_age=5000)
        start = rnd.getrandbits(16)
        seqs = [(start + i) & 0xFFFF for i in range(rnd.randrange(50, 400))]
        delivered = [s for s in seqs if rnd.random() > 0.1]
        for i in range(len(delivered) - 1):  # light reordering
            if rnd.random() < 0.05:
                delivered[i], delivered[i + 1] = delivered[i + 1], delivered[i]
        if delivered and delivered[0] != seqs[0]:
            delivered.insert(0, seqs[0])
        t = 0.0
        for s in delivered:
            st.on_packet(s, s * 900, t)
            t += 0.01
        got = set(delivered)
        newest = max(range(len(seqs)), key=lambda i: i if seqs[i] in got else -1)
        lost = {seqs[i] for i in range(newest + 1) if seqs[i] not in got}
        assert set(st.missing()) == lost
        assert st.take_report(1, t).packets_lost == len(lost)
