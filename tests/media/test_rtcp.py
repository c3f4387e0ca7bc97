from __future__ import annotations

import struct

import pytest
from aiortc import rtp as aiortc_rtp  # an independent implementation, used as a reference only

from media.rtcp import (
    Bye,
    Fir,
    Nack,
    Pli,
    ReceiverReport,
    Remb,
    ReportBlock,
    RequestLimiter,
    SenderReport,
    build_bye,
    build_fir,
    build_nack,
    build_pli,
    build_remb,
    build_rr,
    build_sdes,
    build_sr,
    extrapolate_sr,
    nack_pairs,
    ntp_from_unix,
    ntp_middle,
    parse_compound,
    rtt_from_report,
    translate_nack,
    translate_sr,
    unix_from_ntp,
)
from media.rtp_rewrite import SlotRewriter
from tests.media.implementations import REWRITERS


@pytest.fixture(autouse=True, params=REWRITERS)
def implementation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test here runs on the Python rewriters and on media._fastpath's."""
    slot, vp8_rewriter = request.param
    monkeypatch.setitem(globals(), "SlotRewriter", slot)
    monkeypatch.setitem(globals(), "Vp8Rewriter", vp8_rewriter)


BLOCK = ReportBlock(ssrc=0x11223344, fraction_lost=25, packets_lost=-3, highest_seq=0x0001FFFF,
                    jitter=120, lsr=0xAABBCCDD, dlsr=65536)


# ---- round trips ----

def test_sr_round_trip_with_blocks() -> None:
    data = build_sr(0x01020304, 0xE1234567_89ABCDEF, 0xFFFFFFF0, 1000, 1_200_000, [BLOCK])
    assert parse_compound(data) == [SenderReport(0x01020304, 0xE1234567_89ABCDEF, 0xFFFFFFF0, 1000, 1_200_000, (BLOCK,))]


def test_rr_round_trip_and_split_over_31_blocks() -> None:
    assert parse_compound(build_rr(5)) == [ReceiverReport(5, ())]
    blocks = [BLOCK._replace(ssrc=i) for i in range(40)]
    packets = parse_compound(build_rr(9, blocks))
    assert [len(p.reports) for p in packets if isinstance(p, ReceiverReport)] == [31, 9]
    assert [b.ssrc for p in packets if isinstance(p, ReceiverReport) for b in p.reports] == list(range(40))


def test_feedback_round_trips() -> None:
    assert parse_compound(build_pli(1, 2)) == [Pli(1, 2)]
    assert parse_compound(build_fir(1, 0xDEAD, 300)) == [Fir(1, ((0xDEAD, 300 & 0xFF),))]
    assert parse_compound(build_nack(1, 2, [10, 11, 30])) == [Nack(1, 2, (10, 11, 30))]
    assert parse_compound(build_bye([7, 8])) == [Bye((7, 8))]


@pytest.mark.parametrize("bitrate", [0, 1, 150_000, 262_143, 262_144, 3_000_000, 123_456_789])
def test_remb_round_trip(bitrate: int) -> None:
    (remb,) = parse_compound(build_remb(3, bitrate, [0xA, 0xB]))
    assert isinstance(remb, Remb)
    assert remb.ssrcs == (0xA, 0xB) and remb.sender_ssrc == 3
    assert remb.bitrate <= bitrate and bitrate - remb.bitrate < max(1, bitrate >> 17)


def test_compound_with_sdes_skipped() -> None:
    data = build_rr(1, [BLOCK]) + build_sdes(1, "site-a@lienthong") + build_pli(1, 2) + build_remb(1, 500_000, [2])
    kinds = [type(p) for p in parse_compound(data)]
    assert kinds == [ReceiverReport, Pli, Remb]


# ---- interop with aiortc's serializer and parser ----

def test_parses_aiortc_built_packets() -> None:
    sr = aiortc_rtp.RtcpSrPacket(ssrc=9, sender_info=aiortc_rtp.RtcpSenderInfo(
        ntp_timestamp=0x1122334455667788, rtp_timestamp=4000, packet_count=5, octet_count=600),
        reports=[aiortc_rtp.RtcpReceiverInfo(ssrc=4, fraction_lost=2, packets_lost=7, highest_sequence=70000,
                                             jitter=3, lsr=1, dlsr=2)])
    nack = aiortc_rtp.RtcpRtpfbPacket(fmt=1, ssrc=9, media_ssrc=4, lost=[100, 101, 117, 200])
    pli = aiortc_rtp.RtcpPsfbPacket(fmt=1, ssrc=9, media_ssrc=4)
    remb = aiortc_rtp.RtcpPsfbPacket(fmt=15, ssrc=9, media_ssrc=0,
                                     fci=aiortc_rtp.pack_remb_fci(1_234_567, [4, 5]))
    data = bytes(sr) + bytes(nack) + bytes(pli) + bytes(remb)
    parsed = parse_compound(data)
    assert parsed[0] == SenderReport(9, 0x1122334455667788, 4000, 5, 600, (ReportBlock(4, 2, 7, 70000, 3, 1, 2),))
    assert parsed[1] == Nack(9, 4, (100, 101, 117, 200))
    assert parsed[2] == Pli(9, 4)
    assert isinstance(parsed[3], Remb)
    assert parsed[3].bitrate == aiortc_rtp.unpack_remb_fci(remb.fci)[0] and parsed[3].ssrcs == (4, 5)


