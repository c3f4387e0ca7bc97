"""Room-level packet routing: publishers' incoming streams -> subscribers' outgoing slots.

One ``RoomForwarder`` per room.  Each participant has one ``Endpoint``: its aiortc peer
connection driven through ``media.rtc_adapter.PacketPeer`` (no codec anywhere), the incoming
streams it publishes (``Source``: audio, camera = full layer, thumb, screen) and the outgoing
streams it receives (``SlotSender``: audio-k, main, chair, screen, gallery-k), one per m-line of
the layout (``media.build_layout``).  Which source feeds which slot comes from
``assign_slots`` (pure): main = floor holder, else the active speaker; chair = the chair;
gallery = thumbnails of the other sites (speakers first, stable); audio = floor holder, then the
loudest; screen = the site sharing its screen.

Hot path (per incoming RTP packet, synchronous, inside the UDP callback): strip the header
extension and CSRCs once and split the packet into what slots rewrite (fixed header + VP8
descriptor) and what they only copy (the rest of the payload); then per subscriber slot fed by
that source: copy the small head, rewrite PT (the subscriber's number for the codec),
SSRC/seq/ts (``SlotRewriter``), VP8 PictureID/TL0PICIDX (``Vp8Rewriter``), then SRTP-protect
head + rest joined in libsrtp's buffer and ``sendto`` (``PacketPeer.send_parts``).  Bytes and
``struct`` only; no per-packet task.  When ``media._fastpath`` is built (``media.native``),
the loop over a source's slots is one C call (``fanout_video``/``fanout_audio``): the slot's
fields the loop uses live in its C base class (``Lane``), the rewriters are the C ones (same API
and results as the Python classes), and writing the header, joining, protecting and sending
happen in C (``PacketPeer.send_rewritten``).  A slot whose packet needs anything else (no
compiled sender yet, a VP8 descriptor with TL0PICIDX/KEYIDX or a 7-bit PictureID, a PictureID
anchor after a switch) is handed to ``SlotSender.forward_video``/``forward_audio``, the same
steps in Python, on the same state.

Switching a video slot re-anchors its rewriters and drops packets until a keyframe of the new
source arrives; a PLI asks the source for one (at most one per ``PLI_INTERVAL`` per source
while it is unanswered, re-sent while someone still waits; a slot that starts waiting after the
answer arrived asks again after ``KEYFRAME_AGAIN``; subscribers' own PLI/FIR: one per
``PLI_INTERVAL``).  A slow subscriber never slows the others: sending never
blocks and nothing queues in the process; each subscriber's queue is its own socket's send
buffer, and when it is full the packet is dropped: a video slot then waits for the next
keyframe (asking for one), audio just loses the packet.  A chair-muted site's audio is not
forwarded.  An endpoint whose connection died is dropped (``reap``); its place stays.

RTCP: subscriber PLI/FIR go to the slot's current source (rate-limited); subscriber NACKs are
answered from the source's packet cache (RTX when the subscriber negotiated it); upstream losses
are NACKed to the publisher, RTX from publishers unwrapped; every second each publisher gets a
Receiver Report and a REMB (per layer: the lowest estimate of the subscribers receiving it,
between LAYER_FLOOR and LAYER_CEILING); publishers' SRs reach subscribers translated into each
slot's timestamp space (lip sync after rewriting).  Subscribers' REMB and loss choose their
layers (``media.bandwidth.LayerChooser``): main and chair slots fall back to thumbnails on a
weak link and return when it recovers.  Forwarded video carries an abs-send-time extension
(the subscriber's id) so browsers can estimate bandwidth; other extensions are stripped.

Paused layers: a publisher's camera or thumbnail layer that feeds no slot of anyone for
``PAUSE_HOLD`` seconds is reported paused (``on_layers``: the page stops encoding it, which
saves the site's uplink and the server the packets nobody receives); it is reported resumed as
soon as a slot needs it again, and that slot waits for the keyframe the restarted encoder sends
first (a PLI asks for it too).  The hold keeps a speaker change and back from flapping encoders.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import struct
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiortc import RTCPeerConnection, RTCSessionDescription

from media import h264, native, rtcp, vp8
from media.bandwidth import LayerChooser, RembAggregator
from media.config import MediaConfig
from media.packet_cache import PacketCache, ReceiveStats
from media.room import Room
from media.rtc_adapter import IcePolicy, MLine, PacketPeer, rtc_configuration, strip_mdns_candidates
from media.rtcp import SenderReport
from media.rtp_rewrite import (SlotRewriter, abs_send_time, audio_level, build_rtx, payload_bounds,
                               unwrap_rtx)
from media.speaker import SpeakerDetector, stable_assignment

log = logging.getLogger("media.forwarder")

__all__ = ["ForwarderError", "ForwarderMetrics", "RoomForwarder", "assign_slots"]

AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
ABS_SEND_TIME_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
PLI_INTERVAL = 1.0          # seconds between keyframe requests to one source (while one is unanswered)
KEYFRAME_AGAIN = 0.3        # ...but a slot that starts waiting after the answer may ask again this soon
TICK_INTERVAL = 0.05        # upstream NACKs; every SLOW_TICKS ticks: speaker, slots, PLI retries
SLOW_TICKS = 5
REPORT_INTERVAL = 1.0       # RR + REMB to publishers
NACK_RETRY = 0.1            # seconds between NACKs of one missing packet
LAYER_FLOOR = 150_000       # REMB toward a publisher never asks for less (bits/s)
LAYER_CEILING = {"camera": 2_500_000, "thumb": 300_000, "screen": 2_500_000}
PUBLISHED = ("audio", "camera", "thumb", "screen")
LAYER_UP_AFTER = 5.0        # seconds a recovered link must look good before full layers return
LAYER_SETTLE = 10.0         # seconds after the start or a return to full layers before a low REMB drops them
PAUSABLE = ("camera", "thumb")  # the screen share is the sharer's own choice: never paused
GALLERY_SLACK = 2           # gallery hysteresis: a speaking occupant leaves below this many extra ranks
PAUSE_HOLD = 3.0            # seconds a layer nobody receives keeps flowing before it is paused

_AST = struct.Struct("!HHI")        # one-byte extension header + one abs-send-time element
_PLI = struct.Struct("!BBHIBBHII")  # empty RR (8 bytes) + PLI (12 bytes): a compound packet
_VP8_HEAD = 8                       # payload bytes rewritten per slot: the VP8 descriptor is at most 6
_SEQ_TS_SSRC = struct.Struct("!HII")
_FIXED = struct.Struct("!BBHII")    # the fixed RTP header
_HEADER = struct.Struct("!BHII")    # its bytes 1..11: marker + PT, seq, timestamp, SSRC
_PICTURE_ID = struct.Struct("!H")
_AUDIO_HEAD = b"\x80" + bytes(11)   # an outgoing audio header before send_rewritten writes bytes 1..11

# The per-subscriber loop in C (media.native), or None: the loops below in Python.
_fanout_video: Callable[..., int] | None = getattr(native.fastpath, "fanout_video", None)
_fanout_audio: Callable[..., None] | None = getattr(native.fastpath, "fanout_audio", None)

if TYPE_CHECKING or native.fastpath is None:
    class _Lane:
        """What ``media._fastpath.Lane`` holds (the fields the compiled fan-out reads and
        writes), for machines without it."""

        __slots__ = ("peer", "rewriter", "vp8", "pt_map", "out_ssrc", "ast_id", "waiting_keyframe", "sent", "octets",
                     "dropped")
        peer: PacketPeer
        rewriter: SlotRewriter
        vp8: vp8.Vp8Rewriter
        pt_map: dict[str, int]
        out_ssrc: int
        ast_id: int
        waiting_keyframe: bool
        sent: int
        octets: int
        dropped: int
else:
    _Lane = native.fastpath.Lane


class ForwarderError(Exception):
    """A refused negotiation (``bad_sdp``) with a message for the client's developer."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


