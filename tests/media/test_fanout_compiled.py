"""The forwarder's per-subscriber loop in C (media._fastpath.fanout_video/fanout_audio) against the
same loop in Python (SlotSender.forward_video/forward_audio): one random run of two publishers'
VP8 and Opus packets (PictureID-only and TL0PICIDX/KEYIDX descriptors, header extensions,
keyframes, losses, reordering), slots switching between them, subscribers with and without
abs-send-time, one with a compiled sender not installed yet, one whose ICE pair changes (its
packets then dropped), replayed twice through real compiled Senders on 127.0.0.1 sockets: every
subscriber must receive the same datagrams, byte for byte, and every counter must agree."""

from __future__ import annotations

import random
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from pylibsrtp import Policy, Session

from media import forwarder, native
from media.forwarder import ABS_SEND_TIME_URI, AUDIO_LEVEL_URI, SlotSender, Source
from media.rtc_adapter import Codec, MLine
from media.speaker import SpeakerDetector

fastpath = native.fastpath
pytestmark = pytest.mark.skipif(fastpath is None, reason="media._fastpath is not built (no C compiler)")

KEY = bytes(range(30))   # a fixed SRTP test key: the same plaintext gives the same datagrams
VP8, H264, OPUS = Codec(96, "vp8", 90000, None), Codec(102, "h264", 90000, None), Codec(111, "opus", 48000, 2)


@dataclass
class _Forwarder:
    stats: dict[str, int] = field(default_factory=lambda: {"plis": 0})
    speakers: SpeakerDetector[str] = field(default_factory=SpeakerDetector)


