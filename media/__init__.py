"""The SFU.  Public face used by lienthong (start/stop) and by web's signalling endpoint.

Room state and chair controls: ``media/room.py`` (plain data).  Packet forwarding:
``media/forwarder.py`` (sources -> slots -> subscribers, keyframe wait + PLI on switch, mute,
slot assignment from floor/speaker/chair) over ``media/rtc_adapter.py`` (the only module on
aiortc/aioice private API: ICE candidates from config, SRTP in/out as bytes, no codec).
The face is stable: later work extends it, never renames it.

Usage from signalling::

    media: MediaService = app[keys.MEDIA]
    p = await media.join_room(room_id=grant.room_id, site_id=grant.site_id,
                         site_name=grant.site_name, role=grant.role, on_event=send_json)
    joined = {"me": p.me(), "ice_servers": media.ice_servers(), "layout": p.layout(),
              **p.snapshot()}
    answer_sdp = await p.answer(offer_sdp)           # the browser offers (see layout())
    await p.add_ice_candidate({"candidate": "...", "sdpMid": "0", "sdpMLineIndex": 0})
    await p.set_floor(other_id)                       # chair controls: MediaError("not_chair")
    await p.leave()

Who offers: the browser (or an aiortc test peer).  It adds transceivers in exactly the order of
``Participant.layout()``, one m-line each, so MID i is layout entry i (for a first offer).
The layout for G gallery slots and A audio slots (config ``media.gallery_slots``,
``media.audio_slots``)::

    0        audio  send=audio   slot=audio-0     sendrecv (recvonly for observers)
    1        video  send=camera  slot=main        full layer <= 1280x720
    2        video  send=thumb   slot=chair       thumbnail ~320x180, ~150 kbps
    3        video  send=screen  slot=screen      screen share (track added on demand)
    4..3+G   video  send=None    slot=gallery-k   recvonly, thumbnail layers
    4+G..    audio  send=None    slot=audio-k     recvonly, k = 1..A-1

Observers use the same layout with every ``send`` None (all recvonly).  Which participant feeds
each slot is pushed as ``{"type": "slots", "slots": {slot: participant id | None}}``.

Events pushed to ``on_event`` (an ``async def (dict) -> None``; a raising or slow callback never
blocks the room: events are queued per participant) are the shapes of docs/signalling.md without
the ``v`` field: participants, slots, speaker, floor, hands, locked, muted, closed, layers
(``{"type": "layers", "paused": ["camera", "thumb"]}``: the published layers nobody receives,
which the page should stop sending until a later ``layers`` event leaves them out).

Reconnect: a ``Participant`` lives until ``leave()``; the WebSocket may drop and come back.  The
signalling side keeps the handle for its grace period, rebinds events with
``set_event_sink(new_callback)``, and for an ICE restart (or a fresh peer connection) calls
``answer(new_offer)`` again: the participant keeps its id, slots, floor and hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from media import native
from media.forwarder import ForwarderError, ForwarderMetrics, RoomForwarder
from media.room import Event, Member, Role, Room, RoomError

if TYPE_CHECKING:
    from lienthong.config import Config

__all__ = ["EventSink", "MediaError", "MediaService", "Participant", "Role"]

log = logging.getLogger("media")

EventSink = Callable[[dict[str, Any]], Awaitable[None]]

# Bound of each participant's pending-event queue; a participant whose client does not read its
# events for this long loses the oldest ones (the next "participants"/"slots" event resynchronises).
EVENT_QUEUE_LIMIT = 256


class MediaError(Exception):
    """A refused media operation, with a stable ``code`` for clients: ``locked``, ``ended``,
    ``not_chair``, ``no_such_participant``, ``observer``, ``left``, ``not_implemented``,
    ``bad_sdp``."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def build_layout(role: Role, gallery_slots: int, audio_slots: int) -> list[dict[str, Any]]:
    """The transceivers a client creates, in order (one m-line each; MID i = entry i)."""
    publishes = role != "observer"
    layout: list[dict[str, Any]] = [
        {"kind": "audio", "send": "audio" if publishes else None, "slot": "audio-0"},
        {"kind": "video", "send": "camera" if publishes else None, "slot": "main"},
        {"kind": "video", "send": "thumb" if publishes else None, "slot": "chair"},
        {"kind": "video", "send": "screen" if publishes else None, "slot": "screen"},
    ]
    layout += [{"kind": "video", "send": None, "slot": f"gallery-{k}"} for k in range(gallery_slots)]
    layout += [{"kind": "audio", "send": None, "slot": f"audio-{k}"} for k in range(1, audio_slots)]
    return layout