# ---------------------------------------------------------------------------------------------
# Slot assignment (pure)


class RoomView:
    """What every subscriber's assignment reads, computed once per reassignment (one pass over
    the room), so that assigning all N subscribers costs O(N) and not O(N^2): each subscriber
    only reads the first few entries of these lists, skipping itself."""

    __slots__ = ("publishers", "present", "sharers", "chair", "loudest", "ranked", "speaking", "audible")

    def __init__(self, room: Room, loudest: Sequence[str] = ()):
        members = room.members
        self.publishers = [m.id for m in members.values() if m.role != "observer"]
        self.present = set(self.publishers)
        self.sharers = [m.id for m in members.values() if m.screen and m.role != "observer"]
        chair = room.chair()
        self.chair = chair.id if chair is not None else None
        self.loudest = loudest
        present = self.present
        # the speaking publishers, loudest first; then everyone in join order, each once
        self.speaking = [p for p in dict.fromkeys(loudest) if p in present]
        self.ranked = list(dict.fromkeys(self.speaking + self.publishers))
        self.audible = [p for p in self.ranked if not members[p].muted_by_chair]


def _first(ranked: Sequence[str], n: int, skip: Collection[str | None]) -> list[str]:
    """The first ``n`` entries of ``ranked`` that are not in ``skip``."""
    out: list[str] = []
    if n <= 0:
        return out
    for p in ranked:
        if p not in skip:
            out.append(p)
            if len(out) == n:
                break
    return out


def assign_slots(room: Room, subscriber: str, previous: dict[str, str | None], *, gallery_slots: int,
                 audio_slots: int, speaker: str | None, loudest: Sequence[str],
                 view: RoomView | None = None) -> dict[str, str | None]:
    """Which participant feeds each of ``subscriber``'s slots.  ``loudest``: publishing
    participants, loudest first (speaking ones; the others follow in join order).  Sources
    already in a gallery or audio slot keep their place (no needless switch); a speaking one
    stays in the gallery while it ranks within GALLERY_SLACK places of the cut.  ``view``: the
    room's ``RoomView`` for this ``loudest`` when assigning for many subscribers at once."""
    if view is None or view.loudest is not loudest:
        view = RoomView(room, loudest)
    present = view.present
    chair_id = view.chair if view.chair != subscriber else None
    main: str | None = None
    if room.floor in present and room.floor != subscriber:
        main = room.floor
    elif speaker in present and speaker != subscriber:
        main = speaker
    elif previous.get("main") in present and previous["main"] != subscriber:
        main = previous["main"]
    else:
        main = next((o for o in view.publishers if o != subscriber and o != chair_id), chair_id)
    skip = (subscriber, main, chair_id)
    gallery_wanted = _first(view.ranked, gallery_slots, skip)
    gallery_prev = [previous.get(f"gallery-{k}") for k in range(gallery_slots)]
    # A speaking site in the gallery keeps its place while it stays among the loudest
    # gallery_slots + GALLERY_SLACK speakers: with more speakers than places, sites of about the
    # same loudness would otherwise take turns (each turn a keyframe wait and a moving tile).
    sticky = _first(view.speaking, gallery_slots + GALLERY_SLACK, skip)
    gallery = stable_assignment(gallery_prev, gallery_wanted, sticky=sticky)
    # audio: the floor holder first (unless the chair muted it), then the loudest audible
    floor_first = main is not None and room.floor == main and not room.members[main].muted_by_chair
    audio_wanted = [main] if floor_first else []
    audio_wanted += _first(view.audible, audio_slots - len(audio_wanted),
                           (subscriber, main) if floor_first else (subscriber,))
    audio_prev = [previous.get(f"audio-{k}") for k in range(audio_slots)]
    audio = stable_assignment(audio_prev, audio_wanted)
    screen = next((p for p in view.sharers if p != subscriber), None)
    slots: dict[str, str | None] = {"main": main, "chair": chair_id, "screen": screen}
    for k, pid in enumerate(gallery):
        slots[f"gallery-{k}"] = pid
    for k, pid in enumerate(audio):
        slots[f"audio-{k}"] = pid
    return slots


# which published stream feeds a slot
def _source_name(slot: str, full: bool = True) -> str:
    if slot.startswith("audio-"):
        return "audio"
    if slot in ("main", "chair"):
        return "camera" if full else "thumb"
    if slot == "screen":
        return "screen"
    return "thumb"


def _shift_layout(layout: tuple[int, int, int, int], by: int) -> tuple[int, int, int, int]:
    pid, bits, tl0, tk = layout
    return (pid + by if pid >= 0 else -1, bits, tl0 + by if tl0 >= 0 else -1, tk + by if tk >= 0 else -1)


# ---------------------------------------------------------------------------------------------
# Streams


