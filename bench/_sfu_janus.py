"""Janus VideoRoom as the peer of ``bench.sfu``: the same load, Janus's CPU per forwarded packet.

API for ``bench.sfu`` (also in /work/brief/s6/janus-bench-api.md): ``detect()`` says why Janus
cannot be measured here (None when it can); ``run_janus(fixture, sites, warmup, window,
progress)`` returns Janus's CPU per forwarded packet and the receive rates.  Standalone:
``python -m bench._sfu_janus --sites 8`` prints one JSON line.

Candidates on loopback: Janus (libnice) gathers no candidate on the loopback interface, and the
benchmark's traffic must stay on loopback.  So one child process unshares a network namespace
of its own, brings its ``lo`` up and adds a veth pair whose first end carries 127.0.0.1/32:
Janus sees 127.0.0.1 on an ordinary interface and offers it as a host candidate; the aiortc
peers bind 127.0.0.1 through ``media.rtc_adapter.IcePolicy``.  The namespace has no route out
and disappears with the last process in it, so there is nothing to delete afterwards; Janus is
stopped by PID (SIGINT, then SIGKILL) and dies with the child anyway (PR_SET_PDEATHSIG).  Janus
runs pinned to one core (taskset) from a private config directory: only the VideoRoom plugin
and the HTTP transport, HTTP API on 127.0.0.1, no STUN, no mDNS, own RTP port range.

The load: 1 chair + S sites, each publishing one Opus track and one 640x360 30 fps VP8 track,
and each subscribing, through one Janus multistream subscriber, to the video of ``gallery + 2``
other sites (main + chair + gallery) and the audio of ``audio_slots`` others.  The peers are
``media.rtc_adapter.PacketPeer``s (aiortc for SDP/ICE/DTLS only): publishers send the fixture's
RTP packets at real pace (``bench._sfu_load.SiteReplay``, as bench.sfu's load), subscribers
count decrypted packets and video marker bits; no codec runs anywhere.  Janus has no thumbnail
layer, so every video subscription is the full track; CPU is compared per forwarded packet.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import itertools
import json
import multiprocessing
import multiprocessing.connection
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

JANUS_LIB = Path("/usr/lib/x86_64-linux-gnu/janus")
VIDEOROOM_PLUGIN = "libjanus_videoroom.so"
HTTP_TRANSPORT = "libjanus_http.so"
# Janus's candidate (on the veth) and the aiortc peers' bound address: all in the namespace.
JANUS_ADDRESS = "127.0.0.1"
VETH = ("ltjanus0", "ltjanus1")
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
CLK_TCK = os.sysconf("SC_CLK_TCK")
ROOM_ID = 1234

Progress = Callable[[str], None]


class JanusUnavailable(RuntimeError):
    """Janus cannot be measured here; the message says why (for ``janus_skipped``)."""


def janus_library_dir() -> Path | None:
    """Where Debian's package put the plugins (multiarch directory), if anywhere."""
    for candidate in [JANUS_LIB, *Path("/usr/lib").glob("*/janus")]:
        if (candidate / "plugins" / VIDEOROOM_PLUGIN).exists():
            return candidate
    return None


def detect() -> str | None:
    """None when Janus can be measured here, else a one-line reason.  Starts nothing."""
    if shutil.which("janus") is None:
        return "janus not installed (Debian package 'janus')"
    lib = janus_library_dir()
    if lib is None:
        return f"Janus VideoRoom plugin ({VIDEOROOM_PLUGIN}) not found under /usr/lib/*/janus"
    if not (lib / "transports" / HTTP_TRANSPORT).exists():
        return f"Janus HTTP transport ({HTTP_TRANSPORT}) not found in {lib / 'transports'}"
    for tool in ("ip", "taskset"):
        if shutil.which(tool) is None:
            return f"'{tool}' not found (needed for Janus's network namespace / core pinning)"
    if _packet_adapter() is None:
        return "media.rtc_adapter.PacketPeer missing (the non-decoding load generator needs it)"
    if os.geteuid() != 0:
        return "not root: a private network namespace for Janus's loopback candidates needs CAP_SYS_ADMIN"
    return None


