"""RTCP at the struct level (RFC 3550, RFC 4585, RFC 5104, REMB draft): parse compound packets,
build the packets an SFU sends, and translate SR/NACK across a rewritten slot stream.  Pure.

Parsing never raises: ``parse_compound(data)`` returns the packets it understood, in order, and
stops at the first malformed header (SDES, APP, XR and unknown feedback types are skipped)::

    for p in parse_compound(rtcp_bytes):
        if isinstance(p, Nack): ...          # p.sender_ssrc, p.media_ssrc, p.seqs (expanded)
        elif isinstance(p, (Pli, Fir)): ...  # keyframe requests (Fir.entries: (ssrc, seqnr))
        elif isinstance(p, Remb): ...        # p.bitrate (bps), p.ssrcs
        elif isinstance(p, SenderReport): ...  # p.ntp (64-bit), p.rtp_ts, p.reports
        elif isinstance(p, ReceiverReport): ...  # p.reports: ReportBlock
        elif isinstance(p, Bye): ...

Building::

    build_pli(sender_ssrc, media_ssrc); build_fir(sender_ssrc, media_ssrc, seqnr)
    build_nack(sender_ssrc, media_ssrc, [seq, ...])      # packed into PID/BLP pairs, wrap-aware
    build_remb(sender_ssrc, bitrate_bps, [media_ssrc, ...])
    build_rr(sender_ssrc, [ReportBlock, ...]); build_sr(ssrc, ntp, rtp_ts, packets, octets, blocks)
    build_sdes(ssrc, cname); build_bye([ssrc])           # concatenate for a compound packet

Across a slot (``media.rtp_rewrite.SlotRewriter`` offsets)::

    sr_out = translate_sr(source_sr, slot.ts_offset, slot.out_ssrc, sent_packets, sent_octets)
    source_seqs = translate_nack(nack.seqs, slot.seq_offset)   # or slot.source_seq(s) per seq

Keyframe requests toward a source, at most one per second whoever asks::

    limiter = RequestLimiter(interval=1.0)
    if limiter.allow(source_ssrc, now): peer.send_rtcp(build_pli(our_ssrc, source_ssrc))

The subscriber's SR keeps the source's NTP time and shifts the RTP timestamp by the slot's
offset, so the (NTP, RTP) pair still names the same capture instant: audio and video of one
source stay in sync after rewriting.  ``extrapolate_sr`` moves such a pair forward in time for
SRs sent on the SFU's own schedule.
"""

from __future__ import annotations

import struct
from collections.abc import Hashable, Iterable, Sequence
from typing import Generic, NamedTuple, TypeVar, Union

__all__ = ["Bye", "Fir", "Nack", "Pli", "ReceiverReport", "Remb", "ReportBlock", "RequestLimiter", "RtcpPacket",
           "SenderReport", "build_bye", "build_fir", "build_nack", "build_pli", "build_remb",
           "build_rr", "build_sdes", "build_sr", "extrapolate_sr", "nack_pairs", "ntp_from_unix",
           "ntp_middle", "parse_compound", "rtt_from_report", "translate_nack", "translate_sr",
           "unix_from_ntp"]

SR, RR, SDES, BYE, APP, RTPFB, PSFB, XR = 200, 201, 202, 203, 204, 205, 206, 207
NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900-01-01 to 1970-01-01

_HDR = struct.Struct("!BBH")
_SSRC2 = struct.Struct("!II")
_SR_INFO = struct.Struct("!IQIII")
_BLOCK = struct.Struct("!IIIIII")


class ReportBlock(NamedTuple):
    """One reception report block.  ``packets_lost`` is the signed 24-bit cumulative count;
    ``lsr`` the middle 32 bits of the last SR's NTP time, ``dlsr`` the delay since, in 1/65536 s."""

    ssrc: int
    fraction_lost: int      # 0..255 (= loss fraction * 256)
    packets_lost: int
    highest_seq: int        # extended highest sequence number received
    jitter: int             # in RTP timestamp units
    lsr: int = 0
    dlsr: int = 0


class SenderReport(NamedTuple):
    ssrc: int
    ntp: int                # 64-bit NTP timestamp
    rtp_ts: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()


class ReceiverReport(NamedTuple):
    ssrc: int
    reports: tuple[ReportBlock, ...] = ()