class Source:
    """One published stream of one participant (audio, camera, thumb or screen)."""

    __slots__ = ("endpoint", "name", "kind", "mid", "codecs", "rtx_apt", "clock_rate", "local_ssrc", "level_ext",
                 "nack", "outs", "waiting", "last_pli", "last_keyframe", "switched_at", "muted", "packets", "ssrc", "rtx_ssrcs", "cache", "stats",
                 "octets", "bitrate", "remb", "_octets_mark", "paused", "idle_since")

    def __init__(self, endpoint: Endpoint, name: str, line: MLine):
        self.endpoint = endpoint
        self.name = name
        self.kind = line.kind
        self.mid = line.mid
        self.codecs: dict[int, str] = {c.payload_type: c.name for c in line.codecs
                                       if c.name not in ("rtx", "red", "ulpfec")}
        self.rtx_apt: dict[int, int] = {c.payload_type: int(c.parameters["apt"]) for c in line.codecs
                                        if c.name == "rtx" and "apt" in c.parameters}
        self.clock_rate = 48000 if line.kind == "audio" else 90000
        self.local_ssrc = line.local_ssrc   # our SSRC on that m-line: the sender of our RTCP
        self.level_ext = line.extensions.get(AUDIO_LEVEL_URI) if line.kind == "audio" else None
        self.nack = any("nack" in c.feedback for c in line.codecs)
        self.outs: list[SlotSender] = []
        self.waiting = 0                    # outs waiting for a keyframe
        self.last_pli = -PLI_INTERVAL
        self.last_keyframe = -PLI_INTERVAL  # arrival of the last keyframe a slot was waiting for
        self.switched_at = -PLI_INTERVAL    # when a slot last switched to this source
        self.muted = False
        self.packets = 0
        self.ssrc: int | None = line.remote_ssrcs[0] if line.remote_ssrcs else None
        self.rtx_ssrcs = frozenset(line.remote_rtx)
        self.cache = PacketCache(1024) if line.kind == "video" else None
        self.stats = ReceiveStats(self.clock_rate)
        self.octets = 0
        self._octets_mark = 0
        self.bitrate = 0.0                  # bits/s over the last report interval
        self.remb = RembAggregator[str](floor_bps=LAYER_FLOOR, ceiling_bps=LAYER_CEILING.get(name, 2_500_000)) \
            if line.kind == "video" else None
        self.paused = False                 # the publisher was told to stop sending this layer
        self.idle_since: float | None = None  # since when no slot has received it

    def update_pause(self, now: float) -> bool:
        """Whether this layer should be paused now: no slot received it for ``PAUSE_HOLD``
        (resumed at once when one does).  Returns True when that changed."""
        if self.outs:
            self.idle_since = None
            if self.paused:
                self.paused = False
                return True
            return False
        if self.paused:
            return False
        if self.idle_since is None:
            self.idle_since = now
        if now - self.idle_since >= PAUSE_HOLD:
            self.paused = True
            return True
        return False

    def request_keyframe(self, now: float, strict: bool = False) -> bool:
        """Send a PLI to the publisher unless one went out less than PLI_INTERVAL ago.  A slot
        that switched to this source may ask again after KEYFRAME_AGAIN once the last
        request was answered (a keyframe arrived since): it missed that keyframe, and waiting
        out the second would freeze its picture.  ``strict``: held to PLI_INTERVAL (a
        subscriber's own PLI/FIR; a slot that dropped packets on a full socket: a slow link must
        not bring the source's keyframes, costly for everyone, more often)."""
        if self.kind != "video" or self.ssrc is None:
            return False
        since = now - self.last_pli
        if since < PLI_INTERVAL and (strict or self.last_keyframe < self.last_pli or since < KEYFRAME_AGAIN):
            return False
        ssrc = self.local_ssrc
        if self.endpoint.peer.send_rtcp(_PLI.pack(0x80, 201, 1, ssrc, 0x81, 206, 2, ssrc, self.ssrc)):
            self.last_pli = now
            self.endpoint.forwarder.stats["plis"] += 1
            return True
        return False

    def on_packet(self, packet: bytes, arrival: float) -> None:
        seq, ts, ssrc = _SEQ_TS_SSRC.unpack_from(packet, 2)
        if ssrc != self.ssrc:
            if ssrc in self.rtx_ssrcs:
                self._on_rtx(packet, arrival)
                return
            self.ssrc = ssrc      # a browser may change its SSRC (track replaced): a new stream
            self.stats = ReceiveStats(self.clock_rate)
            if self.cache is not None:
                self.cache.clear()
        self.packets += 1
        self.octets += len(packet)
        self.stats.on_packet(seq, ts, arrival)
        level_ext = self.level_ext
        if level_ext is not None:
            level = audio_level(packet, level_ext)
            if level is not None:
                self.endpoint.forwarder.speakers.update(self.endpoint.id, level[0], level[1], arrival)
        if self.outs:
            self._forward(packet, arrival, seq, ts, ssrc)

    def _on_rtx(self, packet: bytes, arrival: float) -> None:
        """A retransmission we asked for (RFC 4588): unwrap it and forward it late."""
        apt = self.rtx_apt.get(packet[1] & 0x7F)
        if apt is None or self.ssrc is None:
            return
        original = unwrap_rtx(packet, apt, self.ssrc)
        if original is None:
            return
        seq, ts, ssrc = _SEQ_TS_SSRC.unpack_from(original, 2)
        self.stats.on_packet(seq, ts, arrival)
        self._forward(original, arrival, seq, ts, ssrc)

    def _forward(self, packet: bytes, arrival: float, seq: int, ts: int, ssrc: int) -> None:
        outs = self.outs
        if not outs or self.muted:
            return
        b1 = packet[1]
        codec = self.codecs.get(b1 & 0x7F)
        if codec is None:
            return
        cache = self.cache
        if cache is not None:     # what a subscriber may NACK: packets forwarded to someone
            cache.put(packet)
        # The outgoing packets carry no CSRC, no padding and none of the publisher's header
        # extensions (their IDs belong to its m-line): fixed header + payload.
        if packet[0] & 0x3F:
            bounds = payload_bounds(packet)
            if bounds is None:
                return
            off, end = bounds
        else:
            off, end = 12, len(packet)
        marker = b1 & 0x80
        if self.kind != "video":
            payload = memoryview(packet)[off:end]
            if _fanout_audio is not None:
                _fanout_audio(outs, payload, codec, seq, ts, ssrc, marker, arrival)
                return
            for out in outs:
                out.forward_audio(payload, codec, seq, ts, ssrc, marker, arrival)
            return
        keyframe = False
        layout = None
        split = off
        pid = -1
        if codec == "vp8":
            layout = vp8.descriptor_layout(packet, off)
            if layout is None:
                return
            if self.waiting:
                keyframe = vp8.is_keyframe(packet, off)
                if keyframe:
                    self.last_keyframe = arrival
            split = min(off + _VP8_HEAD, end)   # the descriptor (at most 6 bytes) goes with the header
            if layout[1] == 15 and layout[2] < 0 and layout[3] < 0:   # PictureID only: the fast path
                pid = ((packet[layout[0]] & 0x7F) << 8) | packet[layout[0] + 1]
        elif self.waiting:
            keyframe = h264.is_keyframe(packet, off) if codec == "h264" else True
            if keyframe:
                self.last_keyframe = arrival
        frame = _Frame(b"\x80" + packet[1:12] + packet[off:split], memoryview(packet)[split:end], codec, keyframe,
                       layout, off, abs_send_time(arrival), seq, ts, ssrc, marker, pid)
        if _fanout_video is not None:
            if layout is None:
                vp8_mode, pid_rel = 0, -1
            elif pid >= 0:
                vp8_mode, pid_rel = 1, layout[0] - off
            else:
                vp8_mode, pid_rel = 2, -1
            stopped = _fanout_video(outs, frame, frame.head, frame.rest, codec, keyframe, seq, ts, ssrc, marker,
                                    vp8_mode, pid, pid_rel, frame.ast, arrival)
            if stopped:
                self.waiting -= stopped
            return
        for out in outs:
            out.forward_video(frame, arrival)

    def on_sender_report(self, sr: SenderReport, now: float) -> None:
        """The publisher's SR: for our RR's LSR/DLSR, and translated to every subscriber slot."""
        self.stats.on_sender_report(sr.ntp, now)
        for out in self.outs:
            out.send_sender_report(sr)

    def report(self, now: float, interval: float) -> bytes:
        """This interval's reception report block (and REMB for video), to send to the publisher;
        also updates ``bitrate`` (kept while the layer is paused: what it will cost when resumed)."""
        if not self.paused:
            self.bitrate = (self.octets - self._octets_mark) * 8 / interval if interval > 0 else 0.0
        self._octets_mark = self.octets
        if self.ssrc is None or not self.packets:
            return b""
        return rtcp.build_rr(self.local_ssrc, [self.stats.take_report(self.ssrc, now)])

    def remb_value(self, now: float) -> int:
        assert self.remb is not None
        value = self.remb.value(now)
        return int(self.remb.ceiling_bps if value is None else value)