# --- pure parts: config files, subscription plan, /proc accounting ------------------------------


def janus_config_files(config_dir: Path, http_port: int, rtp_ports: tuple[int, int], debug_level: int = 3, event_loops: int = 0) -> dict[str, str]:
    """The private Janus configuration: file name -> text (libconfig "jcfg" syntax).

    ``event_loops``: 0 is Janus's default (one media loop thread per handle); N > 0 makes all
    handles share N loop threads.
    """
    loops = f"\tevent_loops = {event_loops}\n" if event_loops > 0 else ""
    general = f"""general: {{
\tconfigs_folder = "{config_dir}"
\tplugins_folder = "{config_dir / 'plugins'}"
\ttransports_folder = "{config_dir / 'transports'}"
\tevents_folder = "{config_dir / 'events'}"
\tloggers_folder = "{config_dir / 'loggers'}"
\tdebug_level = {debug_level}
\tsession_timeout = 60
\tserver_name = "lienthong-bench"
{loops}}}
certificates: {{
}}
media: {{
\trtp_port_range = "{rtp_ports[0]}-{rtp_ports[1]}"
}}
nat: {{
\tnice_debug = false
\tignore_mdns = true
\tice_ignore_list = "{VETH[1]}"
}}
plugins: {{
}}
transports: {{
}}
loggers: {{
}}
events: {{
\tbroadcast = false
}}
"""
    http = f"""general: {{
\tjson = "plain"
\tbase_path = "/janus"
\thttp = true
\tport = {http_port}
\tip = "{JANUS_ADDRESS}"
\thttps = false
}}
admin: {{
\tadmin_http = false
\tadmin_https = false
}}
"""
    videoroom = "general: {\n}\n"
    return {"janus.jcfg": general, "janus.transport.http.jcfg": http, "janus.plugin.videoroom.jcfg": videoroom}


def subscription_plan(site: int, feeds: list[int], video_feeds: int, audio_feeds: int) -> tuple[list[int], list[int]]:
    """Which other sites' video and audio ``site`` subscribes to: the next ones round the table.

    Rotating from each site's own position spreads the load evenly over publishers, as a
    meeting's main/chair/gallery slots spread over its sites.
    """
    n = len(feeds)
    others = [feeds[(site + k) % n] for k in range(1, n)]
    return others[:video_feeds], others[:audio_feeds]


def udp_socket_drops(pid: int, proc: Path = Path("/proc")) -> tuple[int, int]:
    """Datagrams dropped on full receive buffers in this network namespace (/proc/net/udp is
    per namespace), split into (sockets of process ``pid``, all other sockets)."""
    inodes = set()
    try:
        for fd in (proc / str(pid) / "fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        pass
    own = other = 0
    for line in (proc / "net" / "udp").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) < 13:
            continue
        if fields[9] in inodes:
            own += int(fields[12])
        else:
            other += int(fields[12])
    return own, other


