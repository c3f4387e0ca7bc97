"""Pre-encoded media for the SFU benchmark: encode once, packetize once, replay many times.

The load generator must cost little, so every codec runs here, up front: a few seconds of
640x360 30 fps VP8 (moving synthetic pattern, a keyframe every ``keyframe_interval`` frames)
and 20 ms Opus frames, already split into RTP payloads by aiortc's own packetizers.  Replay
rewrites only the RTP header (``build_rtp_header``) with ``struct``.
"""

from __future__ import annotations

import fractions
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
from aiortc.codecs.opus import OpusEncoder
from aiortc.codecs.vpx import Vp8Encoder, VpxPayloadDescriptor

VIDEO_CLOCK = 90_000
AUDIO_CLOCK = 48_000
FPS = 30
# The thumbnail layer publishers send besides the full one (issue 3: ~320x180 at ~150 kbps).
THUMB_WIDTH, THUMB_HEIGHT, THUMB_BITRATE = 320, 180, 150_000
AUDIO_FRAME_S = 0.020
# Default RFC 6464 audio level extension id of ``audio_level_extension``; the load generators
# pass the id their SDP negotiated (aiortc offers 1 = sdes:mid, 2 = ssrc-audio-level).  Values
# are -dBov 0..127, lower is louder.
AUDIO_LEVEL_EXT_ID = 1


@dataclass
class VideoFrameRtp:
    """One encoded video frame as RTP payloads (marker on the last one)."""

    payloads: list[bytes]
    keyframe: bool


@dataclass
class MediaFixture:
    width: int
    height: int
    video_frames: list[VideoFrameRtp] = field(default_factory=list)
    audio_payloads: list[bytes] = field(default_factory=list)

    @property
    def video_packets_per_s(self) -> float:
        n = sum(len(f.payloads) for f in self.video_frames)
        return n * FPS / max(1, len(self.video_frames))

    @property
    def video_bitrate_bps(self) -> float:
        n = sum(sum(len(p) for p in f.payloads) for f in self.video_frames)
        return n * 8 * FPS / max(1, len(self.video_frames))


def _pattern(width: int, height: int, i: int) -> np.ndarray:
    """A moving gradient with a bouncing block: cheap, but not trivially compressible."""
    y, x = np.mgrid[0:height, 0:width]
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[..., 0] = (x + 3 * i) % 256
    img[..., 1] = (y + 2 * i) % 256
    img[..., 2] = ((x ^ y) + i) % 256
    bx = (i * 7) % max(1, width - 80)
    by = (i * 5) % max(1, height - 80)
    img[by : by + 80, bx : bx + 80] = 255 - img[by : by + 80, bx : bx + 80]
    return img


def encode_video(
    width: int = 640,
    height: int = 360,
    seconds: float = 3.0,
    bitrate: int = 800_000,
    keyframe_interval: int = 60,
) -> list[VideoFrameRtp]:
    encoder = Vp8Encoder()
    encoder.target_bitrate = bitrate
    frames: list[VideoFrameRtp] = []
    for i in range(int(seconds * FPS)):
        frame = av.VideoFrame.from_ndarray(_pattern(width, height, i), format="rgb24")
        frame.pts = i * (VIDEO_CLOCK // FPS)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        key = i % keyframe_interval == 0
        payloads, _ = encoder.encode(frame, force_keyframe=key)
        frames.append(VideoFrameRtp(payloads=list(payloads), keyframe=is_vp8_keyframe(payloads[0])))
    return frames


def encode_audio(seconds: float = 3.0) -> list[bytes]:
    encoder = OpusEncoder()
    samples = int(AUDIO_CLOCK * AUDIO_FRAME_S)
    out: list[bytes] = []
    t = 0
    for i in range(int(seconds / AUDIO_FRAME_S)):
        n = np.arange(t, t + samples)
        tone = (3000 * np.sin(2 * np.pi * 440 * n / AUDIO_CLOCK)).astype(np.int16)
        stereo = np.repeat(tone, 2).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
        frame.sample_rate = AUDIO_CLOCK
        frame.pts = t
        frame.time_base = fractions.Fraction(1, AUDIO_CLOCK)
        payloads, _ = encoder.encode(frame)
        out.extend(payloads)
        t += samples
    return out


def is_vp8_keyframe(payload: bytes) -> bool:
    """True when this RTP payload starts a VP8 keyframe (RFC 7741 section 4.3)."""
    desc, rest = VpxPayloadDescriptor.parse(payload)
    return bool(desc.partition_start and desc.partition_id == 0 and rest and not rest[0] & 1)


def load_or_build(
    cache_dir: Path, seconds: float = 3.0, width: int = 640, height: int = 360, bitrate: int = 800_000
) -> MediaFixture:
    """The fixture for these parameters, encoded on first use and cached (pickle) in cache_dir.
    The thumbnail layer of the SFU load is ``load_or_build(dir, s, 320, 180, THUMB_BITRATE)``."""
    path = cache_dir / f"fixture-{width}x{height}-{seconds:g}s-{bitrate // 1000}k.pickle"
    if path.exists():
        with path.open("rb") as f:
            cached: MediaFixture = pickle.load(f)
        return cached
    fixture = MediaFixture(
        width=width,
        height=height,
        video_frames=encode_video(width, height, seconds, bitrate),
        audio_payloads=encode_audio(seconds),
    )
    cache_dir.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        pickle.dump(fixture, f)
    return fixture


_HEADER = struct.Struct("!BBHII")


def build_rtp_header(
    payload_type: int, marker: bool, seq: int, timestamp: int, ssrc: int, extension: bool = False
) -> bytes:
    """A 12-byte RTP header (RFC 3550 section 5.1); ``extension`` sets the X bit."""
    return _HEADER.pack(0x90 if extension else 0x80, (0x80 if marker else 0) | payload_type, seq & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc)


def audio_level_extension(level: int, ext_id: int = AUDIO_LEVEL_EXT_ID) -> bytes:
    """One-byte-header extension block (RFC 8285) carrying the RFC 6464 level (voice flag set)."""
    return struct.pack("!HHBBH", 0xBEDE, 1, (ext_id << 4) | 0, 0x80 | (level & 0x7F), 0)


# A meeting's sound, in RFC 6464 -dBov (lower is louder): the floor holder speaks, now and then
# another site speaks up for a while (a new pair every INTERJECTION packets), the others carry
# room noise.  Speaker selection has real changes to follow, not a new loudest site every second.
FLOOR_SITE = 1
INTERJECTION = 250  # packets: 5 s of 20 ms audio
INTERJECTION_CYCLE = 17


def site_audio_level(site: int, packet_index: int) -> int:
    """The level of ``site``'s ``packet_index``-th audio packet (deterministic)."""
    wobble = (packet_index * 7 + site * 13) % 6  # a few dB of variation, like a real signal
    if site == FLOOR_SITE:
        return 15 + wobble
    if (packet_index // INTERJECTION + site) % INTERJECTION_CYCLE == 0:
        return 28 + wobble
    return 85 + (site * 5) % 10 + wobble
