"""Pure cores of the SFU load generator: paced replay of the fixture, receive-side counting.

No sockets here.  A publisher asks ``SiteReplay.due(now)`` for the packets whose send time has
come and hands them to its sender; a subscriber feeds every received RTP packet to
``ReceiveStats.record`` (or ``StreamStats.record``, per MID).

Latency without any help from the SFU: the generator appends to each packet's payload a 4-byte
index into its table of send times (plus a magic).  A forwarder rewrites headers (and may drop
extensions or RTP padding, as ours does) but forwards the payload's bytes, so the subscriber
reads the tag back (``packet_tag``) whatever SSRC, sequence number or timestamp the SFU gave the
packet, and across slot switches.  Nobody decodes in the benchmark, so the trailer costs nothing.

Publishers answer keyframe requests like a browser would: ``keyframe_requests(rtcp)`` finds the
SSRCs named by PLI/FIR in a compound RTCP packet and ``SiteReplay.request_keyframe(ssrc)`` makes
the replay jump to the fixture's keyframe (sequence numbers and timestamps stay continuous).

``next_site_count`` plans the search for the largest meeting the SFU holds on one core.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from bench._sfu_fixtures import (
    AUDIO_CLOCK,
    AUDIO_FRAME_S,
    AUDIO_LEVEL_EXT_ID,
    FPS,
    VIDEO_CLOCK,
    MediaFixture,
    VideoFrameRtp,
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


class _VideoLayer:
    """One looping video layer: continuous seq/timestamps, can jump to the keyframe on request."""

    def __init__(self, frames: list[VideoFrameRtp], ssrc: int, pt: int, first_seq: int) -> None:
        self.frames = frames
        self.ssrc = ssrc
        self.pt = pt
        self.seq = first_seq
        self.sent = 0          # frames sent so far (drives pacing and the timestamp)
        self.position = 0      # index of the next fixture frame
        self.keyframes_sent_on_request = 0
        self.paused = False    # the SFU asked for no packets of this layer (a browser's inactive encoding)

    def due(self, elapsed: float, out: list[ScheduledPacket]) -> None:
        while self.sent / FPS <= elapsed:
            if self.paused:    # the clock runs on; no frame is encoded, no sequence number used
                self.sent += 1
                continue
            frame = self.frames[self.position % len(self.frames)]
            ts = self.sent * (VIDEO_CLOCK // FPS)
            last = len(frame.payloads) - 1
            for i, payload in enumerate(frame.payloads):
                seq = self.seq & 0xFFFF
                header = build_rtp_header(self.pt, i == last, seq, ts, self.ssrc)
                out.append(ScheduledPacket(self.sent / FPS, self.ssrc, seq, header + payload))
                self.seq += 1
            self.sent += 1
            self.position += 1

    def set_paused(self, paused: bool) -> None:
        """Stop or restart sending, as a browser whose encoding is set inactive or active: a
        restarted encoder begins with a keyframe."""
        if self.paused and not paused:
            self.position = 0
        self.paused = paused

    def request_keyframe(self) -> None:
        """The next frame sent is the fixture's first frame (a keyframe), unless one is next anyway."""
        if not self.frames[self.position % len(self.frames)].keyframe:
            self.position = 0
            self.keyframes_sent_on_request += 1