def process_tree_cpu_seconds(pid: int, proc: Path = Path("/proc")) -> float:
    """utime + stime of ``pid`` and all its descendants (every thread counts), from /proc."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited meanwhile
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    tree = {pid}
    grew = True
    while grew:
        grew = False
        for child, parent in parents.items():
            if parent in tree and child not in tree:
                tree.add(child)
                grew = True
    return sum(times.get(p, 0.0) for p in tree)


# --- the namespace and the Janus process (run inside the child) --------------------------------


def enter_private_netns() -> None:
    """Move this process into a new network namespace of its own: ``lo`` up, and a veth pair
    whose first end carries 127.0.0.1/32 (so Janus/libnice offers 127.0.0.1).  Root only.
    Usable by another benchmark child that wants the same network (bench.sfu's own SFU)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        raise JanusUnavailable(f"unshare(CLONE_NEWNET) failed: {os.strerror(ctypes.get_errno())}")
    commands = [
        ["ip", "link", "set", "lo", "up"],
        ["ip", "link", "add", VETH[0], "type", "veth", "peer", "name", VETH[1]],
        ["ip", "addr", "add", f"{JANUS_ADDRESS}/32", "dev", VETH[0]],
        ["ip", "link", "set", VETH[0], "up"],
        ["ip", "link", "set", VETH[1], "up"],
    ]
    for cmd in commands:
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise JanusUnavailable(f"network namespace set-up failed: {' '.join(cmd)}: {done.stderr.strip()}")


def _free_port(address: str, kind: int = socket.SOCK_STREAM) -> int:
    # Inside our own namespace nothing else binds, so the port stays free until Janus takes it.
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((address, 0))
        port: int = s.getsockname()[1]
        return port


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class JanusProcess:
    """A private Janus: own config directory, pinned to one core, stopped by PID."""

    workdir: Path
    cpu: int | None
    event_loops: int = 0
    http_port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{JANUS_ADDRESS}:{self.http_port}/janus"

    @property
    def log_path(self) -> Path:
        return self.workdir / "janus.log"

    def start(self) -> None:
        lib = janus_library_dir()
        assert lib is not None
        for sub, name in (("plugins", VIDEOROOM_PLUGIN), ("transports", HTTP_TRANSPORT), ("events", None), ("loggers", None)):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
            if name is not None:
                (self.workdir / sub / name).symlink_to(lib / sub / name)
        self.http_port = _free_port(JANUS_ADDRESS)
        rtp_low = 20000
        for name, text in janus_config_files(self.workdir, self.http_port, (rtp_low, rtp_low + 1999), event_loops=self.event_loops).items():
            (self.workdir / name).write_text(text)
        cmd = ["janus", "-C", str(self.workdir / "janus.jcfg"), "-F", str(self.workdir), "-o"]
        if self.cpu is not None:
            cmd = ["taskset", "-c", str(self.cpu), *cmd]  # taskset execs: the PID is Janus's
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)

    def cpu_seconds(self) -> float:
        assert self.process is not None
        return process_tree_cpu_seconds(self.process.pid)

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)  # Janus shuts down cleanly on SIGINT
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# --- Janus HTTP API ------------------------------------------------------------------------------


class JanusError(RuntimeError):
    pass


