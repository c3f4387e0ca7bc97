"""RTP header rewriting for one outgoing slot stream: SSRC, sequence number and timestamp stay
continuous when the source feeding the slot changes.  Pure: works on bytes with ``struct``."""

from __future__ import annotations

import struct

_SEQ_TS_SSRC = struct.Struct("!HII")  # bytes 2..12 of the fixed RTP header


class SlotRewriter:
    """Maps packets of the current source onto one outgoing (ssrc, seq, ts) space.

    On ``switch`` the next packet of the new source continues the outgoing sequence at
    last + 1 and the timestamp at last + ``ts_gap`` (one frame, by default 90 kHz / 30 fps)."""

    def __init__(self, out_ssrc: int, ts_gap: int = 3000):
        self.out_ssrc = out_ssrc
        self.ts_gap = ts_gap
        self._seq_offset = 0
        self._ts_offset = 0
        self._last_seq: int | None = None
        self._last_ts: int | None = None
        self._resync = True

    def switch(self) -> None:
        """The slot's source changes: re-anchor on the next packet."""
        self._resync = True

    def rewrite(self, packet: bytes) -> bytes:
        seq, ts, _ssrc = _SEQ_TS_SSRC.unpack_from(packet, 2)
        if self._resync:
            self._resync = False
            if self._last_seq is None or self._last_ts is None:
                self._seq_offset = 0
                self._ts_offset = 0
            else:
                self._seq_offset = (self._last_seq + 1 - seq) & 0xFFFF
                self._ts_offset = (self._last_ts + self.ts_gap - ts) & 0xFFFFFFFF
        out_seq = (seq + self._seq_offset) & 0xFFFF
        out_ts = (ts + self._ts_offset) & 0xFFFFFFFF
        if self._last_seq is None or ((out_seq - self._last_seq) & 0xFFFF) < 0x8000:
            self._last_seq = out_seq
            self._last_ts = out_ts
        buf = bytearray(packet)
        _SEQ_TS_SSRC.pack_into(buf, 2, out_seq, out_ts, self.out_ssrc)
        return bytes(buf)