class _Frame:
    """One incoming video packet prepared once for all the slots it feeds: what each slot
    rewrites (``head``: the fixed header and the VP8 descriptor) apart from what it only copies
    (``rest``: the payload after the descriptor), and the header fields, parsed once."""

    __slots__ = ("head", "rest", "codec", "keyframe", "layout", "off", "ast", "seq", "ts", "ssrc", "marker", "pid",
                 "heads", "_layouts")

    def __init__(self, head: bytes, rest: memoryview, codec: str, keyframe: bool,
                 layout: tuple[int, int, int, int] | None, off: int, ast: int, seq: int, ts: int, ssrc: int,
                 marker: int, pid: int):
        self.head = head            # the fixed 12-byte header (V=2 only) + the payload's first bytes
        self.rest = rest            # the rest of the payload
        self.codec = codec
        self.keyframe = keyframe
        self.layout = layout        # VP8 descriptor positions in the incoming packet
        self.off = off              # payload offset in the incoming packet
        self.ast = ast
        self.seq, self.ts, self.ssrc, self.marker = seq, ts, ssrc, marker
        self.pid = pid              # the 15-bit PictureID of a PictureID-only VP8 descriptor, else -1
        self.heads: dict[int, bytes] = {0: head}   # by abs-send-time extension id (0: none)
        self._layouts: dict[int, tuple[int, int, int, int]] | None = None

    def head_with(self, ast_id: int) -> bytes:
        """The head with an abs-send-time extension under the subscriber's id."""
        head = self.heads.get(ast_id)
        if head is None:
            head = self.heads[ast_id] = bytes([self.head[0] | 0x10]) + self.head[1:12] + \
                _AST.pack(0xBEDE, 1, (((ast_id << 4) | 2) << 24) | self.ast) + self.head[12:]
        return head

    def layout_at(self, off: int) -> tuple[int, int, int, int]:
        """The VP8 layout for an outgoing packet whose payload starts at ``off``."""
        assert self.layout is not None
        if off == self.off:
            return self.layout
        layouts = self._layouts
        if layouts is None:
            layouts = self._layouts = {}
        layout = layouts.get(off)
        if layout is None:
            layout = layouts[off] = _shift_layout(self.layout, off - self.off)
        return layout