class JanusSession:
    """One Janus API session over HTTP: requests, plus a long-poll task owned by this object."""

    def __init__(self, http: Any, base_url: str) -> None:
        self.http = http
        self.base_url = base_url
        self.session_id = 0
        self._transactions = (f"t{n}" for n in itertools.count())
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.webrtcup: dict[int, asyncio.Event] = {}
        self._poll: asyncio.Task[None] | None = None

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self.http.post(f"{self.base_url}{path}", json=body) as response:
            reply: dict[str, Any] = await response.json(content_type=None)
        if reply.get("janus") == "error":
            raise JanusError(f"{body.get('janus')}: {reply['error'].get('reason')}")
        return reply

    async def create(self) -> None:
        reply = await self._post("", {"janus": "create", "transaction": next(self._transactions)})
        self.session_id = reply["data"]["id"]
        self._poll = asyncio.create_task(self._long_poll())

    async def attach(self, plugin: str = "janus.plugin.videoroom") -> int:
        reply = await self._post(f"/{self.session_id}", {"janus": "attach", "plugin": plugin, "transaction": next(self._transactions)})
        handle: int = reply["data"]["id"]
        self.webrtcup[handle] = asyncio.Event()
        return handle

    async def message(self, handle: int, body: dict[str, Any], jsep: dict[str, Any] | None = None, timeout: float = 20.0) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Send a plugin message; return (plugin data, jsep) of the reply or of the async event."""
        transaction = next(self._transactions)
        request: dict[str, Any] = {"janus": "message", "transaction": transaction, "body": body}
        if jsep is not None:
            request["jsep"] = jsep
        waiter = asyncio.get_running_loop().create_future()
        self._pending[transaction] = waiter
        try:
            reply = await self._post(f"/{self.session_id}/{handle}", request)
            if reply.get("janus") != "ack":
                event = reply
            else:
                event = await asyncio.wait_for(waiter, timeout)
        finally:
            self._pending.pop(transaction, None)
        data: dict[str, Any] = event.get("plugindata", {}).get("data", {})
        if "error" in data:
            raise JanusError(f"{body.get('request')}: {data['error']} ({data.get('error_code')})")
        return data, event.get("jsep")

    async def _long_poll(self) -> None:
        while True:
            async with self.http.get(f"{self.base_url}/{self.session_id}", params={"maxev": "50"}) as response:
                events = await response.json(content_type=None)
            for event in events if isinstance(events, list) else [events]:
                waiter = self._pending.get(event.get("transaction", ""))
                if waiter is not None and not waiter.done() and event.get("janus") == "event":
                    waiter.set_result(event)
                elif event.get("janus") == "webrtcup" and event.get("sender") in self.webrtcup:
                    self.webrtcup[event["sender"]].set()

    async def close(self) -> None:
        if self._poll is not None:
            self._poll.cancel()
            await asyncio.gather(self._poll, return_exceptions=True)
        if self.session_id:
            try:
                await self._post(f"/{self.session_id}", {"janus": "destroy", "transaction": next(self._transactions)})
            except (JanusError, OSError):
                pass


# --- the load: packet-level aiortc peers -------------------------------------------------------

AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"


def _packet_adapter() -> Any | None:
    try:
        from media import rtc_adapter
    except ImportError:
        return None
    return rtc_adapter if hasattr(rtc_adapter, "PacketPeer") and hasattr(rtc_adapter, "IcePolicy") else None


def set_one_byte_extension_id(packet: bytes, old_id: int, new_id: int) -> bytes:
    """Renumber an RFC 8285 one-byte header extension (the fixture's audio level uses id 1;
    the negotiated id for ssrc-audio-level may differ).  Other packets come back unchanged."""
    if not packet[0] & 0x10 or old_id == new_id:
        return packet
    offset = 12 + 4 * (packet[0] & 0x0F)
    if packet[offset : offset + 2] != b"\xbe\xde":
        return packet
    words = int.from_bytes(packet[offset + 2 : offset + 4], "big")
    out = bytearray(packet)
    pos, end = offset + 4, offset + 4 + 4 * words
    while pos < end:
        byte = out[pos]
        if byte == 0:  # padding
            pos += 1
            continue
        eid, length = byte >> 4, (byte & 0x0F) + 1
        if eid == 15:
            break
        if eid == old_id:
            out[pos] = (new_id << 4) | (byte & 0x0F)
        pos += 1 + length
    return bytes(out)


@dataclass
class Subscriber:
    """One site's Janus subscriber handle and its receive counters (no decoding)."""

    peer: Any
    video_feeds: list[int]
    audio_feeds: list[int]
    video_mids: frozenset[str] = frozenset()
    packets: int = 0
    video_packets: int = 0
    video_frames: int = 0

    def on_rtp(self, packet: bytes, mid: str | None, arrival: float) -> None:
        self.packets += 1
        if mid in self.video_mids:
            self.video_packets += 1
            if packet[1] & 0x80:
                self.video_frames += 1

    async def close(self) -> None:
        await self.peer.close()


@dataclass
class Publisher:
    """One site's Janus publisher handle and its paced replay of the fixture."""

    feed: int
    peer: Any
    mids: dict[str, str]
    replay: Any
    audio_ssrc: int
    audio_level_id: int | None

    def send_due(self, elapsed: float) -> None:
        from bench._sfu_fixtures import AUDIO_LEVEL_EXT_ID

        for p in self.replay.due(elapsed):
            data = p.data
            if p.ssrc == self.audio_ssrc and self.audio_level_id is not None:
                data = set_one_byte_extension_id(data, AUDIO_LEVEL_EXT_ID, self.audio_level_id)
            self.peer.send_rtp(data)

    async def close(self) -> None:
        await self.peer.close()


