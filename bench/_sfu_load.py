"""Pure cores of the SFU load generator: paced replay of the fixture, receive-side counting.

No sockets here.  A publisher asks ``SiteReplay.due(now)`` for the packets whose send time has
come and hands them to its sender; a subscriber feeds every received RTP packet to
``ReceiveStats.record``.  Latency: the publisher records its send time under (SSRC, seq); the
subscriber maps a forwarded packet back to that key (via the SFU's rewrite mapping, known to
the harness) and ``ReceiveStats`` keeps the difference.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from bench._sfu_fixtures import (
    AUDIO_CLOCK,
    AUDIO_FRAME_S,
    FPS,
    VIDEO_CLOCK,
    MediaFixture,
    audio_level_extension,
    build_rtp_header,
    site_audio_level,
)


@dataclass(order=True)
class ScheduledPacket:
    send_at: float
    ssrc: int
    seq: int
    data: bytes = field(compare=False)


class SiteReplay:
    """One site's audio + video at real pace, looping the fixture with continuous seq/timestamps."""

    def __init__(
        self, fixture: MediaFixture, site: int, video_ssrc: int, audio_ssrc: int, video_pt: int = 96, audio_pt: int = 111
    ) -> None:
        self.fixture = fixture
        self.site = site
        self.video_ssrc, self.audio_ssrc = video_ssrc, audio_ssrc
        self.video_pt, self.audio_pt = video_pt, audio_pt
        self._video_seq = 1000 * site
        self._audio_seq = 1000 * site
        self._video_frame = 0
        self._audio_packet = 0

    def due(self, elapsed: float) -> list[ScheduledPacket]:
        """Packets whose send time (seconds since start) is <= elapsed, in send order."""
        out: list[ScheduledPacket] = []
        frames = self.fixture.video_frames
        while self._video_frame / FPS <= elapsed:
            frame = frames[self._video_frame % len(frames)]
            ts = self._video_frame * (VIDEO_CLOCK // FPS)
            for i, payload in enumerate(frame.payloads):
                marker = i == len(frame.payloads) - 1
                seq = self._video_seq & 0xFFFF
                header = build_rtp_header(self.video_pt, marker, seq, ts, self.video_ssrc)
                out.append(ScheduledPacket(self._video_frame / FPS, self.video_ssrc, seq, header + payload))
                self._video_seq += 1
            self._video_frame += 1
        audio = self.fixture.audio_payloads
        while self._audio_packet * AUDIO_FRAME_S <= elapsed:
            n = self._audio_packet
            seq = self._audio_seq & 0xFFFF
            ts = n * int(AUDIO_CLOCK * AUDIO_FRAME_S)
            header = build_rtp_header(self.audio_pt, False, seq, ts, self.audio_ssrc, extension=True)
            data = header + audio_level_extension(site_audio_level(self.site, n)) + audio[n % len(audio)]
            out.append(ScheduledPacket(n * AUDIO_FRAME_S, self.audio_ssrc, seq, data))
            self._audio_seq += 1
            self._audio_packet += 1
        out.sort()
        return out


_SEQ_SSRC = struct.Struct("!2xH4xI")


class ReceiveStats:
    """Counts packets and frames (marker bits) per SSRC without decoding; keeps latencies."""

    def __init__(self) -> None:
        self.packets: dict[int, int] = {}
        self.frames: dict[int, int] = {}
        self.latencies_s: list[float] = []

    def record(self, rtp: bytes, received_at: float, sent_at: float | None = None) -> None:
        seq, ssrc = _SEQ_SSRC.unpack_from(rtp)
        self.packets[ssrc] = self.packets.get(ssrc, 0) + 1
        if rtp[1] & 0x80:
            self.frames[ssrc] = self.frames.get(ssrc, 0) + 1
        if sent_at is not None:
            self.latencies_s.append(received_at - sent_at)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]