def test_aiortc_parses_our_packets() -> None:
    data = (build_sr(1, 0x1122334455667788, 7, 8, 9, [BLOCK]) + build_sdes(1, "x")
            + build_nack(1, 2, [0xFFFE, 0xFFFF, 0, 5]) + build_remb(1, 2_000_000, [2]) + build_fir(1, 2, 3))
    parsed = aiortc_rtp.RtcpPacket.parse(data)
    sr, sdes, nack, remb, fir = parsed
    assert sr.sender_info.rtp_timestamp == 7 and sr.reports[0].packets_lost == -3
    assert [s & 0xFFFF for s in nack.lost] == [0xFFFE, 0xFFFF, 0, 5]
    assert aiortc_rtp.unpack_remb_fci(remb.fci) == (2_000_000 >> 3 << 3, [2])
    assert fir.fmt == 4


# ---- NACK packing ----

def test_nack_pairs_pack_runs_into_blp() -> None:
    assert nack_pairs([]) == []
    assert nack_pairs([5]) == [(5, 0)]
    assert nack_pairs([5, 6, 21]) == [(5, 0b1000000000000001)]
    assert nack_pairs([5, 22]) == [(5, 0), (22, 0)]
    assert nack_pairs([9, 7, 7, 8]) == [(7, 0b11)]


def test_nack_pairs_wrap_around() -> None:
    assert nack_pairs([1, 0xFFFF, 0, 0xFFFE]) == [(0xFFFE, 0b111)]
    got = parse_compound(build_nack(1, 2, [3, 0xFFF0, 0xFFFF]))
    assert got == [Nack(1, 2, (0xFFF0, 0xFFFF, 3))]


def test_nack_expansion_covers_many_seqs() -> None:
    seqs = list(range(65000, 65536)) + list(range(0, 400, 3))
    (nack,) = parse_compound(build_nack(1, 2, seqs))
    assert isinstance(nack, Nack) and list(nack.seqs) == seqs


def test_build_nack_empty() -> None:
    assert build_nack(1, 2, []) == b""


# ---- malformed input ----

@pytest.mark.parametrize("data", [
    b"",
    b"\x81\xc8",
    b"\x40\xc9\x00\x01\x00\x00\x00\x01",                       # version 1
    b"\x80\xc9\x00\x05\x00\x00\x00\x01",                       # length past the end
    b"\x81\xc9\x00\x01\x00\x00\x00\x01",                       # 1 report block announced, none present
    b"\x80\xc8\x00\x01\x00\x00\x00\x01",                       # SR too short
    b"\x81\xce\x00\x01\x00\x00\x00\x01",                       # PLI without media ssrc
    b"\x8f\xce\x00\x03\x00\x00\x00\x01\x00\x00\x00\x00REMX",   # AFB that is not REMB
    b"\x8f\xce\x00\x04\x00\x00\x00\x01\x00\x00\x00\x00REMB\x03\x00\x00\x01",  # 3 ssrcs missing
    b"\x8f\xcd\x00\x02\x00\x00\x00\x01\x00\x00\x00\x02",       # RTPFB FMT 15 (transport-cc): skipped
    b"\x82\xcb\x00\x01\x00\x00\x00\x01",                       # BYE with 2 ssrcs, 1 present
    b"\xa1\xc9\x00\x01\x00\x00\x00\x00",                       # padding count 0
    b"\xa1\xc9\x00\x01\x00\x00\x00\x09",                       # padding longer than the packet
])
def test_malformed_gives_nothing(data: bytes) -> None:
    assert parse_compound(data) == []


def test_malformed_tail_keeps_earlier_packets() -> None:
    assert parse_compound(build_pli(1, 2) + b"\x80\xc9\x00\x09") == [Pli(1, 2)]
    assert parse_compound(build_pli(1, 2) + b"\x00\x00") == [Pli(1, 2)]