def _packet_peer(rtc: Any, on_rtp: Any = None) -> Any:
    from aiortc import RTCPeerConnection

    pc = RTCPeerConnection(rtc.rtc_configuration([]))
    return rtc.PacketPeer(pc, rtc.IcePolicy(candidate_addresses=(JANUS_ADDRESS,)), on_rtp=on_rtp)


def _candidates(sdp: str) -> list[str]:
    return sorted({line.split()[4] for line in sdp.splitlines() if line.startswith("a=candidate:")})


async def _publish(session: JanusSession, site: int, fixture: Any, rtc: Any, progress: Progress) -> Publisher:
    from aiortc import RTCSessionDescription

    from bench._sfu_load import SiteReplay

    handle = await session.attach()
    peer = _packet_peer(rtc)
    pc = peer.pc
    pc.addTransceiver("audio", direction="sendonly")
    pc.addTransceiver("video", direction="sendonly")
    peer.attach()
    try:
        await pc.setLocalDescription(await pc.createOffer())
        data, jsep = await session.message(
            handle,
            {"request": "joinandconfigure", "room": ROOM_ID, "ptype": "publisher", "display": "chair" if site == 0 else f"site-{site}"},
            {"type": "offer", "sdp": pc.localDescription.sdp, "trickle": False},
        )
        if jsep is None:
            raise JanusError(f"publisher {site}: no SDP answer in {data}")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=jsep["sdp"], type=jsep["type"]))
        if site == 0:
            progress(f"Janus: ICE host candidates: Janus {', '.join(_candidates(jsep['sdp'])) or 'none'}; "
                     f"aiortc peers {', '.join(_candidates(pc.localDescription.sdp)) or 'none'}")
        lines = {line.kind: line for line in peer.negotiated()}
        audio_line, video_line = lines["audio"], lines["video"]
        vp8, opus = video_line.codec("vp8"), audio_line.codec("opus")
        if vp8 is None or opus is None:
            raise JanusError(f"publisher {site}: Janus did not accept VP8 + Opus")
    except BaseException:
        await peer.close()
        raise
    replay = SiteReplay(fixture, site, video_ssrc=video_line.local_ssrc, audio_ssrc=audio_line.local_ssrc,
                        video_pt=vp8.payload_type, audio_pt=opus.payload_type)
    return Publisher(int(data["id"]), peer, {"audio": audio_line.mid, "video": video_line.mid}, replay,
                     audio_line.local_ssrc, audio_line.extensions.get(AUDIO_LEVEL_URI))


async def _subscribe(session: JanusSession, video_feeds: list[int], audio_feeds: list[int], mids: dict[int, dict[str, str]], rtc: Any) -> Subscriber:
    from aiortc import RTCSessionDescription

    handle = await session.attach()
    streams = [{"feed": f, "mid": mids[f]["video"]} for f in video_feeds] + [{"feed": f, "mid": mids[f]["audio"]} for f in audio_feeds]
    data, jsep = await session.message(handle, {"request": "join", "room": ROOM_ID, "ptype": "subscriber", "streams": streams})
    if jsep is None:
        raise JanusError(f"subscriber: no SDP offer in {data}")
    subscriber = Subscriber(None, video_feeds, audio_feeds)
    subscriber.peer = peer = _packet_peer(rtc, on_rtp=subscriber.on_rtp)
    try:
        await peer.pc.setRemoteDescription(RTCSessionDescription(sdp=jsep["sdp"], type=jsep["type"]))
        peer.attach()
        await peer.pc.setLocalDescription(await peer.pc.createAnswer())
        subscriber.video_mids = frozenset(line.mid for line in peer.negotiated() if line.kind == "video")
        answer = {"type": "answer", "sdp": peer.pc.localDescription.sdp, "trickle": False}
        await session.message(handle, {"request": "start", "room": ROOM_ID}, answer)
    except BaseException:
        await peer.close()
        raise
    return subscriber


