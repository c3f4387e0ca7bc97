"""VP8 RTP payload (RFC 7741): descriptor parsing, keyframe detection, and a per-slot rewriter
that keeps PictureID, TL0PICIDX and KEYIDX continuous when the source feeding a slot changes.
Pure: works on bytes/bytearray at an offset (the RTP payload offset), never raises on bad input.

The payload descriptor::

         0 1 2 3 4 5 6 7
        +-+-+-+-+-+-+-+-+
        |X|R|N|S|R| PID |   S: start of a partition, PID: partition index
        +-+-+-+-+-+-+-+-+
   X:   |I|L|T|K| RSV   |
        +-+-+-+-+-+-+-+-+
   I:   |M| PictureID   |   M: 15-bit PictureID (one more byte follows)
        +-+-+-+-+-+-+-+-+
   L:   |   TL0PICIDX   |
        +-+-+-+-+-+-+-+-+
   T/K: |TID|Y| KEYIDX  |
        +-+-+-+-+-+-+-+-+

Usage (``off`` = RTP payload offset, from ``media.rtp_rewrite.payload_offset``)::

    d = parse_descriptor(packet, off)         # Vp8Descriptor or None
    if is_keyframe(packet, off): ...          # first packet of a keyframe (S=1, PID=0, P=0)
    size = keyframe_size(packet, off)         # (width, height) of that keyframe, else None

    vp8 = Vp8Rewriter()                       # one per outgoing video slot, next to its SlotRewriter
    buf = bytearray(packet)
    buf = vp8.rewrite(buf, off, source_ssrc)  # same buffer, or a new one one byte longer when a
    if buf is None: drop                      # 7-bit PictureID source is widened to 15 bits
    vp8.switch()                              # together with SlotRewriter.switch()
    out = vp8.picture_id(pid, source_ssrc)    # fast path for a 15-bit PictureID-only descriptor:
                                              # the outgoing PictureID, -1: use rewrite()

Fan-out: parse once per incoming packet, apply per subscriber copy::

    layout = descriptor_layout(packet, off)   # None: truncated, drop
    for each subscriber slot fed by this source:
        buf = vp8.rewrite(bytearray(packet), off, source_ssrc, layout)

The outgoing PictureID is always 15 bits (M=1), as browsers send it: a source that uses 7-bit
PictureIDs is unwrapped and widened (the descriptor grows by one byte, so ``rewrite`` returns a
new bytearray).  A source without PictureID (I=0) is forwarded with its descriptor unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from media import native

__all__ = ["PyVp8Rewriter", "Vp8Descriptor", "Vp8Rewriter", "descriptor_layout", "is_keyframe", "keyframe_size", "parse_descriptor"]

_START_CODE = b"\x9d\x01\x2a"


class Vp8Descriptor(NamedTuple):
    start: bool              # S: first packet of a partition
    partition_id: int        # PID
    non_reference: bool      # N
    picture_id: int | None
    picture_id_bits: int     # 0 (absent), 7 or 15
    tl0picidx: int | None
    tid: int | None
    layer_sync: bool         # Y
    keyidx: int | None
    size: int                # descriptor length in bytes (the VP8 payload starts after it)


def parse_descriptor(buf: bytes | bytearray, offset: int = 0) -> Vp8Descriptor | None:
    """The payload descriptor at ``offset``, or None when truncated (at least one byte of VP8
    payload must follow the descriptor)."""
    n = len(buf)
    if offset < 0 or offset >= n:
        return None
    b = buf[offset]
    i = offset + 1
    pid: int | None = None
    bits = 0
    tl0: int | None = None
    tid: int | None = None
    sync = False
    keyidx: int | None = None
    if b & 0x80:
        if i >= n:
            return None
        x = buf[i]
        i += 1
        if x & 0x80:
            if i >= n:
                return None
            if buf[i] & 0x80:
                if i + 1 >= n:
                    return None
                pid, bits = ((buf[i] & 0x7F) << 8) | buf[i + 1], 15
                i += 2
            else:
                pid, bits = buf[i], 7
                i += 1
        if x & 0x40:
            if i >= n:
                return None
            tl0 = buf[i]
            i += 1
        if x & 0x30:
            if i >= n:
                return None
            tk = buf[i]
            i += 1
            if x & 0x20:
                tid, sync = tk >> 6, bool(tk & 0x20)
            if x & 0x10:
                keyidx = tk & 0x1F
    if i >= n:
        return None
    return Vp8Descriptor(bool(b & 0x10), b & 0x07, bool(b & 0x20), pid, bits, tl0, tid, sync, keyidx,
                         i - offset)


def _vp8_payload_start(buf: bytes | bytearray, offset: int) -> int:
    """Offset of the VP8 payload after the descriptor, -1 when truncated (internal fast path)."""
    n = len(buf)
    if offset < 0 or offset >= n:
        return -1
    i = offset + 1
    if buf[offset] & 0x80:
        if i >= n:
            return -1
        x = buf[i]
        i += 1
        if x & 0x80:
            if i >= n:
                return -1
            i += 2 if buf[i] & 0x80 else 1
        if x & 0x40:
            i += 1
        if x & 0x30:
            i += 1
    return i if i < n else -1


def is_keyframe(buf: bytes | bytearray, offset: int = 0) -> bool:
    """True for the first packet of a VP8 keyframe: S=1, PID=0, the frame tag's P bit clear and
    the keyframe start code 9d 01 2a present."""
    if offset < 0 or offset >= len(buf) or buf[offset] & 0x17 != 0x10:
        return False
    i = _vp8_payload_start(buf, offset)
    if i < 0 or buf[i] & 0x01:
        return False
    return buf[i + 3:i + 6] == _START_CODE


def keyframe_size(buf: bytes | bytearray, offset: int = 0) -> tuple[int, int] | None:
    """(width, height) from the first packet of a keyframe, None for any other packet."""
    if not is_keyframe(buf, offset):
        return None
    i = _vp8_payload_start(buf, offset) + 6
    if i + 4 > len(buf):
        return None
    return (buf[i] | (buf[i + 1] << 8)) & 0x3FFF, (buf[i + 2] | (buf[i + 3] << 8)) & 0x3FFF


def descriptor_layout(buf: bytes | bytearray, offset: int = 0) -> tuple[int, int, int, int] | None:
    """Where the rewritable fields sit: (PictureID position, its bits 0/7/15, TL0PICIDX position,
    T/K byte position if KEYIDX is present), -1 for an absent field, positions absolute in
    ``buf``; None when truncated.  Compute it once per incoming packet and pass it to
    ``Vp8Rewriter.rewrite`` of every subscriber's slot (each works on a copy of that packet)."""
    n = len(buf)
    if offset < 0 or offset >= n:
        return None
    if not buf[offset] & 0x80:
        return (-1, 0, -1, -1) if offset + 1 < n else None
    i = offset + 1
    if i >= n:
        return None
    x = buf[i]
    i += 1
    pid_pos = -1
    bits = 0
    if x & 0x80:
        if i >= n:
            return None
        pid_pos = i
        if buf[i] & 0x80:
            bits = 15
            i += 2
        else:
            bits = 7
            i += 1
    tl0_pos = -1
    if x & 0x40:
        tl0_pos = i
        i += 1
    tk_pos = i if x & 0x10 else -1  # only KEYIDX (the K bit) is rewritten in the T/K byte
    if x & 0x30:
        i += 1
    if i >= n:
        return None
    return pid_pos, bits, tl0_pos, tk_pos


