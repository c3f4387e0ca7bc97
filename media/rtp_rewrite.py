"""RTP header helpers and rewriting for one outgoing slot stream.  Pure: bytes + ``struct``.

Header access (RFC 3550, header extensions RFC 8285)::

    off = payload_offset(packet)            # None when malformed; padding excluded via payload_bounds
    hdr = parse_header(packet)              # RtpHeader (NamedTuple) or None
    level = audio_level(packet, ext_id=1)   # RFC 6464: (level 0..127, voice) or None
    raw = find_extension(packet, ext_id=3)  # bytes of a one- or two-byte header extension, or None

Slot continuity: a ``SlotRewriter`` maps packets of whichever source currently feeds a slot
onto one outgoing (SSRC, seq, timestamp) space::

    slot = SlotRewriter(out_ssrc=0x1234, clock_rate=90000, ts_gap=3000)
    buf = bytearray(packet)
    out_seq = slot.rewrite_in_place(buf, now=arrival)   # or: out = slot.rewrite(packet, now=arrival)
    out_seq, out_ts = slot.map(seq, ts, ssrc, now=arrival)  # the same on parsed fields (write them yourself)
    ...
    slot.switch()            # the forwarder picked another source for this slot
    slot.hide_gap()          # packets were dropped on purpose: no seq gap, source timing kept
    # a NACK from the subscriber names out_seq; translate it back for the source's packet cache:
    src_seq = slot.source_seq(out_seq)                    # None: not sent in the current epoch
    again = slot.retransmit(cached_source_packet)         # rewritten without moving the anchor

When the source changes (``switch()``, or implicitly when a packet arrives with another SSRC) the
next packet continues the outgoing sequence at last + 1 and the timestamp at last + ``ts_gap``, or
at last + the wall time elapsed since the last forwarded packet (when ``now`` is passed), so the
receiver's jitter buffer sees real time pass.  Per-packet functions never raise on malformed input
except ``rewrite``/``rewrite_in_place`` raising ``ValueError`` for a buffer shorter than the
12-byte fixed header.  RTX (RFC 4588) packets for retransmission are built by ``build_rtx``.

Outgoing header extensions (the IDs are per m-line and per peer, so a forwarder strips the
publisher's and writes the subscriber's own)::

    block = extension_block([(abs_id, abs_send_time(now).to_bytes(3, "big"))])  # once per packet
    out = with_extension_block(stripped_packet, block)   # bytearray, payload now after the block
    set_extension(out, abs_id, abs_send_time(now).to_bytes(3, "big"))  # refresh in place
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, NamedTuple

from media import native

__all__ = ["PySlotRewriter", "RtpHeader", "SlotRewriter", "abs_send_time", "audio_level", "build_rtx", "extension_block",
           "find_extension", "parse_header", "payload_bounds", "payload_offset", "seq_delta", "seq_newer",
           "set_extension", "unwrap_rtx", "with_extension_block"]

_SEQ_TS_SSRC = struct.Struct("!HII")  # bytes 2..12 of the fixed RTP header
_SEQ = struct.Struct("!H")
_FIXED = struct.Struct("!BBHII")

ONE_BYTE_PROFILE = 0xBEDE
TWO_BYTE_PROFILE_MASK = 0xFFF0
TWO_BYTE_PROFILE = 0x1000


def seq_delta(a: int, b: int) -> int:
    """Signed distance a - b between two 16-bit sequence numbers, in [-32768, 32767]."""
    d = (a - b) & 0xFFFF
    return d - 0x10000 if d >= 0x8000 else d


def seq_newer(a: int, b: int) -> bool:
    """True when 16-bit sequence number ``a`` comes after ``b`` (wrap-aware)."""
    return 0 < ((a - b) & 0xFFFF) < 0x8000


class RtpHeader(NamedTuple):
    """A parsed RTP header.  ``ext_profile`` is 0 and ``ext_start == ext_end`` without an
    extension block; the payload is ``packet[payload_start:payload_end]`` (padding excluded)."""

    marker: bool
    payload_type: int
    seq: int
    timestamp: int
    ssrc: int
    csrcs: tuple[int, ...]
    ext_profile: int
    ext_start: int
    ext_end: int
    payload_start: int
    payload_end: int


def _extension_bounds(packet: bytes | bytearray) -> tuple[int, int, int] | None:
    """(profile, start, end) of the extension data, (0, off, off) when none, None when malformed."""
    n = len(packet)
    if n < 12:
        return None
    b0 = packet[0]
    if b0 >> 6 != 2:
        return None
    off = 12 + (b0 & 0x0F) * 4
    if not b0 & 0x10:
        return (0, off, off) if off <= n else None
    if off + 4 > n:
        return None
    profile = (packet[off] << 8) | packet[off + 1]
    end = off + 4 + ((packet[off + 2] << 8) | packet[off + 3]) * 4
    if end > n:
        return None
    return profile, off + 4, end


def payload_offset(packet: bytes | bytearray) -> int | None:
    """Offset of the payload (after CSRCs and the extension block), or None when malformed
    (too short, version != 2, extension or padding running past the end)."""
    bounds = _extension_bounds(packet)
    if bounds is None:
        return None
    off = bounds[2]
    end = len(packet)
    if packet[0] & 0x20:
        pad = packet[-1]
        if pad == 0:
            return None
        end -= pad
    return off if off <= end else None


def payload_bounds(packet: bytes | bytearray) -> tuple[int, int] | None:
    """(start, end) of the payload with padding removed, or None when malformed."""
    start = payload_offset(packet)
    if start is None:
        return None
    end = len(packet) - packet[-1] if packet[0] & 0x20 else len(packet)
    return start, end


def parse_header(packet: bytes | bytearray) -> RtpHeader | None:
    """The whole header, or None when the packet is not a well-formed RTP packet."""
    bounds = _extension_bounds(packet)
    if bounds is None:
        return None
    profile, ext_start, ext_end = bounds
    span = payload_bounds(packet)
    if span is None:
        return None
    b0, b1, seq, ts, ssrc = _FIXED.unpack_from(packet, 0)
    cc = b0 & 0x0F
    csrcs = struct.unpack_from(f"!{cc}I", packet, 12) if cc else ()
    return RtpHeader(bool(b1 & 0x80), b1 & 0x7F, seq, ts, ssrc, csrcs, profile, ext_start, ext_end,
                     span[0], span[1])


def find_extension(packet: bytes | bytearray, ext_id: int) -> bytes | None:
    """The data of header extension ``ext_id`` (RFC 8285 one-byte or two-byte form), or None when
    absent or malformed."""
    bounds = _extension_bounds(packet)
    if bounds is None:
        return None
    profile, i, end = bounds
    if profile == ONE_BYTE_PROFILE:
        while i < end:
            b = packet[i]
            if b == 0:  # padding
                i += 1
                continue
            eid = b >> 4
            if eid == 15:  # reserved: stop parsing
                return None
            length = (b & 0x0F) + 1
            if i + 1 + length > end:
                return None
            if eid == ext_id:
                return bytes(packet[i + 1:i + 1 + length])
            i += 1 + length
        return None
    if profile & TWO_BYTE_PROFILE_MASK == TWO_BYTE_PROFILE:
        while i < end:
            eid = packet[i]
            if eid == 0:  # padding
                i += 1
                continue
            if i + 2 > end:
                return None
            length = packet[i + 1]
            if i + 2 + length > end:
                return None
            if eid == ext_id:
                return bytes(packet[i + 2:i + 2 + length])
            i += 2 + length
        return None
    return None


def audio_level(packet: bytes | bytearray, ext_id: int) -> tuple[int, bool] | None:
    """RFC 6464 client-to-mixer audio level: (level in -dBov, 0 loudest .. 127 silence, voice
    activity bit), or None when the extension is absent or empty."""
    n = len(packet)
    if n < 12:
        return None
    b0 = packet[0]
    if b0 & 0xD0 != 0x90:  # version 2 with an extension block
        return None
    i = 12 + (b0 & 0x0F) * 4
    if i + 4 > n or packet[i] != 0xBE or packet[i + 1] != 0xDE:
        data = find_extension(packet, ext_id)  # two-byte form (rare for audio): the general path
        return (data[0] & 0x7F, bool(data[0] & 0x80)) if data else None
    end = i + 4 + ((packet[i + 2] << 8) | packet[i + 3]) * 4
    if end > n:
        return None
    i += 4
    while i < end:
        b = packet[i]
        if b == 0:
            i += 1
            continue
        eid = b >> 4
        if eid == 15 or i + 1 + (b & 0x0F) + 1 > end:
            return None
        if eid == ext_id:
            v = packet[i + 1]
            return v & 0x7F, bool(v & 0x80)
        i += 2 + (b & 0x0F)
    return None


def abs_send_time(now: float) -> int:
    """The 24-bit abs-send-time header extension value (6.18 fixed-point seconds, wrapping every
    64 s) for a send time in seconds; any clock works, receivers use differences only."""
    return int(now * (1 << 18)) & 0xFFFFFF


def extension_block(elements: list[tuple[int, bytes]] | tuple[tuple[int, bytes], ...]) -> bytes:
    """An RFC 8285 one-byte-form extension block (0xBEDE header, elements, zero padding to 32
    bits).  ValueError for an ID outside 1..14 or data outside 1..16 bytes."""
    body = bytearray()
    for ext_id, data in elements:
        if not 1 <= ext_id <= 14 or not 1 <= len(data) <= 16:
            raise ValueError(f"one-byte header extension needs id 1..14 and 1..16 bytes, got {ext_id}, {len(data)}")
        body.append((ext_id << 4) | (len(data) - 1))
        body += data
    body += b"\x00" * (-len(body) % 4)
    return struct.pack("!HH", ONE_BYTE_PROFILE, len(body) // 4) + bytes(body)


def with_extension_block(packet: bytes | bytearray, block: bytes) -> bytearray | None:
    """A copy of ``packet`` carrying ``block`` (from ``extension_block``) as its header
    extension: an existing block is replaced, CSRCs and padding kept.  None when malformed."""
    bounds = _extension_bounds(packet)
    if bounds is None:
        return None
    profile, start, end = bounds
    fixed_end = 12 + (packet[0] & 0x0F) * 4
    rest = end if packet[0] & 0x10 else fixed_end
    out = bytearray(packet[:fixed_end])
    out[0] |= 0x10
    out += block
    out += packet[rest:]
    return out


def set_extension(buf: bytearray, ext_id: int, data: bytes) -> bool:
    """Overwrite, in place, the value of one-byte-form extension ``ext_id`` with ``data`` of the
    same length; False when absent, of another length, or malformed."""
    bounds = _extension_bounds(buf)
    if bounds is None or bounds[0] != ONE_BYTE_PROFILE:
        return False
    _, i, end = bounds
    while i < end:
        b = buf[i]
        if b == 0:
            i += 1
            continue
        eid, length = b >> 4, (b & 0x0F) + 1
        if eid == 15 or i + 1 + length > end:
            return False
        if eid == ext_id:
            if length != len(data):
                return False
            buf[i + 1:i + 1 + length] = data
            return True
        i += 1 + length
    return False


def build_rtx(packet: bytes | bytearray, rtx_pt: int, rtx_ssrc: int, rtx_seq: int) -> bytes | None:
    """An RFC 4588 retransmission of ``packet``: same header (extensions kept, marker and
    timestamp kept) with the RTX payload type, SSRC and sequence number, the original sequence
    number (OSN) prepended to the payload, padding dropped.  None when ``packet`` is malformed."""
    span = payload_bounds(packet)
    if span is None:
        return None
    start, end = span
    head = bytearray(packet[:start])
    head[0] &= 0xDF  # no padding in the retransmission
    head[1] = (head[1] & 0x80) | (rtx_pt & 0x7F)
    osn = packet[2:4]
    _SEQ.pack_into(head, 2, rtx_seq & 0xFFFF)
    struct.pack_into("!I", head, 8, rtx_ssrc)
    return bytes(head) + bytes(osn) + bytes(packet[start:end])


def unwrap_rtx(packet: bytes | bytearray, original_pt: int, original_ssrc: int) -> bytes | None:
    """The original packet carried by an RTX packet (RFC 4588), or None when malformed."""
    span = payload_bounds(packet)
    if span is None or span[1] - span[0] < 2:
        return None
    start, end = span
    head = bytearray(packet[:start])
    head[0] &= 0xDF
    head[1] = (head[1] & 0x80) | (original_pt & 0x7F)
    head[2:4] = packet[start:start + 2]
    struct.pack_into("!I", head, 8, original_ssrc)
    return bytes(head) + bytes(packet[start + 2:end])


class SlotRewriter:
    """Maps packets of the current source onto one outgoing (ssrc, seq, ts) space.

    The first source ever passes its seq/ts through unchanged (only the SSRC is replaced).  On
    ``switch()`` (or when a packet's SSRC differs from the current source's) the next packet
    re-anchors: outgoing seq = last + 1, ts = last + max(``ts_gap``, elapsed * ``clock_rate``).
    Late (reordered) packets are rewritten with the current offsets but never move the anchor."""

    __slots__ = ("out_ssrc", "ts_gap", "clock_rate", "_seq_offset", "_ts_offset", "_source_ssrc",
                 "_epoch_first", "_last_seq", "_last_ts", "_last_time", "_resync", "_keep_ts", "switches")

    def __init__(self, out_ssrc: int, ts_gap: int = 3000, clock_rate: int = 90000):
        self.out_ssrc = out_ssrc
        self.ts_gap = ts_gap
        self.clock_rate = clock_rate
        self._seq_offset = 0
        self._ts_offset = 0
        self._source_ssrc: int | None = None
        self._epoch_first = 0  # outgoing seq of the current epoch's first packet
        self._last_seq = 0
        self._last_ts = 0
        self._last_time: float | None = None
        self._resync = True
        self._keep_ts = False
        self.switches = 0

    @property
    def source_ssrc(self) -> int | None:
        """SSRC of the source the current offsets belong to (None before the first packet)."""
        return self._source_ssrc

    @property
    def seq_offset(self) -> int:
        """out_seq = (source_seq + seq_offset) & 0xFFFF for the current source."""
        return self._seq_offset

    @property
    def ts_offset(self) -> int:
        """out_ts = (source_ts + ts_offset) & 0xFFFFFFFF for the current source (SR translation)."""
        return self._ts_offset

    @property
    def last_seq(self) -> int | None:
        """Highest outgoing sequence number sent so far (None before the first packet)."""
        return None if self._source_ssrc is None else self._last_seq

    @property
    def last_ts(self) -> int | None:
        return None if self._source_ssrc is None else self._last_ts

    def switch(self) -> None:
        """The slot's source changes: re-anchor on the next packet."""
        self._resync = True
        self._keep_ts = False

    def hide_gap(self) -> None:
        """Packets of the current source were dropped on purpose (a slow subscriber waiting for
        a keyframe): the next forwarded packet continues the outgoing seq at last + 1, so the
        subscriber has nothing to NACK, while timestamps keep the source's own timing.  A packet
        of another source re-anchors fully, as after ``switch()``."""
        self._resync = True
        self._keep_ts = True

    def _anchor(self, seq: int, ts: int, ssrc: int, now: float | None) -> None:
        self._resync = False
        keep_ts = self._keep_ts and ssrc == self._source_ssrc
        self._keep_ts = False
        if self._source_ssrc is None:
            self._seq_offset = 0
            self._ts_offset = 0
        else:
            self._seq_offset = (self._last_seq + 1 - seq) & 0xFFFF
            if not keep_ts:
                gap = self.ts_gap
                if now is not None and self._last_time is not None and now > self._last_time:
                    gap = max(gap, int((now - self._last_time) * self.clock_rate))
                self._ts_offset = (self._last_ts + gap - ts) & 0xFFFFFFFF
                self.switches += 1
        self._source_ssrc = ssrc
        self._epoch_first = (seq + self._seq_offset) & 0xFFFF
        self._last_seq = (self._epoch_first - 1) & 0xFFFF
        self._last_ts = (ts + self._ts_offset) & 0xFFFFFFFF

    def map(self, seq: int, ts: int, ssrc: int, now: float | None = None) -> tuple[int, int]:
        """What ``rewrite_in_place`` does, on fields already parsed: the outgoing (seq,
        timestamp) of a packet of source ``ssrc`` (the outgoing SSRC is ``out_ssrc``).  For a
        forwarder that parses a packet once and writes each subscriber's header itself."""
        if self._resync or ssrc != self._source_ssrc:
            self._anchor(seq, ts, ssrc, now)
        out_seq = (seq + self._seq_offset) & 0xFFFF
        out_ts = (ts + self._ts_offset) & 0xFFFFFFFF
        if ((out_seq - self._last_seq) & 0xFFFF) < 0x8000:
            self._last_seq = out_seq
            self._last_ts = out_ts
            if now is not None:
                self._last_time = now
            if ((out_seq - self._epoch_first) & 0xFFFF) >= 0x4000:
                # a long epoch: keep its start within reach so the 16-bit range check in
                # source_seq/retransmit never wraps (NACKs that old are moot anyway)
                self._epoch_first = (out_seq - 0x2000) & 0xFFFF
        return out_seq, out_ts

    def rewrite_in_place(self, buf: bytearray, now: float | None = None) -> int:
        """Rewrite SSRC, seq and timestamp of ``buf`` in place; returns the outgoing seq.
        ``now`` (arrival time in seconds, any monotonic clock) lets a switch after a pause
        advance the timestamp by the real time elapsed.  ValueError if shorter than 12 bytes."""
        if len(buf) < 12:
            raise ValueError("RTP packet shorter than its fixed header")
        seq, ts, ssrc = _SEQ_TS_SSRC.unpack_from(buf, 2)
        out_seq, out_ts = self.map(seq, ts, ssrc, now)
        _SEQ_TS_SSRC.pack_into(buf, 2, out_seq, out_ts, self.out_ssrc)
        return out_seq

    def rewrite(self, packet: bytes | bytearray, now: float | None = None) -> bytes:
        """Like ``rewrite_in_place`` on a copy; returns the rewritten packet."""
        buf = bytearray(packet)
        self.rewrite_in_place(buf, now)
        return bytes(buf)

    def source_seq(self, out_seq: int) -> int | None:
        """The current source's seq for an outgoing seq sent in the current epoch (a subscriber's
        NACK), or None when that seq was not sent from the current source (or is more than
        8192..16384 packets old)."""
        if self._source_ssrc is None:
            return None
        if ((out_seq - self._epoch_first) & 0xFFFF) > ((self._last_seq - self._epoch_first) & 0xFFFF):
            return None
        return (out_seq - self._seq_offset) & 0xFFFF

    def retransmit(self, packet: bytes | bytearray) -> bytes | None:
        """Rewrite a cached packet of the current source for retransmission, without moving the
        anchor or re-anchoring; None when it is not from the current epoch (or malformed)."""
        if len(packet) < 12:
            return None
        seq, ts, ssrc = _SEQ_TS_SSRC.unpack_from(packet, 2)
        if ssrc != self._source_ssrc:
            return None
        out_seq = (seq + self._seq_offset) & 0xFFFF
        if ((out_seq - self._epoch_first) & 0xFFFF) > ((self._last_seq - self._epoch_first) & 0xFFFF):
            return None
        buf = bytearray(packet)
        _SEQ_TS_SSRC.pack_into(buf, 2, out_seq, (ts + self._ts_offset) & 0xFFFFFFFF, self.out_ssrc)
        return bytes(buf)


# The reference implementation.  ``SlotRewriter`` is media._fastpath's when that is built: the
# same API and results (tests/media/test_rewriters_compiled.py runs both on the same packets),
# with its state in C where the compiled fan-out (media.forwarder) reads it.
PySlotRewriter = SlotRewriter
if not TYPE_CHECKING and native.fastpath is not None:
    SlotRewriter = native.fastpath.SlotRewriter  # noqa: F811