async def _send_paced(publishers: list[Publisher]) -> None:
    """All publishers' replays from one task: what is due, every 2 ms (bench.sfu's pace)."""
    start = time.perf_counter()
    while True:
        elapsed = time.perf_counter() - start
        for publisher in publishers:
            publisher.send_due(elapsed)
        await asyncio.sleep(0.002)


async def _wait_http(base_url: str, janus: JanusProcess, timeout: float = 15.0) -> None:
    import aiohttp

    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while True:
            if janus.process is not None and janus.process.poll() is not None:
                raise JanusUnavailable(f"Janus exited with status {janus.process.returncode}: {janus.log_tail()}")
            try:
                async with http.get(f"{base_url}/info") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise JanusUnavailable(f"Janus HTTP API did not answer within {timeout:.0f}s: {janus.log_tail()}")
            await asyncio.sleep(0.1)  # polling an external process's readiness: no event to wait on


async def _drive(janus: JanusProcess, fixture: Any, sites: int, warmup: float, window: float, gallery: int, audio_slots: int, progress: Progress) -> dict[str, Any]:
    import aiohttp

    from bench._sfu_fixtures import AUDIO_FRAME_S

    rtc = _packet_adapter()
    if rtc is None:
        raise JanusUnavailable("media.rtc_adapter.PacketPeer missing")
    await _wait_http(janus.base_url, janus)
    n_publishers = sites + 1
    video_n, audio_n = min(n_publishers - 1, gallery + 2), min(n_publishers - 1, audio_slots)
    publishers: list[Publisher] = []
    subscribers: list[Subscriber] = []
    sender: asyncio.Task[None] | None = None
    # Joins run a few at a time (Janus answers each handle in its own thread).
    gate = asyncio.Semaphore(8)

    async def publish(site: int) -> Publisher:
        async with gate:
            return await _publish(session, site, fixture, rtc, progress)

    async def subscribe(site: int) -> Subscriber:
        video, audio = subscription_plan(site, [p.feed for p in publishers], video_n, audio_n)
        async with gate:
            return await _subscribe(session, video, audio, {p.feed: p.mids for p in publishers}, rtc)

    async def join_all(joins: list[Any], into: list[Any]) -> None:
        # Keep every peer that joined (to close it) even when another join failed.
        results = await asyncio.gather(*joins, return_exceptions=True)
        into.extend(r for r in results if not isinstance(r, BaseException))
        for r in results:
            if isinstance(r, BaseException):
                raise r

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_read=60)) as http:
        session = JanusSession(http, janus.base_url)
        await session.create()
        try:
            admin = await session.attach()
            del session.webrtcup[admin]  # carries no media
            await session.message(
                admin,
                {
                    "request": "create",
                    "room": ROOM_ID,
                    "publishers": n_publishers,
                    "videocodec": "vp8",
                    "audiocodec": "opus",
                    "audiolevel_ext": True,
                    "bitrate": 0,
                    "fir_freq": 0,
                    "permanent": False,
                },
            )
            await join_all([publish(site) for site in range(n_publishers)], publishers)
            # Janus lists a feed for subscribers only once its PeerConnection is up.
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in session.webrtcup.values())), 30)
            for p in publishers:
                await p.peer.wait_connected(10)
            sender = asyncio.create_task(_send_paced(publishers))
            progress(f"Janus: {n_publishers} publishers joined and connected")
            await join_all([subscribe(site) for site in range(n_publishers)], subscribers)
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in session.webrtcup.values())), 30)
            progress(f"Janus: {n_publishers} subscribers x ({video_n} video + {audio_n} audio) connected; warm-up {warmup:g}s, window {window:g}s")
            await asyncio.sleep(warmup)  # steady state wanted (bench only)
            before = _Snapshot.take(janus, publishers, subscribers)
            await asyncio.sleep(window)
            after = _Snapshot.take(janus, publishers, subscribers)
        finally:
            if sender is not None:
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)
            peers: list[Any] = [*subscribers, *publishers]
            for peer in peers:
                await peer.close()
            await session.close()
    elapsed = after.at - before.at
    received = after.received - before.received
    # What Janus sent: received by the subscribers, or dropped on their full socket buffers when
    # the (shared, busy) machine starved the load generator.  Janus did that work either way.
    load_drops = after.load_socket_drops - before.load_socket_drops
    forwarded = received + load_drops
    video_streams = sum(len(s.video_feeds) for s in subscribers)
    audio_streams = sum(len(s.audio_feeds) for s in subscribers)
    expected = video_streams * fixture.video_packets_per_s + audio_streams / AUDIO_FRAME_S
    return {
        "sites": sites,
        "publishers": n_publishers,
        "event_loops": janus.event_loops,
        "video_streams": video_streams,
        "audio_streams": audio_streams,
        "window_s": round(elapsed, 2),
        "cpu_cores": (after.janus_cpu - before.janus_cpu) / elapsed,
        "cpu_us_per_packet": (after.janus_cpu - before.janus_cpu) / max(1, forwarded) * 1e6,
        # Sent by Janus to the subscribers (received + dropped at the load generator's sockets).
        "forwarded_packets_per_s": forwarded / elapsed,
        "received_packets_per_s": received / elapsed,
        "expected_packets_per_s": expected,
        "received_video_packets_per_s_per_stream": (after.video_packets - before.video_packets) / elapsed / max(1, video_streams),
        "fixture_video_packets_per_s": fixture.video_packets_per_s,
        "received_fps_per_video_stream": (after.video_frames - before.video_frames) / elapsed / max(1, video_streams),
        # Where packets go missing, if they do: published by the load generator, dropped before
        # sending (socket backlog), failed SRTP checks at subscribers.
        "published_packets_per_s": (after.published - before.published) / elapsed,
        "publisher_send_drops": after.send_drops,
        "subscriber_srtp_errors": after.srtp_errors,
        # Datagrams the kernel dropped on full receive buffers: at Janus's sockets (Janus did
        # not keep up) or at the load generator's (it did not).
        "janus_socket_drops_per_s": (after.janus_socket_drops - before.janus_socket_drops) / elapsed,
        "load_generator_socket_drops_per_s": load_drops / elapsed,
        # Janus forwarded everything it should and dropped nothing at its sockets.
        "janus_kept_up": after.janus_socket_drops == before.janus_socket_drops and forwarded / elapsed >= 0.97 * expected,
        # The load generator received everything Janus sent (else frame rates understate Janus).
        "load_generator_kept_up": load_drops == 0,
        # The load generator's own CPU: near 1.0 means it, not Janus, limits the rate.
        "load_generator_cpu_cores": (after.load_cpu - before.load_cpu) / elapsed,
    }