class Vp8Rewriter:
    """Keeps one outgoing slot's PictureID (15-bit), TL0PICIDX (8-bit) and KEYIDX (5-bit)
    continuous across source switches.  After ``switch()`` (or a change of ``source_ssrc``) each
    field re-anchors on the next packet carrying it: outgoing value = last outgoing + 1.  The
    very first source passes its values through.  Late packets use the current mapping and never
    move the anchors, so retransmissions get the values they were first sent with."""

    __slots__ = ("_source_ssrc", "_pid_anchor", "_pid_seen", "_pid_bits", "_pid_src", "_pid_ext", "_pid_offset",
                 "_pid_last", "_tl0_anchor", "_tl0_seen", "_tl0_offset", "_tl0_last", "_key_anchor", "_key_seen",
                 "_key_offset", "_key_last")

    def __init__(self) -> None:
        self._source_ssrc: int | None = None
        self._pid_anchor = True
        self._pid_seen = False
        self._pid_bits = 0
        self._pid_src = 0       # newest raw source PictureID
        self._pid_ext = 0       # its unwrapped value
        self._pid_offset = 0
        self._pid_last = 0      # newest outgoing PictureID
        self._tl0_anchor = True
        self._tl0_seen = False
        self._tl0_offset = 0
        self._tl0_last = 0
        self._key_anchor = True
        self._key_seen = False
        self._key_offset = 0
        self._key_last = 0

    @property
    def last_picture_id(self) -> int | None:
        return self._pid_last if self._pid_seen else None

    @property
    def last_tl0picidx(self) -> int | None:
        return self._tl0_last if self._tl0_seen else None

    def switch(self) -> None:
        """The slot's source changes: re-anchor every field on the next packet."""
        self._pid_anchor = self._tl0_anchor = self._key_anchor = True

    def rewrite(self, buf: bytearray, offset: int, source_ssrc: int | None = None,
                layout: tuple[int, int, int, int] | None = None) -> bytearray | None:
        """Rewrite the descriptor of the packet in ``buf`` whose RTP payload starts at ``offset``
        (``layout``: from ``descriptor_layout`` of the same packet, saves parsing it again).
        Returns ``buf`` itself (changed in place), or a new bytearray when a 7-bit PictureID was
        widened, or None when the descriptor is truncated (drop the packet)."""
        if source_ssrc is not None and source_ssrc != self._source_ssrc:
            if self._source_ssrc is not None:
                self.switch()
            self._source_ssrc = source_ssrc
        if layout is None:
            layout = descriptor_layout(buf, offset)
            if layout is None:
                return None
        pid_pos, bits, tl0_pos, tk_pos = layout
        if bits == 15 and tl0_pos < 0 and tk_pos < 0:
            # the common case (browsers without temporal layers): PictureID only, mid-epoch
            out = self.picture_id(((buf[pid_pos] & 0x7F) << 8) | buf[pid_pos + 1])
            if out >= 0:
                buf[pid_pos] = 0x80 | (out >> 8)
                buf[pid_pos + 1] = out & 0xFF
                return buf
        return self._apply(buf, layout, True)

    def picture_id(self, pid: int, source_ssrc: int | None = None) -> int:
        """The fast path of ``rewrite`` for a descriptor whose only rewritable field is a 15-bit
        PictureID ``pid``: the outgoing 15-bit PictureID (write it with the M bit), or -1 when
        that packet needs ``rewrite`` instead (a switch or another source, an anchor due, a
        source that used 7-bit PictureIDs so far); nothing changes then."""
        if (source_ssrc is not None and source_ssrc != self._source_ssrc) or self._pid_anchor \
                or self._pid_bits != 15:
            return -1
        d = (pid - self._pid_src) & 0x7FFF
        if d >= 0x4000:
            d -= 0x8000
        ext = self._pid_ext + d
        if d > 0:
            self._pid_src = pid
            self._pid_ext = ext
        out = (ext + self._pid_offset) & 0x7FFF
        if ((out - self._pid_last) & 0x7FFF) < 0x4000:
            self._pid_last = out
        return out

    def retransmit(self, buf: bytearray, offset: int) -> bytearray | None:
        """Rewrite a retransmitted packet of the current source with the current mapping, never
        re-anchoring, even while a switch is pending (None when no mapping exists yet or the
        descriptor is truncated)."""
        layout = descriptor_layout(buf, offset)
        if layout is None:
            return None
        return self._apply(buf, layout, False)

    def _apply(self, buf: bytearray, layout: tuple[int, int, int, int], may_anchor: bool) -> bytearray | None:
        pid_pos, bits, tl0_pos, tk_pos = layout
        if tl0_pos >= 0:
            tl0 = buf[tl0_pos]
            if may_anchor and (self._tl0_anchor or not self._tl0_seen):
                self._tl0_offset = (self._tl0_last + 1 - tl0) & 0xFF if self._tl0_seen else 0
                self._tl0_last = (tl0 + self._tl0_offset - 1) & 0xFF
                self._tl0_anchor = False
                self._tl0_seen = True
            elif not self._tl0_seen:
                return None
            out = (tl0 + self._tl0_offset) & 0xFF
            if ((out - self._tl0_last) & 0xFF) < 0x80:
                self._tl0_last = out
            buf[tl0_pos] = out
        if tk_pos >= 0:
            key = buf[tk_pos] & 0x1F
            if may_anchor and (self._key_anchor or not self._key_seen):
                self._key_offset = (self._key_last + 1 - key) & 0x1F if self._key_seen else 0
                self._key_last = (key + self._key_offset - 1) & 0x1F
                self._key_anchor = False
                self._key_seen = True
            elif not self._key_seen:
                return None
            out = (key + self._key_offset) & 0x1F
            if ((out - self._key_last) & 0x1F) < 0x10:
                self._key_last = out
            buf[tk_pos] = (buf[tk_pos] & 0xE0) | out
        if pid_pos < 0:
            return buf

        if bits == 15:
            pid = ((buf[pid_pos] & 0x7F) << 8) | buf[pid_pos + 1]
        else:
            pid = buf[pid_pos]
        if bits != self._pid_bits or not self._pid_seen:
            if not may_anchor:
                return None
            self._pid_anchor = True
        if self._pid_anchor and may_anchor:
            self._pid_anchor = False
            self._pid_bits = bits
            self._pid_src = pid
            self._pid_ext = pid
            self._pid_offset = (self._pid_last + 1 - pid) & 0x7FFF if self._pid_seen else 0
            self._pid_seen = True
            self._pid_last = (pid + self._pid_offset - 1) & 0x7FFF
            ext = pid
        else:
            if bits == 15:
                d = (pid - self._pid_src) & 0x7FFF
                if d >= 0x4000:
                    d -= 0x8000
            else:
                d = (pid - self._pid_src) & 0x7F
                if d >= 0x40:
                    d -= 0x80
            ext = self._pid_ext + d
            if d > 0 and may_anchor:
                self._pid_src = pid
                self._pid_ext = ext
        out = (ext + self._pid_offset) & 0x7FFF
        if ((out - self._pid_last) & 0x7FFF) < 0x4000:
            self._pid_last = out
        if bits == 15:
            buf[pid_pos] = 0x80 | (out >> 8)
            buf[pid_pos + 1] = out & 0xFF
            return buf
        wide = bytearray(buf[:pid_pos])
        wide.append(0x80 | (out >> 8))
        wide.append(out & 0xFF)
        wide += buf[pid_pos + 1:]
        return wide


# The reference implementation.  ``Vp8Rewriter`` is media._fastpath's when that is built: the
# same API and results (tests/media/test_rewriters_compiled.py runs both on the same packets).
PyVp8Rewriter = Vp8Rewriter
if not TYPE_CHECKING and native.fastpath is not None:
    Vp8Rewriter = native.fastpath.Vp8Rewriter  # noqa: F811