class Bye(NamedTuple):
    ssrcs: tuple[int, ...]


class Nack(NamedTuple):
    sender_ssrc: int
    media_ssrc: int
    seqs: tuple[int, ...]   # every lost sequence number, expanded from PID/BLP pairs


class Pli(NamedTuple):
    sender_ssrc: int
    media_ssrc: int


class Fir(NamedTuple):
    sender_ssrc: int
    entries: tuple[tuple[int, int], ...]   # (media ssrc, command sequence number)


class Remb(NamedTuple):
    sender_ssrc: int
    bitrate: int            # bits per second
    ssrcs: tuple[int, ...]


RtcpPacket = Union[SenderReport, ReceiverReport, Bye, Nack, Pli, Fir, Remb]


# ---- parsing ----

def _blocks(data: bytes | bytearray, pos: int, count: int, end: int) -> tuple[ReportBlock, ...] | None:
    if pos + count * 24 > end:
        return None
    out = []
    for _ in range(count):
        ssrc, lost_word, highest, jitter, lsr, dlsr = _BLOCK.unpack_from(data, pos)
        lost = lost_word & 0xFFFFFF
        if lost & 0x800000:
            lost -= 0x1000000
        out.append(ReportBlock(ssrc, lost_word >> 24, lost, highest, jitter, lsr, dlsr))
        pos += 24
    return tuple(out)


def _parse_one(data: bytes | bytearray, start: int, end: int) -> RtcpPacket | None:
    b0, pt = data[start], data[start + 1]
    count = b0 & 0x1F
    body = start + 4
    if pt == SR:
        if body + 24 > end:
            return None
        ssrc, ntp, rtp_ts, packets, octets = _SR_INFO.unpack_from(data, body)
        blocks = _blocks(data, body + 24, count, end)
        return None if blocks is None else SenderReport(ssrc, ntp, rtp_ts, packets, octets, blocks)
    if pt == RR:
        if body + 4 > end:
            return None
        blocks = _blocks(data, body + 4, count, end)
        return None if blocks is None else ReceiverReport(struct.unpack_from("!I", data, body)[0], blocks)
    if pt == BYE:
        if body + 4 * count > end:
            return None
        return Bye(struct.unpack_from(f"!{count}I", data, body))
    if pt != RTPFB and pt != PSFB:
        return None
    if body + 8 > end:
        return None
    sender, media = _SSRC2.unpack_from(data, body)
    fci = body + 8
    if pt == RTPFB:
        if count != 1:
            return None
        seqs: list[int] = []
        for pos in range(fci, end - 3, 4):
            pid, blp = struct.unpack_from("!HH", data, pos)
            seqs.append(pid)
            for bit in range(16):
                if blp & (1 << bit):
                    seqs.append((pid + bit + 1) & 0xFFFF)
        return Nack(sender, media, tuple(seqs))
    if count == 1:
        return Pli(sender, media)
    if count == 4:
        entries = tuple((ssrc, word >> 24) for ssrc, word in
                        (_SSRC2.unpack_from(data, pos) for pos in range(fci, end - 7, 8)))
        return Fir(sender, entries)
    if count == 15:
        if fci + 8 > end or bytes(data[fci:fci + 4]) != b"REMB":
            return None
        n = data[fci + 4]
        exp = data[fci + 5] >> 2
        mantissa = ((data[fci + 5] & 0x03) << 16) | (data[fci + 6] << 8) | data[fci + 7]
        if fci + 8 + 4 * n > end:
            return None
        return Remb(sender, mantissa << exp, struct.unpack_from(f"!{n}I", data, fci + 8))
    return None


def parse_compound(data: bytes | bytearray) -> list[RtcpPacket]:
    """The understood packets of a (compound) RTCP datagram, in order.  Skips packet types it
    does not handle and malformed bodies; stops at a malformed common header."""
    out: list[RtcpPacket] = []
    pos = 0
    n = len(data)
    while pos + 4 <= n:
        b0, pt, length = _HDR.unpack_from(data, pos)
        if b0 >> 6 != 2:
            break
        end = pos + 4 + length * 4
        if end > n:
            break
        body_end = end
        if b0 & 0x20:  # padding: the last octet counts the padding octets
            pad = data[end - 1]
            if pad == 0 or pad > length * 4:
                break
            body_end = end - pad
        packet = _parse_one(data, pos, body_end)
        if packet is not None:
            out.append(packet)
        pos = end
    return out