@dataclass(frozen=True)
class _Snapshot:
    at: float
    janus_cpu: float
    load_cpu: float
    received: int
    video_frames: int
    video_packets: int
    published: int
    send_drops: int
    srtp_errors: int
    janus_socket_drops: int
    load_socket_drops: int

    @classmethod
    def take(cls, janus: JanusProcess, publishers: list[Publisher], subscribers: list[Subscriber]) -> _Snapshot:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        assert janus.process is not None
        drops = udp_socket_drops(janus.process.pid)
        return cls(
            at=time.monotonic(),
            janus_cpu=janus.cpu_seconds(),
            load_cpu=usage.ru_utime + usage.ru_stime,
            received=sum(s.packets for s in subscribers),
            video_frames=sum(s.video_frames for s in subscribers),
            video_packets=sum(s.video_packets for s in subscribers),
            published=sum(p.peer.tx_packets for p in publishers),
            send_drops=sum(p.peer.tx_dropped for p in publishers),
            srtp_errors=sum(s.peer.rx_errors for s in subscribers),
            janus_socket_drops=drops[0],
            load_socket_drops=drops[1],
        )


# --- the child process and the parent's entry point ---------------------------------------------


def _child(conn: multiprocessing.connection.Connection, fixture: Any, sites: int, warmup: float, window: float, cpu: int | None, gallery: int, audio_slots: int, event_loops: int) -> None:
    def progress(message: str) -> None:
        conn.send(("progress", message))

    janus: JanusProcess | None = None
    try:
        if cpu is not None:  # the load generator keeps off Janus's core
            os.sched_setaffinity(0, (os.sched_getaffinity(0) - {cpu}) or set(range(os.cpu_count() or 1)) - {cpu})
        enter_private_netns()
        with tempfile.TemporaryDirectory(prefix="bench-janus-") as tmp:
            janus = JanusProcess(Path(tmp), cpu, event_loops)
            janus.start()
            try:
                result = asyncio.run(_drive(janus, fixture, sites, warmup, window, gallery, audio_slots, progress))
            finally:
                janus.stop()
        conn.send(("result", result))
    except Exception as exc:  # reported as janus_skipped: the benchmark's other parts still run
        tail = janus.log_tail(5) if janus is not None else ""
        reason = str(exc) if isinstance(exc, JanusUnavailable) else f"{type(exc).__name__}: {exc}"
        if tail and not isinstance(exc, JanusUnavailable):
            reason += " | janus log: " + tail.replace("\n", " / ")
        conn.send(("unavailable", reason))


