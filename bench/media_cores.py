"""Per-packet cost of the SFU's pure cores: ``python -m bench.media_cores [--quick]``.

Times (best of several ``timeit`` repeats, CPU time of this one process) every function the
forwarding path calls per packet, on a realistic 1200-byte VP8 packet and a 100-byte Opus
packet, next to two peers measured in the same run: a plain 1200-byte ``bytearray`` copy (the
floor of any per-subscriber rewrite) and aiortc's ``RtpPacket.parse`` + ``serialize`` (what
the hot path must not use).  Also the cost of one whole-room slot reassignment at 35 and
150 participants and its growth between the two (``slot_reassignment_scaling_150_over_35``:
about 4.3 for a linear cost).  Progress on stderr; ONE JSON line on stdout with the µs figures
and ``aiortc_rtppacket_ratio`` = aiortc parse+serialize / our per-subscriber video rewrite.
On a loaded machine every figure rises together; compare the ratios.
"""

from __future__ import annotations

import argparse
import itertools
import json
import struct
import sys
import time
import timeit
from collections.abc import Callable

from media.bandwidth import LayerChooser
from media.forwarder import RoomView, assign_slots
from media.h264 import is_keyframe as h264_is_keyframe
from media.packet_cache import PacketCache, ReceiveStats
from media.room import Member, Room
from media.rtcp import ReportBlock, build_nack, build_pli, build_rr, parse_compound
from media.rtp_rewrite import SlotRewriter, audio_level, payload_offset
from media.speaker import SpeakerDetector
from media.vp8 import Vp8Rewriter, descriptor_layout, is_keyframe

EXT = b"\xbe\xde\x00\x02" + b"\x10\x9e\x22\x01\x02\x03\x00\x00"     # audio level (id 1) + id 2
VP8 = b"\x90\xe0\x81\x23\x05\x40" + b"\x31\x02\x00" + b"\x00" * 1150  # 15-bit PictureID, TL0, TID
VIDEO = struct.pack("!BBHII", 0x80, 96, 1000, 90000, 0x1111) + VP8    # as the forwarder sends on
OPUS = struct.pack("!BBHII", 0x90, 111, 1000, 48000, 0x2222) + EXT + b"\x00" * 100


def reassignment(participants: int) -> Callable[[], int]:
    """One whole-room slot reassignment (what ``RoomForwarder.reassign`` computes when the
    loudest sites change: every participant's slots from one ``RoomView``), 1 chair +
    ``participants - 1`` sites, ten of them speaking in an order that changes every call."""
    room = Room("bench")
    room.members["c"] = Member("c", "c", "Chair", "chair")
    for i in range(1, participants):
        room.members[f"s{i}"] = Member(f"s{i}", f"s{i}", f"Site {i}", "site")
    room.floor = "s1"
    assignment: dict[str, dict[str, str | None]] = {}
    speakers = [f"s{i}" for i in range(2, min(participants, 30))]
    turn = itertools.count()

    def reassign() -> int:
        k = next(turn)
        loudest = [speakers[(k * 7 + j * 3) % len(speakers)] for j in range(10)] if speakers else []
        view = RoomView(room, loudest)
        changed = 0
        for pid in room.members:
            previous = assignment.get(pid, {})
            slots = assign_slots(room, pid, previous, gallery_slots=6, audio_slots=3, speaker=None,
                                 loudest=loudest, view=view)
            if slots != previous:
                assignment[pid] = slots
                changed += 1
        return changed
    return reassign