# ---- building ----

def _header(count: int, pt: int, body_len: int) -> bytes:
    return _HDR.pack(0x80 | count, pt, body_len // 4)


def _pack_blocks(blocks: Sequence[ReportBlock]) -> bytes:
    return b"".join(_BLOCK.pack(b.ssrc, ((b.fraction_lost & 0xFF) << 24) | (b.packets_lost & 0xFFFFFF),
                                b.highest_seq & 0xFFFFFFFF, b.jitter & 0xFFFFFFFF, b.lsr & 0xFFFFFFFF,
                                b.dlsr & 0xFFFFFFFF) for b in blocks)


def build_pli(sender_ssrc: int, media_ssrc: int) -> bytes:
    """Picture Loss Indication (RFC 4585 PSFB FMT 1)."""
    return _header(1, PSFB, 8) + _SSRC2.pack(sender_ssrc, media_ssrc)


def build_fir(sender_ssrc: int, media_ssrc: int, seqnr: int) -> bytes:
    """Full Intra Request (RFC 5104 PSFB FMT 4); increment ``seqnr`` per new request."""
    return _header(4, PSFB, 16) + _SSRC2.pack(sender_ssrc, 0) + _SSRC2.pack(media_ssrc, (seqnr & 0xFF) << 24)


def _wrap_order(seqs: Iterable[int]) -> list[int]:
    """Distinct 16-bit seqs sorted oldest first, treating the largest gap as the wrap point."""
    s = sorted({q & 0xFFFF for q in seqs})
    if len(s) < 2:
        return s
    gaps = [(s[i + 1] - s[i], i + 1) for i in range(len(s) - 1)]
    gaps.append((s[0] + 0x10000 - s[-1], 0))
    start = max(gaps)[1]
    return s[start:] + s[:start]


def nack_pairs(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Generic NACK FCI entries (PID, BLP) covering the given sequence numbers."""
    pairs: list[tuple[int, int]] = []
    for q in _wrap_order(seqs):
        if pairs:
            pid, blp = pairs[-1]
            d = (q - pid) & 0xFFFF
            if 1 <= d <= 16:
                pairs[-1] = (pid, blp | (1 << (d - 1)))
                continue
        pairs.append((q, 0))
    return pairs


def build_nack(sender_ssrc: int, media_ssrc: int, seqs: Iterable[int]) -> bytes:
    """Generic NACK (RFC 4585 RTPFB FMT 1); b"" when ``seqs`` is empty."""
    pairs = nack_pairs(seqs)
    if not pairs:
        return b""
    fci = b"".join(struct.pack("!HH", pid, blp) for pid, blp in pairs)
    return _header(1, RTPFB, 8 + len(fci)) + _SSRC2.pack(sender_ssrc, media_ssrc) + fci


def build_remb(sender_ssrc: int, bitrate: int, ssrcs: Sequence[int]) -> bytes:
    """Receiver Estimated Max Bitrate (PSFB FMT 15, "REMB"); bitrate in bps (clamped >= 0)."""
    bitrate = max(0, int(bitrate))
    exp = 0
    while bitrate >> exp >= 1 << 18:
        exp += 1
    mantissa = bitrate >> exp
    fci = b"REMB" + bytes([len(ssrcs), (exp << 2) | (mantissa >> 16), (mantissa >> 8) & 0xFF, mantissa & 0xFF])
    fci += b"".join(struct.pack("!I", s) for s in ssrcs)
    return _header(15, PSFB, 8 + len(fci)) + _SSRC2.pack(sender_ssrc, 0) + fci


def build_rr(sender_ssrc: int, blocks: Sequence[ReportBlock] = ()) -> bytes:
    """Receiver Report(s): more than 31 blocks are split over several RR packets."""
    out = b""
    for i in range(0, max(len(blocks), 1), 31):
        chunk = blocks[i:i + 31]
        body = struct.pack("!I", sender_ssrc) + _pack_blocks(chunk)
        out += _header(len(chunk), RR, len(body)) + body
    return out


def build_sr(ssrc: int, ntp: int, rtp_ts: int, packet_count: int, octet_count: int,
             blocks: Sequence[ReportBlock] = ()) -> bytes:
    """Sender Report (at most 31 report blocks; add more with ``build_rr``)."""
    body = _SR_INFO.pack(ssrc, ntp & 0xFFFFFFFFFFFFFFFF, rtp_ts & 0xFFFFFFFF, packet_count & 0xFFFFFFFF,
                         octet_count & 0xFFFFFFFF) + _pack_blocks(blocks[:31])
    return _header(min(len(blocks), 31), SR, len(body)) + body


def build_sdes(ssrc: int, cname: str) -> bytes:
    """SDES with one chunk carrying a CNAME item."""
    name = cname.encode()[:255]
    chunk = struct.pack("!IBB", ssrc, 1, len(name)) + name + b"\x00"
    chunk += b"\x00" * (-len(chunk) % 4)
    return _header(1, SDES, len(chunk)) + chunk


def build_bye(ssrcs: Sequence[int]) -> bytes:
    body = b"".join(struct.pack("!I", s) for s in ssrcs[:31])
    return _header(min(len(ssrcs), 31), BYE, len(body)) + body


# ---- time and translation ----

def ntp_from_unix(t: float) -> int:
    """64-bit NTP timestamp for a Unix time in seconds."""
    secs = int(t)
    frac = int((t - secs) * (1 << 32)) & 0xFFFFFFFF
    return (((secs + NTP_EPOCH_OFFSET) & 0xFFFFFFFF) << 32) | frac


def unix_from_ntp(ntp: int) -> float:
    return (ntp >> 32) - NTP_EPOCH_OFFSET + (ntp & 0xFFFFFFFF) / (1 << 32)


def ntp_middle(ntp: int) -> int:
    """The middle 32 bits of an NTP timestamp (the LSR field of report blocks)."""
    return (ntp >> 16) & 0xFFFFFFFF


def rtt_from_report(block: ReportBlock, arrival_ntp: int) -> float | None:
    """Round-trip time in seconds from a report block about our stream, received at
    ``arrival_ntp`` (64-bit NTP, same clock as the SRs we sent); None without an LSR."""
    if block.lsr == 0:
        return None
    rtt = (ntp_middle(arrival_ntp) - block.lsr - block.dlsr) & 0xFFFFFFFF
    if rtt >= 0x80000000:  # negative: clock steps or a bogus report
        return None
    return rtt / 65536.0


def extrapolate_sr(ntp: int, rtp_ts: int, elapsed: float, clock_rate: int) -> tuple[int, int]:
    """The (NTP, RTP timestamp) pair ``elapsed`` seconds after a known pair."""
    step = int(elapsed * (1 << 32))
    return (ntp + step) & 0xFFFFFFFFFFFFFFFF, (rtp_ts + int(round(elapsed * clock_rate))) & 0xFFFFFFFF


def translate_sr(sr: SenderReport, ts_offset: int, out_ssrc: int, packet_count: int, octet_count: int,
                 blocks: Sequence[ReportBlock] = ()) -> bytes:
    """The subscriber's SR for a slot fed by the source that sent ``sr``: the source's NTP time
    with its RTP timestamp shifted by the slot's ``ts_offset``; counts are the slot's own."""
    return build_sr(out_ssrc, sr.ntp, (sr.rtp_ts + ts_offset) & 0xFFFFFFFF, packet_count, octet_count, blocks)


def translate_nack(seqs: Iterable[int], seq_offset: int) -> list[int]:
    """Slot sequence numbers named in a subscriber's NACK, as the source's sequence numbers."""
    return [(s - seq_offset) & 0xFFFF for s in seqs]


K = TypeVar("K", bound=Hashable)


class RequestLimiter(Generic[K]):
    """At most one request per key every ``interval`` seconds (PLI/FIR forwarded to a source:
    many subscribers asking at once must not make the publisher send a keyframe each)."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._last: dict[K, float] = {}

    def allow(self, key: K, now: float) -> bool:
        """True (and the request counts) when ``key`` has had no allowed request for ``interval``."""
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            return False
        self._last[key] = now
        return True

    def forget(self, key: K) -> None:
        """The source left (or a switch needs a keyframe now): its next request is allowed."""
        self._last.pop(key, None)