def test_padded_nack_ignores_padding() -> None:
    body = struct.pack("!IIHH", 1, 2, 40, 0) + b"\x00\x00\x00\x04"
    data = struct.pack("!BBH", 0xA1, 205, len(body) // 4) + body
    assert parse_compound(data) == [Nack(1, 2, (40,))]


# ---- time, SR translation ----

def test_ntp_conversions() -> None:
    t = 1_764_000_000.25
    ntp = ntp_from_unix(t)
    assert ntp & 0xFFFFFFFF == 1 << 30
    assert abs(unix_from_ntp(ntp) - t) < 1e-6
    assert ntp_middle(0x11223344_55667788) == 0x33445566


def test_rtt_from_report() -> None:
    sent = ntp_from_unix(1000.0)
    block = BLOCK._replace(lsr=ntp_middle(sent), dlsr=int(0.010 * 65536))
    rtt = rtt_from_report(block, ntp_from_unix(1000.050))
    assert rtt is not None and abs(rtt - 0.040) < 0.001
    assert rtt_from_report(block._replace(lsr=0), ntp_from_unix(1000.05)) is None
    assert rtt_from_report(block, ntp_from_unix(999.0)) is None


def test_extrapolate_sr() -> None:
    ntp, ts = extrapolate_sr(ntp_from_unix(500.0), 0xFFFFFF00, 1.5, 90000)
    assert abs(unix_from_ntp(ntp) - 501.5) < 1e-6
    assert ts == (0xFFFFFF00 + 135000) & 0xFFFFFFFF


def test_translate_sr_keeps_lip_sync_across_a_switch() -> None:
    """Audio and video slots fed by the same source: after rewriting (and after a switch that
    moved both slots' timestamp spaces differently) the subscriber's SRs still map each
    stream's outgoing timestamp to the same NTP instant the source meant."""
    video, audio = SlotRewriter(out_ssrc=100, clock_rate=90000), SlotRewriter(out_ssrc=200, ts_gap=960, clock_rate=48000)
    video.rewrite(struct.pack("!BBHII", 0x80, 96, 1, 777, 1))
    audio.rewrite(struct.pack("!BBHII", 0x80, 111, 1, 555, 2))
    video.switch()
    audio.switch()
    v_pkt = video.rewrite(struct.pack("!BBHII", 0x80, 96, 40000, 3_000_000, 3))
    a_pkt = audio.rewrite(struct.pack("!BBHII", 0x80, 111, 9, 1_600_000, 4))
    # the new source's SRs: both streams captured at the same NTP instant T
    t_ntp = ntp_from_unix(2000.0)
    v_sr = SenderReport(3, t_ntp, 3_000_000 + 9000, 10, 10000)
    a_sr = SenderReport(4, t_ntp, 1_600_000 + 4800, 10, 1000)
    (v_out,) = parse_compound(translate_sr(v_sr, video.ts_offset, 100, 55, 66000))
    (a_out,) = parse_compound(translate_sr(a_sr, audio.ts_offset, 200, 77, 8000))
    assert isinstance(v_out, SenderReport) and isinstance(a_out, SenderReport)
    assert (v_out.ssrc, v_out.packet_count, v_out.octet_count) == (100, 55, 66000)
    # the outgoing packets' capture times computed from the translated SRs agree
    v_ts = struct.unpack_from("!I", v_pkt, 4)[0]
    a_ts = struct.unpack_from("!I", a_pkt, 4)[0]
    v_time = unix_from_ntp(v_out.ntp) + ((v_ts - v_out.rtp_ts + 2**31) % 2**32 - 2**31) / 90000
    a_time = unix_from_ntp(a_out.ntp) + ((a_ts - a_out.rtp_ts + 2**31) % 2**32 - 2**31) / 48000
    assert abs(v_time - (2000.0 - 0.1)) < 1e-6 and abs(a_time - (2000.0 - 0.1)) < 1e-6


def test_translate_sr_wraps_timestamp() -> None:
    sr = SenderReport(1, 5, 0xFFFFFFF0, 0, 0)
    (out,) = parse_compound(translate_sr(sr, 0x20, 9, 1, 2))
    assert isinstance(out, SenderReport) and out.rtp_ts == 0x10


def test_translate_nack() -> None:
    slot = SlotRewriter(out_ssrc=7)
    slot.rewrite(struct.pack("!BBHII", 0x80, 96, 100, 0, 1))
    slot.switch()
    for s in (0xFFFE, 0xFFFF, 0, 1):
        slot.rewrite(struct.pack("!BBHII", 0x80, 96, s, 0, 2))
    assert translate_nack([101, 103, 104], slot.seq_offset) == [0xFFFE, 0, 1]
    assert [slot.source_seq(s) for s in (101, 103, 104)] == [0xFFFE, 0, 1]


def test_request_limiter_one_per_interval_per_key() -> None:
    lim: RequestLimiter[int] = RequestLimiter(interval=1.0)
    assert lim.allow(1, 10.0)
    assert not lim.allow(1, 10.5)
    assert lim.allow(2, 10.5)
    assert lim.allow(1, 11.0)
    assert not lim.allow(1, 11.9)
    lim.forget(1)
    assert lim.allow(1, 11.9)
    lim.forget(99)


def test_random_and_mutated_input_never_raises() -> None:
    import random
    rnd = random.Random(9)
    valid = (build_sr(1, 2, 3, 4, 5, [BLOCK]) + build_sdes(1, "c") + build_nack(1, 2, [1, 2, 40])
             + build_pli(1, 2) + build_fir(1, 2, 3) + build_remb(1, 10**6, [2, 3]) + build_bye([1]))
    for _ in range(2000):
        data = bytearray(valid)
        for _ in range(rnd.randrange(1, 6)):
            data[rnd.randrange(len(data))] = rnd.getrandbits(8)
        data = data[:rnd.randrange(len(data) + 1)]
        for p in parse_compound(bytes(data)):
            assert isinstance(p, (SenderReport, ReceiverReport, Bye, Nack, Pli, Fir, Remb))
    for _ in range(2000):
        parse_compound(bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(0, 40))))
