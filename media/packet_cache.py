"""Per-source packet history for answering NACKs, and upstream reception statistics: which
packets a publisher's stream is missing (to NACK it, with a retry limit) and the RFC 3550
loss/jitter figures for Receiver Reports.  Pure: time is passed in (seconds, any monotonic
clock); nothing here reads a clock or raises on odd input.

Usage, one of each per incoming source stream (SSRC)::

    cache = PacketCache(size=1024)           # a power of two; the last `size` sequence numbers
    cache.put(packet)                        # the decrypted source packet (its seq is read)
    original = cache.get(seq)                # bytes or None (evicted, never seen, too old)

    stats = ReceiveStats(clock_rate=90000, max_nack_retries=3)
    stats.on_packet(seq, ts, arrival)        # every packet received from the publisher (~1 µs)
    seqs = stats.nacks_due(now, retry_interval=max(1.5 * rtt, 0.02))  # -> build_nack(...)
    stats.on_sender_report(sr.ntp, arrival)  # the publisher's SR, for LSR/DLSR
    block = stats.take_report(ssrc, now)     # media.rtcp.ReportBlock -> build_rr(...)
    stats.loss_fraction                      # of the last report interval, 0.0 .. 1.0

Sequence numbers are 16-bit and wrap; ``ReceiveStats`` extends them (cycles count) the RFC 3550
appendix A.1 way: a jump of more than ``max_dropout`` is taken as a restart of the stream only
when the next packet confirms it, so one stray packet cannot reset the statistics.
"""

from __future__ import annotations

import math
import struct

from media.rtcp import ReportBlock, ntp_middle

__all__ = ["PacketCache", "ReceiveStats"]

_SEQ = struct.Struct("!H")


class PacketCache:
    """The last ``size`` packets of one source, keyed by 16-bit sequence number (wrap-aware:
    a seq more than ``size`` behind the newest one is never returned, even if its slot still
    holds an old packet with the same number)."""

    def __init__(self, size: int = 1024) -> None:
        if size <= 0 or size & (size - 1) or size > 0x8000:
            raise ValueError("PacketCache size must be a power of two <= 32768")
        self.size = size
        self._mask = size - 1
        self._seqs: list[int] = [-1] * size
        self._packets: list[bytes | None] = [None] * size
        self._newest: int | None = None

    @property
    def newest(self) -> int | None:
        return self._newest

    def put(self, packet: bytes) -> bool:
        """Store an RTP packet under its own sequence number; False when too short to have one
        or older than the window."""
        if len(packet) < 12:
            return False
        return self.put_seq(_SEQ.unpack_from(packet, 2)[0], packet)

    def put_seq(self, seq: int, packet: bytes) -> bool:
        seq &= 0xFFFF
        newest = self._newest
        if newest is None or ((seq - newest) & 0xFFFF) < 0x8000:
            self._newest = seq
        elif ((newest - seq) & 0xFFFF) >= self.size:
            return False  # older than the window: would evict a newer packet
        i = seq & self._mask
        self._seqs[i] = seq
        self._packets[i] = packet
        return True

    def get(self, seq: int) -> bytes | None:
        seq &= 0xFFFF
        newest = self._newest
        if newest is None or ((newest - seq) & 0xFFFF) >= self.size:
            return None
        i = seq & self._mask
        return self._packets[i] if self._seqs[i] == seq else None

    def clear(self) -> None:
        self._seqs = [-1] * self.size
        self._packets = [None] * self.size
        self._newest = None

    def __len__(self) -> int:
        newest = self._newest
        if newest is None:
            return 0
        return sum(1 for i, s in enumerate(self._seqs)
                   if s >= 0 and ((newest - s) & 0xFFFF) < self.size and self._packets[i] is not None)