class Participant:
    """One site's (or the chair's, or an observer's) handle in a room.  Obtained from
    ``MediaService.join_room``; valid until ``leave()``, removal or the end of the meeting."""

    def __init__(self, service: MediaService, room: Room, member: Member, on_event: EventSink):
        self._service = service
        self._room = room
        self._member = member
        self._sink = on_event
        self._events: asyncio.Queue[Event] = asyncio.Queue(EVENT_QUEUE_LIMIT)
        self._delivery: asyncio.Task[None] | None = None
        self.left = False

    @property
    def id(self) -> str:
        return self._member.id

    @property
    def room_id(self) -> str:
        return self._room.id

    @property
    def role(self) -> Role:
        return self._member.role

    def me(self) -> dict[str, Any]:
        return {"id": self.id, "site_id": self._member.site_id, "site_name": self._member.site_name,
                "role": self.role}

    def layout(self) -> list[dict[str, Any]]:
        media = self._service.config.media
        return build_layout(self.role, media.gallery_slots, media.audio_slots)

    def snapshot(self) -> dict[str, Any]:
        """Everything a (re)joining page needs: slots, participants, floor, locked, hands, speaker,
        and the layers it should not send (``paused``)."""
        room = self._room
        forwarder = self._service._forwarders.get(room.id)
        return {"slots": self._service._slots_for(self), "participants": room.participants_event()["participants"],
                "floor": room.floor, "locked": room.locked, "hands": list(room.hands), "speaker": room.speaker,
                "paused": forwarder.paused_of(self.id) if forwarder is not None else []}

    def set_event_sink(self, on_event: EventSink) -> None:
        """Send this participant's future events to another callback (after a reconnect)."""
        self._sink = on_event

    # ---- media ----

    async def answer(self, offer_sdp: str) -> str:
        """Apply the client's SDP offer and return the SDP answer.  A later offer (reconnect:
        ICE restart, or a fresh peer connection) replaces the media connection; the
        participant keeps its id, slots, floor and hand.  ``MediaError("bad_sdp")`` when the
        offer is malformed or does not follow ``layout()``."""
        self._check_alive()
        return await self._service._answer(self, offer_sdp)

    async def add_ice_candidate(self, candidate: dict[str, Any] | None) -> None:
        """Trickle ICE: a browser ``RTCIceCandidate.toJSON()`` dict, or None at the end of
        candidates.  ``.local`` (mDNS) candidates are ignored.  ``MediaError("bad_candidate")``
        for a candidate before the offer or one that does not parse."""
        self._check_alive()
        await self._service._add_ice_candidate(self, candidate)

    # ---- a site's own state ----

    async def set_media_state(self, audio: bool | None = None, video: bool | None = None,
                              screen: bool | None = None) -> None:
        await self._service._apply(self, lambda: self._room.set_media_state(self.id, audio, video, screen))

    async def raise_hand(self, raised: bool = True) -> None:
        await self._service._apply(self, lambda: self._room.raise_hand(self.id, raised))

    # ---- chair controls (MediaError("not_chair") for others) ----

    async def set_floor(self, participant_id: str | None) -> None:
        """Give the floor to a participant (it feeds everyone's main slot and first audio slot),
        or take it back with None."""
        await self._service._apply(self, lambda: self._room.set_floor(self.id, participant_id))

    async def mute_site(self, participant_id: str, muted: bool = True) -> None:
        """The SFU stops (or resumes) forwarding that participant's audio."""
        await self._service._apply(self, lambda: self._room.mute_site(self.id, participant_id, muted))

    async def remove_site(self, participant_id: str) -> None:
        """Remove a participant: it gets ``closed`` with reason ``removed``; others see it go."""
        await self._service._remove(self, participant_id)

    async def lock(self, locked: bool = True) -> None:
        """A locked meeting refuses new joins (except the chair); present sites stay."""
        await self._service._apply(self, lambda: self._room.lock(self.id, locked))

    async def end(self) -> None:
        """End the meeting: everyone gets ``closed`` with reason ``ended`` and the room is freed."""
        await self._service._end(self)

    async def leave(self) -> None:
        """Leave now (idempotent).  Others see the participant go."""
        await self._service._leave(self)

    # ---- internals ----

    def _check_alive(self) -> None:
        if self.left:
            raise MediaError("left", "this participant has left the meeting")

    def _push(self, event: Event) -> None:
        if self.left:
            return
        if self._events.full():
            self._events.get_nowait()
        self._events.put_nowait(event)

    def _start_delivery(self) -> None:
        self._delivery = asyncio.create_task(self._deliver(), name=f"media-events-{self.id}")

    async def _deliver(self) -> None:
        while True:
            event = await self._events.get()
            try:
                await self._sink(event)
            except Exception:  # a broken client connection must not stop the room
                log.warning("event delivery failed", extra={"participant": self.id, "event": event.get("type")})

    async def _stop_delivery(self, flush: bool) -> None:
        if flush:
            while not self._events.empty():
                with contextlib.suppress(Exception):
                    await self._sink(self._events.get_nowait())
        if self._delivery is not None:
            self._delivery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._delivery
            self._delivery = None