class SiteReplay:
    """One site's audio + video at real pace, looping the fixture with continuous seq/timestamps.

    ``thumb``/``thumb_ssrc``: an optional second video layer (the thumbnail a site publishes
    besides its full camera layer).  ``audio_level_id``: the RFC 6464 extension id the SDP
    negotiated.  ``phase``: seconds this site's clock lags the generator's (real sites are not
    frame-synchronised; the caller passes ``elapsed`` of the generator)."""

    def __init__(
        self,
        fixture: MediaFixture,
        site: int,
        video_ssrc: int,
        audio_ssrc: int,
        video_pt: int = 96,
        audio_pt: int = 111,
        *,
        audio_level_id: int = AUDIO_LEVEL_EXT_ID,
        thumb: MediaFixture | None = None,
        thumb_ssrc: int = 0,
        phase: float = 0.0,
    ) -> None:
        self.fixture = fixture
        self.site = site
        self.video_ssrc, self.audio_ssrc, self.thumb_ssrc = video_ssrc, audio_ssrc, thumb_ssrc
        self.video_pt, self.audio_pt = video_pt, audio_pt
        self.audio_level_id = audio_level_id
        self.phase = phase
        self.layers = [_VideoLayer(fixture.video_frames, video_ssrc, video_pt, 1000 * site)]
        if thumb is not None:
            self.layers.append(_VideoLayer(thumb.video_frames, thumb_ssrc, video_pt, 1000 * site + 500))
        self._audio_seq = 1000 * site
        self._audio_packet = 0

    @property
    def _video_seq(self) -> int:  # the full layer's next sequence number (unwrapped)
        return self.layers[0].seq

    def due(self, elapsed: float) -> list[ScheduledPacket]:
        """Packets whose send time (seconds since start) is <= elapsed, in send order."""
        out: list[ScheduledPacket] = []
        elapsed -= self.phase
        if elapsed < 0:
            return out
        for layer in self.layers:
            layer.due(elapsed, out)
        audio = self.fixture.audio_payloads
        while self._audio_packet * AUDIO_FRAME_S <= elapsed:
            n = self._audio_packet
            seq = self._audio_seq & 0xFFFF
            ts = n * int(AUDIO_CLOCK * AUDIO_FRAME_S)
            header = build_rtp_header(self.audio_pt, False, seq, ts, self.audio_ssrc, extension=True)
            level = audio_level_extension(site_audio_level(self.site, n), self.audio_level_id)
            out.append(ScheduledPacket(n * AUDIO_FRAME_S, self.audio_ssrc, seq, header + level + audio[n % len(audio)]))
            self._audio_seq += 1
            self._audio_packet += 1
        out.sort()
        return out

    def next_due(self) -> float:
        """Elapsed time (generator clock, phase included) at which ``due`` will return packets."""
        video = min(layer.sent for layer in self.layers) / FPS
        return self.phase + min(video, self._audio_packet * AUDIO_FRAME_S)

    def set_paused(self, paused: list[str]) -> None:
        """Obey the SFU's ``layers`` event: ``paused`` names layers (``camera``, ``thumb``) to stop."""
        for name, layer in zip(("camera", "thumb"), self.layers):
            layer.set_paused(name in paused)

    def request_keyframe(self, ssrc: int) -> bool:
        """A PLI/FIR named ``ssrc``: that layer restarts at its keyframe.  False: not ours."""
        for layer in self.layers:
            if layer.ssrc == ssrc:
                layer.request_keyframe()
                return True
        return False

    @property
    def keyframes_on_request(self) -> int:
        return sum(layer.keyframes_sent_on_request for layer in self.layers)


# ---- latency tags (payload trailer) ----

TAG_MAGIC = b"LTag"
TAG_SIZE = 8  # 4-byte tag + magic


def tag_packet(rtp: bytes, tag: int) -> bytes:
    """``rtp`` with 8 octets appended to its payload: ``tag`` (0..2**32-1) and a magic.  Nothing
    on the path decodes media, so only the payload's end changes; the VP8 payload descriptor and
    the start of the VP8/Opus data, which an SFU reads, stay as they were."""
    return rtp + tag.to_bytes(4, "big") + TAG_MAGIC


def packet_tag(rtp: bytes) -> int | None:
    """The tag ``tag_packet`` appended, or None (an untagged packet)."""
    if len(rtp) < 12 + TAG_SIZE or rtp[-4:] != TAG_MAGIC:
        return None
    return int.from_bytes(rtp[-8:-4], "big")


# ---- RTCP: keyframe requests to a publisher ----

_RTCP_HEADER = struct.Struct("!BBH")
_SSRC = struct.Struct("!I")