class ReceiveStats:
    """Reception state of one incoming stream: extended highest seq, losses, jitter, and the
    missing sequence numbers still worth NACKing.

    ``max_nack_retries``: NACKs per missing packet before giving up; ``max_missing``: bound of
    the missing set (oldest dropped first); ``max_age``: packets further than this behind the
    newest are no longer requested (a cache upstream will not hold them either);
    ``max_dropout``/``max_misorder``: RFC 3550 A.1 limits."""

    def __init__(self, clock_rate: int, *, max_nack_retries: int = 3, max_missing: int = 512,
                 max_age: int = 1000, max_dropout: int = 3000, max_misorder: int = 100) -> None:
        self.clock_rate = clock_rate
        self.max_nack_retries = max_nack_retries
        self.max_missing = max_missing
        self.max_age = max_age
        self.max_dropout = max_dropout
        self.max_misorder = max_misorder
        self._started = False
        self._base = 0            # extended seq of the first packet
        self._max = 0             # highest seq (16-bit)
        self._cycles = 0          # multiples of 65536
        self._bad_seq = -1
        self.received = 0
        self.duplicates = 0
        self._expected_prior = 0
        self._received_prior = 0
        self.loss_fraction = 0.0
        self._jitter = 0.0
        self._last_transit: float | None = None
        self._missing: dict[int, list[float]] = {}  # extended seq -> [retries, next NACK time]
        self._sr_middle = 0
        self._sr_arrival: float | None = None

    # ---- per packet ----

    def on_packet(self, seq: int, ts: int, arrival: float) -> None:
        seq &= 0xFFFF
        if not self._started:
            self._restart(seq)
        else:
            delta = (seq - self._max) & 0xFFFF
            if delta == 0:
                self.duplicates += 1
                return
            if delta < self.max_dropout:
                ext_max = self._cycles + self._max
                if seq < self._max:
                    self._cycles += 0x10000
                self._max = seq
                if delta > 1:
                    self._add_missing(ext_max + 1, ext_max + delta, arrival)
            elif delta >= 0x10000 - self.max_misorder:
                ext = self._cycles + self._max - (0x10000 - delta)
                if self._missing.pop(ext, None) is None and ext >= self._base:
                    self.duplicates += 1  # late and never missing: a duplicate
                    return
            elif seq == self._bad_seq:
                self._restart(seq)  # two sequential packets after a big jump: the source restarted
            else:
                self._bad_seq = (seq + 1) & 0xFFFF
                return
        self.received += 1
        transit = arrival * self.clock_rate - ts
        last = self._last_transit
        if last is not None:
            d = transit - last
            # the RTP timestamp wraps at 2**32: fold the difference back near zero
            d = (d + 2**31) % 2**32 - 2**31
            self._jitter += (abs(d) - self._jitter) / 16.0
        self._last_transit = transit

    def _restart(self, seq: int) -> None:
        self._started = True
        self._base = seq
        self._max = seq
        self._cycles = 0
        self._bad_seq = -1
        self.received = 0
        self._expected_prior = 0
        self._received_prior = 0
        self._missing.clear()
        self._last_transit = None

    def _add_missing(self, first: int, stop: int, now: float) -> None:
        first = max(first, stop - self.max_missing)
        for ext in range(first, stop):
            self._missing[ext] = [0, now]
        extra = len(self._missing) - self.max_missing
        if extra > 0:
            for ext in sorted(self._missing)[:extra]:
                del self._missing[ext]

    # ---- NACKs ----

    @property
    def highest_ext_seq(self) -> int:
        return self._cycles + self._max

    def missing(self) -> list[int]:
        """16-bit sequence numbers currently missing (oldest first), within ``max_age``."""
        floor = self.highest_ext_seq - self.max_age
        return [ext & 0xFFFF for ext in sorted(self._missing) if ext > floor]

    def nacks_due(self, now: float, retry_interval: float) -> list[int]:
        """Missing sequence numbers to NACK now (oldest first): each is asked for at most
        ``max_nack_retries`` times, ``retry_interval`` apart, then given up; entries older than
        ``max_age`` packets are dropped."""
        if not self._missing:
            return []
        floor = self.highest_ext_seq - self.max_age
        out = []
        for ext in sorted(self._missing):
            entry = self._missing[ext]
            if ext <= floor or entry[0] >= self.max_nack_retries:
                if ext <= floor or entry[1] <= now:
                    del self._missing[ext]
                continue
            if entry[1] <= now:
                entry[0] += 1
                entry[1] = now + retry_interval
                out.append(ext & 0xFFFF)
        return out

    # ---- reports ----

    @property
    def expected(self) -> int:
        return self.highest_ext_seq - self._base + 1 if self._started else 0

    @property
    def cumulative_lost(self) -> int:
        """Packets lost so far (negative with duplicates counted as received), clamped to the
        signed 24-bit range of a report block."""
        return max(-0x800000, min(0x7FFFFF, self.expected - self.received))

    @property
    def jitter(self) -> int:
        """Interarrival jitter in RTP timestamp units."""
        return int(self._jitter)

    def on_sender_report(self, ntp: int, arrival: float) -> None:
        """The source's SR arrived (its 64-bit NTP time): report LSR/DLSR against it."""
        self._sr_middle = ntp_middle(ntp)
        self._sr_arrival = arrival

    def take_report(self, ssrc: int, now: float) -> ReportBlock:
        """The report block for this interval (RFC 3550 A.3); starts the next interval."""
        expected = self.expected
        interval_expected = expected - self._expected_prior
        interval_received = self.received - self._received_prior
        self._expected_prior = expected
        self._received_prior = self.received
        interval_lost = interval_expected - interval_received
        fraction = 0
        if interval_expected > 0 and interval_lost > 0:
            fraction = min(255, (interval_lost << 8) // interval_expected)
        self.loss_fraction = fraction / 256.0
        dlsr = 0
        if self._sr_arrival is not None:
            dlsr = min(0xFFFFFFFF, max(0, math.floor((now - self._sr_arrival) * 65536)))
        return ReportBlock(ssrc, fraction, self.cumulative_lost, self.highest_ext_seq & 0xFFFFFFFF, self.jitter,
                           self._sr_middle, dlsr)