class MediaService:
    """The SFU service: rooms keyed by ``JoinGrant.room_id``; participants join, negotiate and
    leave through ``join_room`` and the returned ``Participant``."""

    name = "media"

    def __init__(self, config: Config, registry: CollectorRegistry):
        self.config = config
        self._rooms: dict[str, Room] = {}
        self._forwarders: dict[str, RoomForwarder] = {}
        self._participants: dict[str, dict[str, Participant]] = {}
        self._ids = itertools.count(1)
        self._started = False
        self._m_participants = Gauge("lienthong_media_participants", "Participants in media rooms",
                                     registry=registry)
        self._m_rooms = Gauge("lienthong_media_rooms", "Open media rooms", registry=registry)
        self._m_forwarded = Counter("lienthong_media_forwarded_packets", "RTP packets forwarded",
                                    ["kind"], registry=registry)
        self._m_dropped = Counter("lienthong_media_dropped_packets", "RTP packets dropped",
                                  ["reason"], registry=registry)
        self._m_plis = Counter("lienthong_media_plis", "Keyframe requests sent to publishers",
                               registry=registry)
        self._metrics = ForwarderMetrics(self._m_forwarded, self._m_dropped, self._m_plis)

    async def start(self) -> None:
        self._started = True
        if native.fastpath is not None:
            log.info("media packet path compiled (media._fastpath)", extra={"packet_path": "compiled"})
        else:
            log.warning("media packet path in Python: media._fastpath is not built or %s=1 (about 1.2-1.6x "
                        "the CPU per forwarded packet)", native.PURE_PYTHON_ENV, extra={"packet_path": "python"})

    async def stop(self, timeout: float) -> None:
        """Close every participant (``closed``/``server_closing`` is the signalling side's job)."""
        self._started = False
        for room_id in list(self._participants):
            for p in list(self._participants.get(room_id, {}).values()):
                await self._detach(p, flush=False)
        for room_id in list(self._rooms):
            await self._close_room(room_id)
        self._update_gauges()

    def ice_servers(self) -> list[dict[str, Any]]:
        """The configured STUN/TURN servers as ``RTCIceServer`` dicts for browsers (none by default)."""
        out: list[dict[str, Any]] = []
        for server in self.config.media.ice_servers:
            entry: dict[str, Any] = {"urls": list(server.urls)}
            if server.username:
                entry["username"] = server.username
                entry["credential"] = server.credential
            out.append(entry)
        return out

    def room_state(self, room_id: str) -> dict[str, Any] | None:
        """The room's plain-data state (``Room.to_dict``), or None when no such room is open."""
        room = self._rooms.get(room_id)
        return room.to_dict() if room else None

    async def join_room(self, *, room_id: str, site_id: str, site_name: str, role: Role,
                   on_event: EventSink) -> Participant:
        """Add a participant to a room (created on first join).  Raises ``MediaError`` with code
        ``locked`` (a non-chair joining a locked room) or ``ended``."""
        room = self._rooms.get(room_id)
        if room is None:
            room = self._rooms[room_id] = Room(room_id)
            self._participants[room_id] = {}
            self._forwarders[room_id] = RoomForwarder(
                room, self.config.media, self.ice_servers(),
                on_change=lambda speaker, changed: self._forwarder_changed(room_id, speaker, changed),
                metrics=self._metrics,
                on_layers=lambda pid, paused: self._layers_changed(room_id, pid, paused))
        member = Member(id=f"p{next(self._ids)}-{secrets.token_hex(3)}", site_id=site_id,
                        site_name=site_name, role=role, audio=role != "observer", video=role != "observer")
        try:
            events = room.add(member)
        except RoomError as exc:
            if not room.members:
                await self._close_room(room_id)
            raise MediaError(exc.code, exc.message) from None
        participant = Participant(self, room, member, on_event)
        self._participants[room_id][member.id] = participant
        participant._start_delivery()
        self._broadcast(room_id, events)
        self._update_gauges()
        return participant

    # ---- internals ----

    def _slots_for(self, participant: Participant) -> dict[str, str | None]:
        forwarder = self._forwarders.get(participant.room_id)
        return forwarder.slots_of(participant.id) if forwarder is not None else {}

    def _forwarder(self, participant: Participant) -> RoomForwarder:
        forwarder = self._forwarders.get(participant.room_id)
        if forwarder is None:
            raise MediaError("left", "this participant's meeting is closed")
        return forwarder

    async def _answer(self, participant: Participant, offer_sdp: str) -> str:
        forwarder = self._forwarder(participant)
        try:
            return await forwarder.negotiate(participant.id, participant.layout(), offer_sdp)
        except ForwarderError as exc:
            raise MediaError(exc.code, exc.message) from None

    async def _add_ice_candidate(self, participant: Participant, candidate: dict[str, Any] | None) -> None:
        endpoint = self._forwarder(participant).endpoint(participant.id)
        if endpoint is None:
            raise MediaError("bad_candidate", "an ICE candidate arrived before the offer")
        try:
            await endpoint.peer.add_ice_candidate(candidate)
        except ValueError as exc:
            raise MediaError("bad_candidate", f"the ICE candidate was refused: {exc}") from None

    def _forwarder_changed(self, room_id: str, speaker_changed: bool,
                           changed: dict[str, dict[str, str | None]]) -> None:
        participants = self._participants.get(room_id, {})
        room = self._rooms.get(room_id)
        if speaker_changed and room is not None:
            for p in participants.values():
                p._push({"type": "speaker", "participant": room.speaker})
        for pid, slots in changed.items():
            target = participants.get(pid)
            if target is not None:
                target._push({"type": "slots", "slots": dict(slots)})

    def _layers_changed(self, room_id: str, participant_id: str, paused: list[str]) -> None:
        p = self._participants.get(room_id, {}).get(participant_id)
        if p is not None:
            p._push({"type": "layers", "paused": paused})

    def _broadcast(self, room_id: str, events: list[Event]) -> None:
        participants = self._participants.get(room_id, {})
        forwarder = self._forwarders.get(room_id)
        for event in events:
            target = event.get("participant") if event["type"] in ("muted", "closed") else None
            if event["type"] == "muted" and forwarder is not None and target is not None:
                forwarder.set_muted(target, event["muted"])
            for p in participants.values():
                if event["type"] == "closed" and target is not None and p.id != target:
                    continue
                if event["type"] == "muted" and p.id != target:
                    continue
                p._push(event)
        if forwarder is not None and any(e["type"] in ("participants", "floor") for e in events):
            self._forwarder_changed(room_id, False, forwarder.reassign())

    async def _apply(self, participant: Participant, change: Callable[[], list[Event]]) -> None:
        participant._check_alive()
        try:
            events = change()
        except RoomError as exc:
            raise MediaError(exc.code, exc.message) from None
        self._broadcast(participant.room_id, events)

    async def _remove(self, chair: Participant, participant_id: str) -> None:
        chair._check_alive()
        room = self._rooms[chair.room_id]
        try:
            events = room.remove_site(chair.id, participant_id)
        except RoomError as exc:
            raise MediaError(exc.code, exc.message) from None
        target = self._participants[chair.room_id].pop(participant_id)
        target._push(events[0])
        await self._detach(target, flush=True)
        self._broadcast(chair.room_id, events[1:])
        self._update_gauges()

    async def _end(self, chair: Participant) -> None:
        chair._check_alive()
        room = self._rooms[chair.room_id]
        try:
            events = room.end(chair.id)
        except RoomError as exc:
            raise MediaError(exc.code, exc.message) from None
        for p in list(self._participants[room.id].values()):
            p._push(events[0])
            await self._detach(p, flush=True)
        await self._close_room(room.id)
        self._update_gauges()

    async def _leave(self, participant: Participant) -> None:
        if participant.left:
            return
        room_id = participant.room_id
        self._participants.get(room_id, {}).pop(participant.id, None)
        await self._detach(participant, flush=False)
        room = self._rooms.get(room_id)
        if room is not None:
            self._broadcast(room_id, room.remove(participant.id))
            if not room.members:
                await self._close_room(room_id)
        self._update_gauges()

    async def _detach(self, participant: Participant, flush: bool) -> None:
        participant.left = True
        forwarder = self._forwarders.get(participant.room_id)
        if forwarder is not None:
            await forwarder.remove(participant.id)
        await participant._stop_delivery(flush)

    async def _close_room(self, room_id: str) -> None:
        self._rooms.pop(room_id, None)
        self._participants.pop(room_id, None)
        forwarder = self._forwarders.pop(room_id, None)
        if forwarder is not None:
            await forwarder.close()

    def _update_gauges(self) -> None:
        self._m_rooms.set(len(self._rooms))
        self._m_participants.set(sum(len(p) for p in self._participants.values()))
