"""H.264 RTP payload (RFC 6184): which NAL units a packet starts, and keyframe detection.
Pure: works on bytes/bytearray at an offset (the RTP payload offset), never raises.

Usage (``off`` = RTP payload offset, from ``media.rtp_rewrite.payload_offset``)::

    nal_types(packet, off)     # [7, 8, 5] for a STAP-A with SPS, PPS and an IDR slice
    is_keyframe(packet, off)   # True when the packet starts an IDR slice or carries an SPS

Packetizations: single NAL unit (types 1-23), STAP-A (24), STAP-B (25), FU-A (28) and FU-B (29):
a fragmentation unit counts only in its first fragment (S bit).  MTAP (26, 27) is not used by
browsers and yields no NAL units.

A keyframe for the forwarder is where a decoder can start: browsers send SPS and PPS right
before each IDR (in one STAP-A, or as single NAL packets just ahead of it), so the first packet
with an SPS or an IDR start is where a switch can happen.  A decoder also needs the PPS: if a
source sends IDRs without in-band SPS/PPS, ask for ``require_sps=True`` and a keyframe request
(PLI/FIR) makes conforming encoders resend them.
"""

from __future__ import annotations

__all__ = ["IDR", "PPS", "SPS", "is_keyframe", "nal_types"]

IDR = 5
SEI = 6
SPS = 7
PPS = 8
STAP_A = 24
STAP_B = 25
FU_A = 28
FU_B = 29


def nal_types(buf: bytes | bytearray, offset: int = 0) -> list[int]:
    """Types of the NAL units that start in this packet ([] for an FU continuation, a malformed
    or an empty payload).  An aggregation packet cut short yields the units before the cut."""
    n = len(buf)
    if offset < 0 or offset >= n:
        return []
    t = buf[offset] & 0x1F
    if 0 < t < 24:
        return [t]
    if t == STAP_A or t == STAP_B:
        i = offset + (1 if t == STAP_A else 3)
        out: list[int] = []
        while i + 2 < n:
            size = (buf[i] << 8) | buf[i + 1]
            if size == 0 or i + 2 + size > n:
                break
            out.append(buf[i + 2] & 0x1F)
            i += 2 + size
        return out
    if t == FU_A or t == FU_B:
        if offset + 1 >= n:
            return []
        fu = buf[offset + 1]
        return [fu & 0x1F] if fu & 0x80 else []
    return []


def is_keyframe(buf: bytes | bytearray, offset: int = 0, require_sps: bool = False) -> bool:
    """True when the packet carries an SPS or starts an IDR slice (with ``require_sps``: only
    when it carries an SPS)."""
    n = len(buf)
    if offset < 0 or offset >= n:
        return False
    t = buf[offset] & 0x1F
    if t == SPS:
        return True
    if t == IDR or t == FU_A or t == FU_B:
        return not require_sps and IDR in nal_types(buf, offset)
    if t == STAP_A or t == STAP_B:
        types = nal_types(buf, offset)
        return SPS in types or (not require_sps and IDR in types)
    return False