class SlotSender(_Lane):
    """One outgoing m-line of a subscriber: a continuous stream whatever source feeds it.  The
    fields the compiled fan-out reads and writes are those of ``_Lane``."""

    __slots__ = ("endpoint", "slot", "mid", "kind", "rtx", "rtx_ssrc", "rtx_seq", "source", "retransmitted", "send",
                 "previous")

    def __init__(self, endpoint: Endpoint, slot: str, line: MLine):
        self.endpoint = endpoint
        self.slot = slot
        self.mid = line.mid
        self.kind = line.kind
        self.out_ssrc = line.local_ssrc
        self.pt_map: dict[str, int] = {}
        for c in line.codecs:
            self.pt_map.setdefault(c.name, c.payload_type)
        # RTX payload type per original payload type, when the subscriber negotiated RTX
        self.rtx: dict[int, int] = {int(c.parameters["apt"]): c.payload_type for c in line.codecs
                                    if c.name == "rtx" and "apt" in c.parameters}
        self.rtx_ssrc = line.local_rtx_ssrc
        self.rtx_seq = 0
        # abs-send-time goes out in the one-byte header form (RFC 8285), ids 1..14; a larger id
        # (two-byte form negotiated) gets no abs-send-time rather than a malformed extension
        ast_id = line.extensions.get(ABS_SEND_TIME_URI, 0) if line.kind == "video" else 0
        self.ast_id = ast_id if 0 < ast_id <= 14 else 0
        clock = 48000 if line.kind == "audio" else 90000
        self.rewriter = SlotRewriter(line.local_ssrc, ts_gap=960 if line.kind == "audio" else 3000, clock_rate=clock)
        self.vp8 = vp8.Vp8Rewriter()
        self.source: Source | None = None
        self.waiting_keyframe = False
        self.sent = 0
        self.octets = 0
        self.dropped = 0
        self.retransmitted = 0
        self.send = endpoint.peer.send_rtp   # retransmissions; forwarding uses peer.send_parts
        self.peer = endpoint.peer
        # the epoch before the last switch, for NACKs that name it: (source, rewriters)
        self.previous: tuple[Source, SlotRewriter, vp8.Vp8Rewriter] | None = None

    def _keep_epoch(self) -> None:
        if self.source is not None and not self.waiting_keyframe and self.rewriter.source_ssrc is not None:
            self.previous = (self.source, copy.copy(self.rewriter), copy.copy(self.vp8))

    def set_source(self, source: Source | None, now: float) -> None:
        old = self.source
        if old is source:
            return
        self._keep_epoch()
        if old is not None:
            old.outs.remove(self)
            if self.waiting_keyframe:
                old.waiting -= 1
            if old.remb is not None:
                old.remb.remove(self.endpoint.id)
        self.waiting_keyframe = False
        self.source = source
        self.rewriter.switch()
        self.vp8.switch()
        if source is not None:
            source.outs.append(self)
            if self.kind == "video":
                self.waiting_keyframe = True
                source.waiting += 1
                source.switched_at = now
                source.request_keyframe(now)

    def _wait_for_keyframe(self, now: float) -> None:
        source = self.source
        if source is not None and not self.waiting_keyframe:
            self._keep_epoch()
            self.waiting_keyframe = True
            source.waiting += 1
            self.rewriter.switch()
            source.request_keyframe(now, strict=True)

    def forward_video(self, frame: _Frame, now: float) -> None:
        if self.waiting_keyframe:
            if not frame.keyframe:
                return
            self.waiting_keyframe = False
            self.source.waiting -= 1  # type: ignore[union-attr]
        pt = self.pt_map.get(frame.codec)
        if pt is None:
            self.dropped += 1
            return
        # abs-send-time (the subscriber's id) lets its browser estimate bandwidth (REMB)
        ast_id = self.ast_id
        head = frame.heads.get(ast_id)
        if head is None:
            head = frame.head_with(ast_id)
        off = 20 if ast_id else 12
        out_seq, out_ts = self.rewriter.map(frame.seq, frame.ts, frame.ssrc, now)
        pid_at = -1
        out_pid = 0
        buf = None
        if frame.layout is not None:
            pid = frame.pid
            out_pid = self.vp8.picture_id(pid, frame.ssrc) if pid >= 0 else -1
            if out_pid >= 0:
                pid_at = off + frame.layout[0] - frame.off
            else:   # a descriptor with TL0PICIDX/KEYIDX or a 7-bit PictureID: rewritten in Python
                buf = bytearray(head)
                _HEADER.pack_into(buf, 1, frame.marker | pt, out_seq, out_ts, self.out_ssrc)
                buf = self.vp8.rewrite(buf, off, frame.ssrc, frame.layout_at(off))
                if buf is None:
                    self.dropped += 1
                    return
        rest = frame.rest
        send_rewritten = self.peer.send_rewritten
        if buf is None:
            n = len(head)
            if send_rewritten is not None:   # media._fastpath: header, protect and sendto in C
                sent = send_rewritten(head, rest, frame.marker | pt, out_seq, out_ts, self.out_ssrc, pid_at, out_pid)
            else:
                buf = bytearray(head)
                _HEADER.pack_into(buf, 1, frame.marker | pt, out_seq, out_ts, self.out_ssrc)
                if pid_at >= 0:
                    _PICTURE_ID.pack_into(buf, pid_at, 0x8000 | out_pid)
                sent = self.peer.send_parts(buf, rest)
        else:
            n = len(buf)
            sent = self.peer.send_parts(buf, rest)
        if sent:
            self.sent += 1
            self.octets += n - off + len(rest)
        else:
            self.dropped += 1
            self._wait_for_keyframe(now)

    def forward_audio(self, payload: memoryview, codec: str, seq: int, ts: int, ssrc: int, marker: int,
                      now: float) -> None:
        pt = self.pt_map.get(codec)
        if pt is None:
            self.dropped += 1
            return
        out_seq, out_ts = self.rewriter.map(seq, ts, ssrc, now)
        send_rewritten = self.peer.send_rewritten
        if send_rewritten is not None:
            sent = send_rewritten(_AUDIO_HEAD, payload, marker | pt, out_seq, out_ts, self.out_ssrc, -1, 0)
        else:
            sent = self.peer.send_parts(_FIXED.pack(0x80, marker | pt, out_seq, out_ts, self.out_ssrc), payload)
        if sent:
            self.sent += 1
            self.octets += len(payload)
        else:
            self.dropped += 1

    def retransmit(self, seqs: Sequence[int]) -> None:
        """Answer a subscriber's NACK from the source's packet cache (RTX when negotiated).
        Sequence numbers of the epoch before the last switch are answered too: losses just
        before a switch are NACKed just after it."""
        epochs = []
        if self.source is not None and not self.waiting_keyframe:
            epochs.append((self.source, self.rewriter, self.vp8))
        if self.previous is not None:
            epochs.append(self.previous)
        if not epochs:
            return
        for out_seq in seqs:
            for source, rewriter, vp8_rewriter in epochs:
                buf = self._again(source, rewriter, vp8_rewriter, out_seq)
                if buf is None:
                    continue
                rtx_pt = self.rtx.get(buf[1] & 0x7F)
                data: bytes | bytearray | None = buf
                if rtx_pt is not None:
                    data = build_rtx(buf, rtx_pt, self.rtx_ssrc, self.rtx_seq)
                    self.rtx_seq = (self.rtx_seq + 1) & 0xFFFF
                if data is not None and self.send(data):
                    self.retransmitted += 1
                break

    def _again(self, source: Source, rewriter: SlotRewriter, vp8_rewriter: vp8.Vp8Rewriter,
               out_seq: int) -> bytearray | None:
        """The packet sent as ``out_seq`` in ``rewriter``'s epoch, rebuilt from the cache."""
        if source.cache is None:
            return None
        src_seq = rewriter.source_seq(out_seq)
        cached = source.cache.get(src_seq) if src_seq is not None else None
        if cached is None:
            return None
        codec = source.codecs.get(cached[1] & 0x7F)
        pt = self.pt_map.get(codec) if codec is not None else None
        again = rewriter.retransmit(cached)
        bounds = payload_bounds(cached)
        if again is None or pt is None or bounds is None:
            return None
        buf = bytearray(again[:12])
        buf += again[bounds[0]:bounds[1]]
        buf[0] &= 0xC0
        buf[1] = (buf[1] & 0x80) | pt
        if codec == "vp8":
            return vp8_rewriter.retransmit(buf, 12)
        return buf

    def send_sender_report(self, sr: SenderReport) -> None:
        """The source's SR in this slot's timestamp space, so the subscriber keeps lip sync."""
        if self.waiting_keyframe or self.rewriter.source_ssrc != sr.ssrc:
            return
        self.endpoint.peer.send_rtcp(rtcp.translate_sr(sr, self.rewriter.ts_offset, self.out_ssrc,
                                                       self.sent & 0xFFFFFFFF, self.octets & 0xFFFFFFFF))