def keyframe_requests(rtcp: bytes) -> list[int]:
    """Media SSRCs named by PLI (RFC 4585, PT 206 FMT 1) and FIR (RFC 5104, PT 206 FMT 4)
    in a (compound) RTCP packet.  Malformed tails are ignored."""
    out: list[int] = []
    pos = 0
    while pos + 4 <= len(rtcp):
        first, pt, words = _RTCP_HEADER.unpack_from(rtcp, pos)
        end = pos + 4 * (words + 1)
        if first >> 6 != 2 or end > len(rtcp):
            break
        fmt = first & 0x1F
        if pt == 206 and fmt == 1 and end >= pos + 12:
            out.append(_SSRC.unpack_from(rtcp, pos + 8)[0])
        elif pt == 206 and fmt == 4:
            for entry in range(pos + 12, end - 7, 8):
                out.append(_SSRC.unpack_from(rtcp, entry)[0])
        pos = end
    return out


# ---- receive side ----

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


class StreamStats:
    """One subscriber's counts per MID (packets; frames = marker bits) and, while ``measuring``,
    the send-to-receive latency of every tagged packet, looked up in ``send_times`` (shared
    with the publishers of the same generator)."""

    def __init__(self, send_times: list[float]) -> None:
        self.send_times = send_times
        self.packets: dict[str | None, int] = {}
        self.frames: dict[str | None, int] = {}
        self.latencies_s: list[float] = []
        self.untagged = 0
        self.measuring = False

    def record(self, rtp: bytes, mid: str | None, arrival: float) -> None:
        packets = self.packets
        packets[mid] = packets.get(mid, 0) + 1
        if rtp[1] & 0x80:
            self.frames[mid] = self.frames.get(mid, 0) + 1
        if self.measuring:
            tag = packet_tag(rtp)
            if tag is None or tag >= len(self.send_times):
                self.untagged += 1
            else:
                self.latencies_s.append(arrival - self.send_times[tag])

    def total_packets(self) -> int:
        return sum(self.packets.values())


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def site_phase(site: int) -> float:
    """A spread, deterministic offset within one frame interval (golden-ratio sequence)."""
    return (site * 0.6180339887) % 1.0 / FPS


# ---- the search for the largest meeting on one core ----


@dataclass(frozen=True)
class Trial:
    """One measured meeting size: ``held`` = every subscribed video stream at full frame rate,
    every audio slot fed, and the SFU under one core; ``limited_by`` = why the measurement
    itself, not the SFU, was the limit ("load generator": it fell behind its schedule;
    "contention": other processes held the SFU's core).  A failure then says nothing about
    the SFU, and a larger S would measure the limit, not the SFU."""

    sites: int
    held: bool
    limited_by: str | None = None

    @property
    def generator_limited(self) -> bool:
        return self.limited_by is not None


def next_site_count(trials: list[Trial], growth: float = 1.5, resolution: float = 0.1, ceiling: int = 400) -> int | None:
    """The next S to try, or None when the search is over.  Grow by ``growth`` while every
    trial held, halve while none did, then bisect between the largest S that held and the
    smallest that failed, down to ``resolution`` (relative).  Never at or above a size where
    the load generator fell behind; below such a size, with no SFU failure yet, bisect between
    the largest S that held and it (the generator may still keep up there)."""
    if not trials:
        return None
    tried = {t.sites for t in trials}
    failed = [t.sites for t in trials if not t.held and not t.generator_limited]
    limit = min((t.sites for t in trials if t.generator_limited), default=ceiling + 1)
    hi = min(failed) if failed else None
    lo = largest_held(trials)
    if hi is None:
        if lo is None or lo >= limit:
            return None
        if limit <= ceiling:    # the generator fell behind there: close in on it from below
            if limit - lo <= max(1, round(lo * resolution)):
                return None
            nxt = (lo + limit) // 2
        else:
            nxt = min(ceiling, max(lo + 1, round(lo * growth)))
    elif lo is None:
        nxt = hi // 2
    else:
        if hi - lo <= max(1, round(lo * resolution)):
            return None
        nxt = (lo + hi) // 2
    if nxt < 1 or nxt >= limit or nxt in tried:
        return None
    return nxt


def largest_held(trials: list[Trial]) -> int | None:
    """The largest S that held below the smallest failure, or None."""
    failed = [t.sites for t in trials if not t.held and not t.generator_limited]
    cap = min(failed) if failed else None
    held = [t.sites for t in trials if t.held and (cap is None or t.sites < cap)]
    return max(held) if held else None