class _Peer:
    """What a SlotSender and a Source use of media.rtc_adapter.PacketPeer, over a real compiled
    Sender: ``send_rewritten`` is its method once ``send_parts`` has run (as PacketPeer installs
    it after its first packet); ``move()`` nominates another ICE pair (the Sender's slow path then
    refuses, as PacketPeer does for a relayed pair)."""

    def __init__(self, tx: socket.socket, rx: socket.socket, installed: bool):
        self.session = Session(policy=Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
        from pylibsrtp._binding import ffi, lib

        self.nominated: dict[int, Any] = {1: "pair"}
        self.sender = fastpath.Sender(int(ffi.cast("uintptr_t", ffi.addressof(lib, "srtp_protect"))),
                                      int(ffi.cast("uintptr_t", self.session._srtp[0])), self.session, tx.fileno(),
                                      rx.getsockname(), self.nominated, "pair", self._slow)
        self.send_rewritten = self.sender.send_rewritten if installed else None
        self.rtcp: list[bytes] = []

    def _slow(self, head: Any, rest: Any) -> bool:
        return False

    def move(self) -> None:
        self.nominated[1] = "another pair"

    def send_parts(self, head: Any, rest: Any) -> bool:
        self.send_rewritten = self.sender.send_rewritten
        return bool(self.sender.send_parts(head, rest))

    def send_rtp(self, packet: Any) -> bool:
        return bool(self.sender.send_parts(packet[:12], packet[12:]))

    def send_rtcp(self, packet: bytes) -> bool:
        self.rtcp.append(bytes(packet))
        return True


@dataclass
class _Endpoint:
    id: str
    peer: Any
    forwarder: _Forwarder


def _vp8_payload(rnd: random.Random, pid: int, tl0: int, keyframe: bool, start: bool) -> bytes:
    kind = rnd.random()
    b0 = 0x10 if start else 0x00
    if kind < 0.8:                                     # PictureID only: the compiled path
        desc = bytes([b0 | 0x80, 0x80]) + struct.pack("!H", 0x8000 | pid)
    elif kind < 0.9:                                   # TL0PICIDX and KEYIDX: Python's
        desc = bytes([b0 | 0x80, 0xD0]) + struct.pack("!H", 0x8000 | pid) + bytes([tl0, 0x20 | (pid & 0x1F)])
    else:                                              # a 7-bit PictureID
        desc = bytes([b0 | 0x80, 0x80, pid & 0x7F])
    frame = (bytes([0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A]) if keyframe else bytes([0x11, 0x02, 0x00])) + \
        bytes(rnd.randrange(30, 1100))
    return desc + frame


def _rtp(pt: int, seq: int, ts: int, ssrc: int, payload: bytes, marker: bool, ext: bytes = b"") -> bytes:
    b0 = 0x90 if ext else 0x80
    return struct.pack("!BBHII", b0, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + ext + payload


def _line(mid: str, kind: str, local_ssrc: int, remote: tuple[int, ...], codecs: tuple[Codec, ...],
          extensions: dict[str, int]) -> MLine:
    return MLine(index=int(mid), mid=mid, kind=kind, direction="sendrecv", local_ssrc=local_ssrc,
                 local_rtx_ssrc=local_ssrc + 1, remote_ssrcs=remote, remote_rtx={}, codecs=codecs,
                 extensions=extensions)


def _drain(rx: socket.socket) -> list[bytes]:
    """Every datagram queued on a non-blocking socket."""
    datagrams = []
    while True:
        try:
            datagrams.append(rx.recv(4096))
        except BlockingIOError:
            return datagrams


def _run(seed: int, compiled: bool, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    if not compiled:
        monkeypatch.setattr(forwarder, "_fanout_video", None)
        monkeypatch.setattr(forwarder, "_fanout_audio", None)
    rnd = random.Random(seed)
    fwd = _Forwarder()
    sockets: list[socket.socket] = []

    def pair() -> tuple[socket.socket, socket.socket]:
        tx, rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tx.bind(("127.0.0.1", 0))
        rx.bind(("127.0.0.1", 0))
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        rx.setblocking(False)
        sockets.extend((tx, rx))
        return tx, rx

    try:
        publishers = []
        for p, ssrc in enumerate((0x1111, 0x2222)):
            ext = {AUDIO_LEVEL_URI: 1}
            ep = _Endpoint(f"pub{p}", _Peer(*pair(), installed=True), fwd)
            video = Source(ep, "camera", _line("1", "video", 50 + p, (ssrc,), (VP8, H264), {}))   # type: ignore[arg-type]
            audio = Source(ep, "audio", _line("0", "audio", 60 + p, (ssrc + 1,), (OPUS,), ext))  # type: ignore[arg-type]
            publishers.append((video, audio, ssrc))
        subscribers = []
        for i in range(5):
            tx, rx = pair()
            ep = _Endpoint(f"sub{i}", _Peer(tx, rx, installed=i != 3), fwd)
            ast = {ABS_SEND_TIME_URI: 2 + i} if i % 2 == 0 else {}
            codecs = (VP8, H264) if i != 4 else (H264,)    # subscriber 4 cannot take VP8: counted as dropped
            v = SlotSender(ep, "main", _line("1", "video", 1000 + 10 * i, (), codecs, ast))  # type: ignore[arg-type]
            a = SlotSender(ep, "audio-0", _line("0", "audio", 2000 + 10 * i, (), (OPUS,), {}))  # type: ignore[arg-type]
            subscribers.append((v, a, rx, ep.peer))
        now = 10.0
        state = [{"seq": rnd.randrange(65536), "ts": rnd.randrange(1 << 32), "pid": rnd.randrange(0x8000), "tl0": 0,
                  "aseq": rnd.randrange(65536), "ats": 0} for _ in publishers]
        for step in range(3000):
            now += 0.002
            roll = rnd.random()
            if roll < 0.01:                       # a slot switches to the other publisher
                v, a, _, _ = rnd.choice(subscribers)
                video, audio, _ = rnd.choice(publishers)
                v.set_source(video, now)
                a.set_source(audio, now)
                continue
            if roll < 0.012:
                subscribers[1][3].move()         # subscriber 1's pair changes: its packets are dropped
                continue
            p = rnd.randrange(len(publishers))
            video, audio, ssrc = publishers[p]
            st = state[p]
            if roll < 0.3:                        # audio with a level extension
                st["aseq"] += 1
                st["ats"] += 960
                level = bytes([0xBE, 0xDE, 0, 1, 0x10, rnd.randrange(128), 0, 0])
                audio.on_packet(_rtp(111, st["aseq"], st["ats"], ssrc + 1, bytes(rnd.randrange(20, 160)), False,
                                     level), now)
                continue
            late = rnd.random() < 0.05
            st["seq"] += 0 if late else rnd.choice([1, 1, 1, 1, 2])
            seq = st["seq"] - (rnd.randrange(1, 5) if late else 0)
            if rnd.random() < 0.2:
                st["ts"] += 3000
                st["pid"] = (st["pid"] + 1) & 0x7FFF
                st["tl0"] = (st["tl0"] + 1) & 0xFF
            keyframe = rnd.random() < 0.04
            if rnd.random() < 0.05:               # H.264: a keyframe starts with an IDR or SPS
                payload = bytes([0x67 if keyframe else 0x41]) + bytes(rnd.randrange(20, 900))
                packet = _rtp(102, seq, st["ts"], ssrc, payload, rnd.random() < 0.3)
            else:
                payload = _vp8_payload(rnd, st["pid"], st["tl0"], keyframe, keyframe or rnd.random() < 0.3)
                ext = bytes([0xBE, 0xDE, 0, 1, 0x32, 1, 2, 3]) if rnd.random() < 0.5 else b""
                packet = _rtp(96, seq, st["ts"], ssrc, payload, rnd.random() < 0.3, ext)
            video.on_packet(packet, now)
        received = [_drain(rx) for _, _, rx, _ in subscribers]
        counters = [(s.sent, s.octets, s.dropped, s.waiting_keyframe, s.rewriter.last_seq, s.rewriter.switches,
                     s.vp8.last_picture_id) for v, a, _, _ in subscribers for s in (v, a)]
        sources = [(s.waiting, s.packets, s.last_keyframe) for video, audio, _ in publishers for s in (video, audio)]
        plis = [ep_rtcp for video, _, _ in publishers for ep_rtcp in video.endpoint.peer.rtcp]
        return {"received": received, "counters": counters, "sources": sources, "plis": plis}
    finally:
        for s in sockets:
            s.close()


@pytest.mark.parametrize("seed", range(4))
def test_the_compiled_fanout_sends_what_the_python_loop_sends(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"video": 0, "audio": 0}
    original_video, original_audio = SlotSender.forward_video, SlotSender.forward_audio

    def counted_video(self: SlotSender, frame: Any, now: float) -> None:
        calls["video"] += 1
        original_video(self, frame, now)

    def counted_audio(self: SlotSender, *args: Any) -> None:
        calls["audio"] += 1
        original_audio(self, *args)

    monkeypatch.setattr(SlotSender, "forward_video", counted_video)
    monkeypatch.setattr(SlotSender, "forward_audio", counted_audio)
    compiled = _run(seed, True, monkeypatch)
    in_python = dict(calls)
    calls.update(video=0, audio=0)
    reference = _run(seed, False, monkeypatch)
    assert sum(map(len, reference["received"])) > 1500           # the run forwarded plenty
    assert [len(r) for r in compiled["received"]] == [len(r) for r in reference["received"]]
    for i, (got, want) in enumerate(zip(compiled["received"], reference["received"])):
        assert got == want, f"subscriber {i}: the datagrams differ"
    assert compiled["counters"] == reference["counters"]
    assert compiled["sources"] == reference["sources"]
    assert compiled["plis"] == reference["plis"]
    # the compiled loop carried most packets itself; Python got the ones it hands over
    assert 0 < in_python["video"] < calls["video"] / 3, (in_python, calls)
    assert 0 < in_python["audio"] < calls["audio"] / 3, (in_python, calls)


def _hostile_run(seed: int, compiled: bool, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A participant's authenticated but hostile RTP: any length, any header bits (CSRC count,
    extension and padding with lengths past the end), truncated or absurd VP8 descriptors."""
    if not compiled:
        monkeypatch.setattr(forwarder, "_fanout_video", None)
        monkeypatch.setattr(forwarder, "_fanout_audio", None)
    rnd = random.Random(seed)
    fwd = _Forwarder()
    tx, rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        tx.bind(("127.0.0.1", 0))
        rx.bind(("127.0.0.1", 0))
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        rx.setblocking(False)
        pub = _Endpoint("pub", _Peer(tx, rx, installed=True), fwd)
        video = Source(pub, "camera", _line("1", "video", 50, (0x1111,), (VP8, H264), {}))  # type: ignore[arg-type]
        audio = Source(pub, "audio", _line("0", "audio", 60, (0x2222,), (OPUS,), {AUDIO_LEVEL_URI: 1}))  # type: ignore[arg-type]
        sub = _Endpoint("sub", _Peer(tx, rx, installed=True), fwd)
        outs = [SlotSender(sub, "main", _line("1", "video", 1000, (), (VP8, H264), {ABS_SEND_TIME_URI: 2})),  # type: ignore[arg-type]
                SlotSender(sub, "gallery-0", _line("2", "video", 1010, (), (VP8,), {})),  # type: ignore[arg-type]
                SlotSender(sub, "audio-0", _line("0", "audio", 1020, (), (OPUS,), {}))]  # type: ignore[arg-type]
        outs[0].set_source(video, 1.0)
        outs[1].set_source(video, 1.0)
        outs[2].set_source(audio, 1.0)
        errors = []
        now = 2.0
        for step in range(12000):
            now += 0.001
            # at least the fixed header: PacketPeer delivers nothing shorter
            n = rnd.choice([12, 13, 14, 16, 20, 24, rnd.randrange(12, 1300)])
            data = bytearray(rnd.randbytes(n))
            if n:
                data[0] = 0x80 | (data[0] & 0x3F)              # version 2, anything else random
            if n > 1:
                data[1] = (data[1] & 0x80) | rnd.choice([96, 102, 111, 0, 127])
            if n >= 12:
                struct.pack_into("!I", data, 8, rnd.choice([0x1111, 0x2222, 0x3333]))
            if n > 13 and rnd.random() < 0.5:                  # a plausible VP8 start, then garbage
                data[12] = rnd.choice([0x90, 0x10, 0x80, 0xB0])
                data[13] = rnd.choice([0x80, 0xC0, 0xF0, 0x10, 0x00])
            if rnd.random() < 0.3 and n > 12:                  # a keyframe marker for waiting slots
                data[12:] = bytes([0x90, 0x80, 0x80, 0x01, 0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A])[:n - 12]
            source = audio if data[8:12] == b"\x00\x00\x22\x22" else video
            try:
                source.on_packet(bytes(data), now)
            except Exception as exc:   # the receive layer would log it and drop the packet
                errors.append((step, type(exc).__name__))
        return {"received": _drain(rx), "errors": errors,
                "counters": [(o.sent, o.octets, o.dropped, o.waiting_keyframe) for o in outs]}
    finally:
        tx.close()
        rx.close()


@pytest.mark.parametrize("seed", range(3))
def test_hostile_packets_through_the_compiled_fanout_are_handled_as_in_python(
        seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    compiled = _hostile_run(seed, True, monkeypatch)
    reference = _hostile_run(seed, False, monkeypatch)
    assert compiled == reference
    assert compiled["errors"] == []                    # nothing raised on the way
    assert sum(sent for sent, _, _, _ in compiled["counters"]) > 20   # some made it through


@pytest.mark.parametrize("ext_id,expected", [(3, 3), (14, 14), (15, 0), (200, 0)])
def test_abs_send_time_only_with_a_one_byte_extension_id(ext_id: int, expected: int) -> None:
    """An abs-send-time id the one-byte form cannot carry (a browser that negotiated two-byte
    extensions) must not reach the header writer, in C or in Python: no extension then."""
    peer = type("Peer", (), {"send_rtp": None, "send_rewritten": None})()   # not used here
    endpoint = _Endpoint("sub", peer, _Forwarder())
    slot = SlotSender(endpoint, "main", _line("1", "video", 1000, (), (VP8,), {ABS_SEND_TIME_URI: ext_id}))  # type: ignore[arg-type]
    assert slot.ast_id == expected