def run_janus(
    fixture: Any,
    sites: int = 8,
    warmup: float = 3.0,
    window: float = 5.0,
    progress: Progress = lambda _: None,
    cpu: int | None = 0,
    gallery: int = 6,
    audio_slots: int = 3,
    event_loops: int = 0,
) -> dict[str, Any]:
    """Measure Janus VideoRoom under the bench load; raises ``JanusUnavailable`` with the reason."""
    reason = detect()
    if reason is not None:
        raise JanusUnavailable(reason)
    if cpu is not None and (os.cpu_count() or 1) < 2:
        cpu = None
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_child, args=(child, fixture, sites, warmup, window, cpu, gallery, audio_slots, event_loops), daemon=True)
    proc.start()
    child.close()
    try:
        deadline = time.monotonic() + warmup + window + 120 + 2 * sites
        while True:
            if not parent.poll(max(0.0, deadline - time.monotonic())):
                raise JanusUnavailable("Janus run timed out")
            try:
                kind, payload = parent.recv()
            except EOFError:
                raise JanusUnavailable(f"Janus load process died (exit code {proc.exitcode})") from None
            if kind == "progress":
                progress(payload)
            elif kind == "result":
                return payload  # type: ignore[no-any-return]
            else:
                raise JanusUnavailable(payload)
    finally:
        proc.join(15)
        if proc.is_alive():
            proc.kill()
            proc.join()


def main(argv: list[str] | None = None) -> int:
    from bench import _sfu_fixtures

    parser = argparse.ArgumentParser(prog="python -m bench._sfu_janus", description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=8, help="sites besides the chair (default 8)")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--window", type=float, default=5.0)
    parser.add_argument("--event-loops", type=int, default=0, help="Janus media loop threads shared by all handles (0: one per handle, Janus's default)")
    args = parser.parse_args(argv)

    def progress(message: str) -> None:
        print(f"[bench._sfu_janus {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-janus-fixture-") as tmp:
        fixture = _sfu_fixtures.load_or_build(Path(tmp), seconds=3.0)
    try:
        result: dict[str, Any] = run_janus(fixture, args.sites, args.warmup, args.window, progress, event_loops=args.event_loops)
    except JanusUnavailable as exc:
        result = {"janus_skipped": str(exc)}
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