class Endpoint:
    """One participant's peer connection with its published sources and received slots."""

    def __init__(self, forwarder: RoomForwarder, participant_id: str, peer: PacketPeer):
        self.forwarder = forwarder
        self.id = participant_id
        self.peer = peer
        self.sources_by_mid: dict[str | None, Source] = {}
        self.sources: dict[str, Source] = {}      # by published name
        self.slots: dict[str, SlotSender] = {}    # by slot name
        self.by_out_ssrc: dict[int, SlotSender] = {}
        self.layers = LayerChooser(settle=LAYER_SETTLE, up_after=LAYER_UP_AFTER)
        self.full = True                          # main/chair slots carry full layers
        self.remb_bps: float | None = None

    def paused(self) -> list[str]:
        """The names of this participant's published layers that it should not send now."""
        return [name for name, source in self.sources.items() if source.paused]

    def on_rtp(self, packet: bytes, mid: str | None, arrival: float) -> None:
        source = self.sources_by_mid.get(mid)
        if source is not None:
            source.on_packet(packet, arrival)

    def on_rtcp(self, data: bytes) -> None:
        now = time.monotonic()
        for packet in rtcp.parse_compound(data):
            kind = type(packet)
            if kind is rtcp.Nack:
                slot = self.by_out_ssrc.get(packet.media_ssrc)  # type: ignore[union-attr]
                if slot is not None:
                    slot.retransmit(packet.seqs)  # type: ignore[union-attr]
            elif kind is rtcp.Pli:
                self._keyframe_wanted(packet.media_ssrc, now)  # type: ignore[union-attr]
            elif kind is rtcp.Fir:
                for ssrc, _seqnr in packet.entries:  # type: ignore[union-attr]
                    self._keyframe_wanted(ssrc, now)
            elif kind is rtcp.Remb:
                self.forwarder.on_remb(self, packet.bitrate, now)  # type: ignore[union-attr]
            elif kind is rtcp.SenderReport:
                source = next((s for s in self.sources.values() if s.ssrc == packet.ssrc), None)  # type: ignore[union-attr]
                if source is not None:
                    source.on_sender_report(packet, now)  # type: ignore[arg-type]
                self._reports(packet.reports, now)  # type: ignore[union-attr]
            elif kind is rtcp.ReceiverReport:
                self._reports(packet.reports, now)  # type: ignore[union-attr]

    def _keyframe_wanted(self, out_ssrc: int, now: float) -> None:
        slot = self.by_out_ssrc.get(out_ssrc)
        if slot is not None and slot.source is not None:
            slot.source.request_keyframe(now, strict=True)

    def _reports(self, blocks: Sequence[rtcp.ReportBlock], now: float) -> None:
        """Loss on the full-layer slots (main, chair) drives the layer choice."""
        loss = [b.fraction_lost / 256 for b in blocks
                if (slot := self.by_out_ssrc.get(b.ssrc)) is not None and slot.slot in ("main", "chair")]
        if loss:
            self.forwarder.on_loss(self, max(loss), now)

    # Video only, like the subscriber's REMB: browsers estimate from the packets that carry
    # abs-send-time, which the SFU adds to video only.

    def receiving_bps(self) -> float:
        """The video flowing to this subscriber now: the measured bitrates of the sources feeding
        its video slots."""
        return sum(slot.source.bitrate for slot in self.slots.values()
                   if slot.source is not None and slot.kind == "video")

    def need_bps(self, full: bool = True) -> float:
        """The video this subscriber receives with full layers (``full``) or thumbnails in its
        main and chair slots: the sources' measured bitrates."""
        total = 0.0
        for slot in self.slots.values():
            source = slot.source
            if source is None or slot.kind != "video":
                continue
            if slot.slot in ("main", "chair"):
                layer = source.endpoint.sources.get("camera" if full else "thumb")
                total += layer.bitrate if layer is not None else 0.0
            else:
                total += source.bitrate
        return total


# ---------------------------------------------------------------------------------------------
# The room


@dataclass
class _Settings:
    policy: IcePolicy
    ice_servers: list[dict[str, Any]]
    gallery_slots: int
    audio_slots: int