def best_us(fn: Callable[[], object], number: int, repeat: int) -> float:
    # process CPU time, not wall time: other processes on a shared machine do not count
    return min(timeit.repeat(fn, timer=time.process_time, number=number, repeat=repeat)) / number * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.media_cores")
    parser.add_argument("--quick", action="store_true", help="fewer iterations (a few seconds)")
    parser.add_argument("--number", type=int, default=0, help="calls per repeat (overrides the default)")
    args = parser.parse_args(argv)
    number, repeat = (20_000, 3) if args.quick else (200_000, 7)
    if args.number > 0:
        number = args.number

    slot = SlotRewriter(0x9999)
    vp8 = Vp8Rewriter()
    layout = descriptor_layout(VIDEO, 12)
    seqs = itertools.count()

    def video_subscriber() -> bytes:
        # per subscriber slot: copy, SSRC/seq/ts, PictureID/TL0PICIDX, bytes for SRTP protect
        buf = bytearray(VIDEO)
        slot.rewrite_in_place(buf, 1.0)
        out = vp8.rewrite(buf, 12, 0x1111, layout)
        return bytes(out) if out is not None else b""

    def video_subscriber_no_layout() -> bytes:
        buf = bytearray(VIDEO)
        slot.rewrite_in_place(buf, 1.0)
        out = vp8.rewrite(buf, 12, 0x1111)
        return bytes(out) if out is not None else b""

    # What media.forwarder does per slot for a PictureID-only VP8 descriptor (aiortc's and
    # single-layer browsers'): the header fields are parsed once per incoming packet; per slot,
    # copy the small head (header + descriptor; the payload is joined in libsrtp's buffer, not
    # here), map seq/ts, write the header and the PictureID.  Descriptors with TL0PICIDX/KEYIDX
    # (VIDEO above) take Vp8Rewriter.rewrite instead.
    header_slot, header_vp8 = SlotRewriter(0x7777), Vp8Rewriter()
    pid_only = struct.pack("!BBHII", 0x80, 96, 1000, 90000, 0x1111) + b"\x90\x80\x81\x23" + VP8[6:]
    pid_only_layout = descriptor_layout(pid_only, 12)
    head = pid_only[:20]
    header = struct.Struct("!BHII")
    picture_id = struct.Struct("!H")

    def video_subscriber_header() -> bytearray:
        buf = bytearray(head)
        out_seq, out_ts = header_slot.map(1000, 90000, 0x1111, 1.0)
        header.pack_into(buf, 1, 96, out_seq, out_ts, 0x7777)
        pid = header_vp8.picture_id(0x0123, 0x1111)
        if pid < 0:   # the first packet anchors
            return header_vp8.rewrite(buf, 12, 0x1111, pid_only_layout) or buf
        picture_id.pack_into(buf, 14, 0x8000 | pid)
        return buf

    audio_slot = SlotRewriter(0x8888, ts_gap=960, clock_rate=48000)

    def audio_subscriber() -> bytes:
        buf = bytearray(OPUS)
        audio_slot.rewrite_in_place(buf, 1.0)
        return bytes(buf)

    det: SpeakerDetector[str] = SpeakerDetector()
    for i in range(35):
        det.update(f"s{i}", 40 + i, True, 0.0)
    cache = PacketCache(1024)
    stats = ReceiveStats(90000)
    chooser = LayerChooser()
    rtcp_in = build_rr(1, [ReportBlock(2, 0, 0, 5, 5)]) + build_pli(1, 2) + build_nack(1, 2, [5, 6, 9])
    h264_fu = b"\x7c\x85" + b"\x00" * 1100

    def stats_packet() -> None:
        i = next(seqs)
        stats.on_packet(i & 0xFFFF, (i * 3000) & 0xFFFFFFFF, i * 0.033)

    def cache_put() -> None:
        cache.put_seq(next(seqs) & 0xFFFF, VIDEO)

    speaker_clock = itertools.count()

    def speaker_update() -> None:
        det.update("s1", 30, True, next(speaker_clock) * 0.02)

    cases: dict[str, tuple[Callable[[], object], int]] = {
        "peer_bytearray_copy_1200B": (lambda: bytearray(VIDEO), number),
        "per_subscriber_video_rewrite": (video_subscriber, number),
        "per_subscriber_video_rewrite_no_layout": (video_subscriber_no_layout, number),
        "per_subscriber_video_header": (video_subscriber_header, number),
        "per_subscriber_audio_rewrite": (audio_subscriber, number),
        "slot_rewrite_in_place": (lambda: slot.rewrite_in_place(bytearray(VIDEO)), number),
        "payload_offset": (lambda: payload_offset(OPUS), number),
        "audio_level": (lambda: audio_level(OPUS, 1), number),
        "vp8_descriptor_layout": (lambda: descriptor_layout(VIDEO, 12), number),
        "vp8_is_keyframe": (lambda: is_keyframe(VIDEO, 12), number),
        "h264_is_keyframe_fu_a": (lambda: h264_is_keyframe(h264_fu), number),
        "speaker_update": (speaker_update, number),
        "speaker_tick_36_sources": (lambda: det.tick(10.0), max(1, number // 10)),
        "packet_cache_put": (cache_put, number),
        "packet_cache_get": (lambda: cache.get(5), number),
        "receive_stats_on_packet": (stats_packet, number),
        "rtcp_parse_rr_pli_nack": (lambda: parse_compound(rtcp_in), max(1, number // 10)),
        "layer_chooser_update": (lambda: chooser.update(1.0, need_bps=1e6, estimate_bps=2e6), number),
        # not per packet: per reassignment (up to 4/s while the loudest sites change)
        "slot_reassignment_35_participants": (reassignment(35), max(1, number // 2000)),
        "slot_reassignment_150_participants": (reassignment(150), max(1, number // 8000)),
    }
    try:
        from aiortc.rtp import RtpPacket

        cases["peer_aiortc_rtppacket_parse_serialize"] = (lambda: RtpPacket.parse(VIDEO).serialize(), max(1, number // 4))
    except ImportError:  # pragma: no cover - aiortc is a dependency
        pass

    results: dict[str, float | None] = {}
    for name, (fn, n) in cases.items():
        results[f"{name}_us"] = round(best_us(fn, n, repeat), 3)
        print(f"{name:42s} {results[f'{name}_us']:7.3f} us", file=sys.stderr)
    ours = results["per_subscriber_video_rewrite_us"]
    peer = results.get("peer_aiortc_rtppacket_parse_serialize_us")
    results["aiortc_rtppacket_ratio"] = round(peer / ours, 2) if peer and ours else None
    copy = results["peer_bytearray_copy_1200B_us"]
    results["video_rewrite_over_copy_ratio"] = round(ours / copy, 2) if ours and copy else None
    small, large = results["slot_reassignment_35_participants_us"], results["slot_reassignment_150_participants_us"]
    # 150/35 participants: about 4.3 when the cost grows linearly with the room, 18 if quadratic
    results["slot_reassignment_scaling_150_over_35"] = round(large / small, 2) if small and large else None
    results["quick"] = args.quick
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