class RoomForwarder:
    """Endpoints, slot assignment and the speaker detector of one room.

    ``on_change(changed)`` is called (synchronously) when the dominant speaker or someone's slots
    changed outside a call of ``reassign``: ``changed`` = {participant id: new slot map}; the
    speaker is ``room.speaker``.  ``on_layers(participant id, paused layer names)`` when the
    layers a publisher should pause changed.  Owns one background task (``start``/``close``)."""

    def __init__(self, room: Room, config: MediaConfig, ice_servers: list[dict[str, Any]],
                 on_change: Callable[[bool, dict[str, dict[str, str | None]]], None],
                 metrics: ForwarderMetrics | None = None,
                 on_layers: Callable[[str, list[str]], None] | None = None):
        self.room = room
        # The server's own ICE agents use the configured STUN servers only: TURN is for browsers
        # behind strict firewalls (they relay to the server's host candidates); a server-side
        # relay would put every packet through a TURN allocation.
        stun_only = [dict(server, urls=[u for u in server["urls"] if u.lower().startswith(("stun:", "stuns:"))])
                     for server in ice_servers]
        stun_only = [server for server in stun_only if server["urls"]]
        self.settings = _Settings(IcePolicy.from_config(config), stun_only, config.gallery_slots, config.audio_slots)
        self.on_change = on_change
        self.on_layers = on_layers
        self.endpoints: dict[str, Endpoint] = {}
        self.assignment: dict[str, dict[str, str | None]] = {}
        self.speakers: SpeakerDetector[str] = SpeakerDetector()
        self._last_loudest: list[str] = []
        self.stats = {"plis": 0}
        self.metrics = metrics
        self._reported = {"audio": 0, "video": 0, "dropped": 0, "plis": 0}
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # ---- lifecycle ----

    def start(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._run(), name=f"media-forwarder-{self.room.id}")

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for pid in list(self.endpoints):
            await self.remove(pid)

    async def _run(self) -> None:
        ticks = 0
        last_report = time.monotonic()
        while True:
            await asyncio.sleep(TICK_INTERVAL)
            now = time.monotonic()
            ticks += 1
            try:
                self.send_nacks(now)
                if ticks % SLOW_TICKS == 0:
                    await self.reap(now)
                    self.tick(now)
                if now - last_report >= REPORT_INTERVAL:
                    self.send_reports(now, now - last_report)
                    last_report = now
            except Exception:
                log.exception("forwarder tick failed", extra={"room": self.room.id})

    async def reap(self, now: float) -> None:
        """Drop the endpoints whose media path died (the page closed its connection, or ICE
        failed and was not restarted): their sources stop feeding slots, their connection is
        closed.  The participant keeps its place: a new offer builds a new endpoint; leaving
        is the signalling side's decision (its grace period)."""
        dead = [e for e in self.endpoints.values() if e.peer.failed]
        for endpoint in dead:
            log.info("media connection lost", extra={"room": self.room.id, "participant": endpoint.id})
            await self._drop_endpoint(endpoint, now)
        if dead:
            self._wire(now)

    def send_nacks(self, now: float) -> None:
        """Ask publishers again for the packets that did not arrive (video, NACK negotiated)."""
        for endpoint in self.endpoints.values():
            for source in endpoint.sources.values():
                # only what someone receives is worth asking again
                if source.outs and source.nack and source.cache is not None and source.ssrc is not None:
                    seqs = source.stats.nacks_due(now, NACK_RETRY)
                    if seqs:
                        endpoint.peer.send_rtcp(rtcp.build_nack(source.local_ssrc, source.ssrc, seqs))

    def send_reports(self, now: float, interval: float) -> None:
        """To each publisher: a Receiver Report for its streams and a REMB for its video (the
        lowest estimate of the subscribers receiving each layer, within the layer's bounds)."""
        for endpoint in self.endpoints.values():
            reports = b""
            remb_total = 0
            remb_ssrcs = []
            sender_ssrc = None
            for source in endpoint.sources.values():
                reports += source.report(now, interval)
                sender_ssrc = sender_ssrc or source.local_ssrc
                if source.remb is not None and source.ssrc is not None and source.packets:
                    remb_total += source.remb_value(now)
                    remb_ssrcs.append(source.ssrc)
            if sender_ssrc is None:
                continue
            if remb_ssrcs:
                reports += rtcp.build_remb(sender_ssrc, remb_total, remb_ssrcs)
            if reports:
                endpoint.peer.send_rtcp(reports)

    def on_remb(self, subscriber: Endpoint, bitrate: float, now: float) -> None:
        """A subscriber's bandwidth estimate: its layer choice, and the REMB toward the sources
        it receives."""
        subscriber.remb_bps = bitrate
        for slot in subscriber.slots.values():
            if slot.source is not None and slot.source.remb is not None:
                slot.source.remb.update(subscriber.id, bitrate, now)
        self._choose_layers(subscriber, now, estimate=bitrate)

    def on_loss(self, subscriber: Endpoint, loss: float, now: float) -> None:
        self._choose_layers(subscriber, now, loss=loss)

    def _choose_layers(self, subscriber: Endpoint, now: float, *, estimate: float | None = None,
                       loss: float | None = None) -> None:
        full = subscriber.layers.update(now, need_bps=subscriber.need_bps(), estimate_bps=estimate, loss=loss,
                                        receiving_bps=subscriber.receiving_bps(),
                                        thumbs_bps=subscriber.need_bps(full=False))
        if full != subscriber.full:
            subscriber.full = full
            log.info("subscriber layers changed", extra={"participant": subscriber.id,
                                                         "layers": "full" if full else "thumbnail"})
            self._wire(now)

    def tick(self, now: float) -> None:
        """Speaker detection, slot reassignment, keyframe request retries."""
        speaker_changed = self.speakers.tick(now)
        if speaker_changed:
            speaker = self.speakers.speaker
            self.room.speaker = speaker if speaker in self.room.members else None
        # Room changes reassign at once (the service calls reassign); here only what the audio
        # levels move: the speaker and the loudest sources.
        loudest = self.speakers.loudest(len(self.room.members), now)
        changed = self.reassign(now, loudest) if speaker_changed or loudest != self._last_loudest else {}
        if speaker_changed or changed:
            self.on_change(speaker_changed, changed)
        for endpoint in self.endpoints.values():
            for source in endpoint.sources.values():
                if source.waiting:   # (lenient while a slot switched in after the last keyframe)
                    source.request_keyframe(now, strict=source.switched_at <= source.last_keyframe)
        self.update_pauses(now)
        self.report_metrics()

    def update_pauses(self, now: float) -> None:
        """Report to each publisher the layers nobody has received for ``PAUSE_HOLD`` (and the
        ones a slot needs again, at once)."""
        for endpoint in self.endpoints.values():
            changed = False
            for name in PAUSABLE:
                source = endpoint.sources.get(name)
                if source is not None and source.update_pause(now):
                    changed = True
            if changed and self.on_layers is not None:
                self.on_layers(endpoint.id, endpoint.paused())

    def paused_of(self, participant_id: str) -> list[str]:
        """The layers ``participant_id`` should not send now (for a rejoining page)."""
        endpoint = self.endpoints.get(participant_id)
        return endpoint.paused() if endpoint is not None else []

    # ---- negotiation ----

    async def negotiate(self, participant_id: str, layout: list[dict[str, Any]], offer_sdp: str) -> str:
        """Answer a participant's offer.  A re-offer of its current connection (ICE restart)
        keeps the connection and restarts ICE; an offer from another peer connection (the page
        reloaded its media) gets a new server connection, the old one is closed, and the
        participant's slots and sources are rebuilt on it."""
        current = self.endpoints.get(participant_id)
        if current is not None:
            # The same browser peer connection re-offering (ICE restart): same DTLS session,
            # same streams, new ICE agent.  None: another peer connection, built below.
            try:
                answer = await current.peer.answer_ice_restart(offer_sdp)
            except Exception as exc:
                raise ForwarderError("bad_sdp", f"the offer was refused: {exc}") from None
            if answer is not None:
                return answer
        pc = RTCPeerConnection(rtc_configuration(self.settings.ice_servers))
        peer = PacketPeer(pc, self.settings.policy)
        endpoint = Endpoint(self, participant_id, peer)
        try:
            try:
                await pc.setRemoteDescription(RTCSessionDescription(strip_mdns_candidates(offer_sdp), "offer"))
            except Exception as exc:
                raise ForwarderError("bad_sdp", f"the offer was refused: {exc}") from None
            transceivers = pc.getTransceivers()
            kinds = [t.kind for t in sorted(transceivers, key=lambda t: t._get_mline_index() or 0)]
            if kinds != [e["kind"] for e in layout]:
                raise ForwarderError("bad_sdp", f"the offer's media lines {kinds} do not follow the layout "
                                                f"{[e['kind'] for e in layout]}")
            for t in transceivers:
                t.direction = "sendrecv"
            try:
                peer.attach()
            except ValueError as exc:
                raise ForwarderError("bad_sdp", str(exc)) from None
            await pc.setLocalDescription(await pc.createAnswer())
        except BaseException:
            await peer.close()
            raise
        lines = peer.negotiated()
        now = time.monotonic()
        for line, entry in zip(lines, layout):
            if entry["send"] in PUBLISHED and line.receives:
                source = Source(endpoint, entry["send"], line)
                endpoint.sources[source.name] = source
                endpoint.sources_by_mid[line.mid] = source
            if entry["slot"] and line.sends:
                slot = SlotSender(endpoint, entry["slot"], line)
                endpoint.slots[slot.slot] = slot
                endpoint.by_out_ssrc[slot.out_ssrc] = slot
        member = self.room.members.get(participant_id)
        if member is None:  # left while negotiating
            await peer.close()
            raise ForwarderError("left", "this participant has left the meeting")
        if "audio" in endpoint.sources:
            endpoint.sources["audio"].muted = member.muted_by_chair
        old = self.endpoints.get(participant_id)
        if old is not None:
            await self._drop_endpoint(old, now)
        self.endpoints[participant_id] = endpoint
        peer.on_rtp = endpoint.on_rtp
        peer.on_rtcp = endpoint.on_rtcp
        changed = self.reassign(now)
        self._wire(now)
        if changed:
            self.on_change(False, changed)
        self.start()
        return pc.localDescription.sdp

    def endpoint(self, participant_id: str) -> Endpoint | None:
        return self.endpoints.get(participant_id)

    async def remove(self, participant_id: str) -> None:
        """The participant left: stop forwarding to and from it and close its connection."""
        self.speakers.remove(participant_id)
        endpoint = self.endpoints.pop(participant_id, None)
        self.assignment.pop(participant_id, None)
        if endpoint is not None:
            await self._drop_endpoint(endpoint, time.monotonic())

    async def _drop_endpoint(self, endpoint: Endpoint, now: float) -> None:
        if self.endpoints.get(endpoint.id) is endpoint:
            del self.endpoints[endpoint.id]
        self._retire_counters(endpoint)
        gone = set(map(id, endpoint.sources.values()))
        for other in self.endpoints.values():
            for slot in other.slots.values():
                if slot.previous is not None and id(slot.previous[0]) in gone:
                    slot.previous = None
        for slot in endpoint.slots.values():
            slot.set_source(None, now)
        for source in endpoint.sources.values():
            for out in list(source.outs):
                out.set_source(None, now)
        await endpoint.peer.close()

    # ---- state changes ----

    def set_muted(self, participant_id: str, muted: bool) -> None:
        """The chair muted (or un-muted) a site: its audio is no longer forwarded."""
        self.speakers.set_muted(participant_id, muted)
        endpoint = self.endpoints.get(participant_id)
        if endpoint is not None and "audio" in endpoint.sources:
            endpoint.sources["audio"].muted = muted

    def reassign(self, now: float | None = None, loudest: list[str] | None = None) -> dict[str, dict[str, str | None]]:
        """Recompute every participant's slots from the room state; switch the changed ones.
        Returns {participant id: slots} for the participants whose slots changed."""
        now = time.monotonic() if now is None else now
        room = self.room
        for pid in list(self.assignment):
            if pid not in room.members:
                del self.assignment[pid]
        speaker = room.speaker
        if loudest is None:
            loudest = self.speakers.loudest(len(room.members), now)
        self._last_loudest = loudest
        view = RoomView(room, loudest)
        changed: dict[str, dict[str, str | None]] = {}
        for pid in room.members:
            previous = self.assignment.get(pid, {})
            slots = assign_slots(room, pid, previous, gallery_slots=self.settings.gallery_slots,
                                 audio_slots=self.settings.audio_slots, speaker=speaker, loudest=loudest,
                                 view=view)
            if slots != previous:
                self.assignment[pid] = slots
                changed[pid] = slots
        if changed:
            self._wire(now)
        return changed

    def slots_of(self, participant_id: str) -> dict[str, str | None]:
        if participant_id not in self.assignment:
            self.reassign()
        return dict(self.assignment.get(participant_id, {}))

    def _wire(self, now: float) -> None:
        """Point every endpoint's slot senders at the sources the assignment names."""
        for pid, endpoint in self.endpoints.items():
            slots = self.assignment.get(pid)
            if slots is None:
                continue
            for name, sender in endpoint.slots.items():
                feeder = slots.get(name)
                source = None
                if feeder is not None:
                    publisher = self.endpoints.get(feeder)
                    if publisher is not None:
                        source = publisher.sources.get(_source_name(name, endpoint.full))
                sender.set_source(source, now)
        self.update_pauses(now)

    # ---- metrics ----

    def counters(self) -> dict[str, int]:
        """Packets forwarded per kind, dropped, PLIs sent, over the current endpoints' lives
        (plus those already reported for endpoints that left)."""
        out = {"audio": 0, "video": 0, "dropped": 0, "plis": self.stats["plis"]}
        for endpoint in self.endpoints.values():
            for slot in endpoint.slots.values():
                out[slot.kind] += slot.sent
                out["dropped"] += slot.dropped
        return out

    def report_metrics(self) -> None:
        """Add what happened since the last report to the Prometheus counters (not per packet:
        a Counter.inc costs as much as a forwarded packet)."""
        if self.metrics is None:
            return
        now = self.counters()
        for key, value in now.items():
            delta = value - self._reported[key]
            if delta > 0:
                self.metrics.add(key, delta)
            self._reported[key] = value

    def _retire_counters(self, endpoint: Endpoint) -> None:
        self.report_metrics()
        for slot in endpoint.slots.values():
            self._reported[slot.kind] -= slot.sent
            self._reported["dropped"] -= slot.dropped


class ForwarderMetrics:
    """The service's Prometheus counters, fed by ``RoomForwarder.report_metrics``."""

    def __init__(self, forwarded: Any, dropped: Any, plis: Any):
        self._forwarded, self._dropped, self._plis = forwarded, dropped, plis

    def add(self, key: str, delta: int) -> None:
        if key in ("audio", "video"):
            self._forwarded.labels(kind=key).inc(delta)
        elif key == "dropped":
            self._dropped.labels(reason="slot").inc(delta)
        elif key == "plis":
            self._plis.inc(delta)
