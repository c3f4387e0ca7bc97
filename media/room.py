"""Room state as plain data: participants, floor, chair mutes, hand queue, lock, slot owners.

Kept apart from transports (peer connections, RTP) so another node could take a room over from
its serialised state (``Room.to_dict`` / ``Room.from_dict``).  Every mutator returns the list of
events (JSON-able dicts, the shapes of docs/signalling.md) that the change causes; the service
delivers them.  No I/O, no asyncio here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Role = Literal["chair", "site", "observer"]
Event = dict[str, Any]


class RoomError(Exception):
    """A refused room operation.  ``code`` is stable for clients: ``locked``, ``ended``,
    ``not_chair``, ``no_such_participant``, ``observer``."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Member:
    id: str
    site_id: str
    site_name: str
    role: Role
    audio: bool = True
    video: bool = True
    screen: bool = False
    hand: bool = False
    muted_by_chair: bool = False

    def public(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Room:
    id: str
    members: dict[str, Member] = field(default_factory=dict)
    floor: str | None = None
    locked: bool = False
    ended: bool = False
    hands: list[str] = field(default_factory=list)
    speaker: str | None = None

    # ---- membership ----

    def add(self, member: Member) -> list[Event]:
        if self.ended:
            raise RoomError("ended", "the meeting has ended")
        if self.locked and member.role != "chair":
            raise RoomError("locked", "the meeting is locked by its chair")
        self.members[member.id] = member
        return [self.participants_event()]

    def remove(self, member_id: str) -> list[Event]:
        if self.members.pop(member_id, None) is None:
            return []
        events: list[Event] = []
        if member_id in self.hands:
            self.hands.remove(member_id)
            events.append(self.hands_event())
        if self.floor == member_id:
            self.floor = None
            events.append({"type": "floor", "participant": None})
        if self.speaker == member_id:
            self.speaker = None
        events.append(self.participants_event())
        return events

    def chair(self) -> Member | None:
        return next((m for m in self.members.values() if m.role == "chair"), None)

    def _member(self, member_id: str) -> Member:
        member = self.members.get(member_id)
        if member is None:
            raise RoomError("no_such_participant", f"no participant {member_id!r} in this meeting")
        return member

    def _require_chair(self, by: str) -> None:
        if self._member(by).role != "chair":
            raise RoomError("not_chair", "only the chair can do this")

    # ---- a site's own state ----

    def set_media_state(self, member_id: str, audio: bool | None = None, video: bool | None = None,
                        screen: bool | None = None) -> list[Event]:
        member = self._member(member_id)
        if member.role == "observer":
            raise RoomError("observer", "observers publish nothing")
        for name, value in (("audio", audio), ("video", video), ("screen", screen)):
            if value is not None:
                setattr(member, name, value)
        return [self.participants_event()]

    def raise_hand(self, member_id: str, raised: bool) -> list[Event]:
        member = self._member(member_id)
        if member.role == "observer":
            raise RoomError("observer", "observers cannot raise a hand")
        member.hand = raised
        if raised and member_id not in self.hands:
            self.hands.append(member_id)
        elif not raised and member_id in self.hands:
            self.hands.remove(member_id)
        return [self.hands_event(), self.participants_event()]

    # ---- chair controls ----

    def set_floor(self, by: str, member_id: str | None) -> list[Event]:
        self._require_chair(by)
        if member_id is not None:
            self._member(member_id)
        self.floor = member_id
        events: list[Event] = [{"type": "floor", "participant": member_id}]
        if member_id is not None and member_id in self.hands:
            # Giving the floor answers the raised hand.
            events += self.raise_hand(member_id, False)
        return events

    def mute_site(self, by: str, member_id: str, muted: bool = True) -> list[Event]:
        self._require_chair(by)
        self._member(member_id).muted_by_chair = muted
        return [{"type": "muted", "participant": member_id, "muted": muted}, self.participants_event()]

    def remove_site(self, by: str, member_id: str) -> list[Event]:
        self._require_chair(by)
        self._member(member_id)
        return [{"type": "closed", "reason": "removed", "participant": member_id}] + self.remove(member_id)

    def lock(self, by: str, locked: bool) -> list[Event]:
        self._require_chair(by)
        self.locked = locked
        return [{"type": "locked", "locked": locked}]

    def end(self, by: str) -> list[Event]:
        self._require_chair(by)
        self.ended = True
        return [{"type": "closed", "reason": "ended"}]

    # ---- snapshots ----

    def participants_event(self) -> Event:
        return {"type": "participants", "participants": [m.public() for m in self.members.values()]}

    def hands_event(self) -> Event:
        return {"type": "hands", "queue": list(self.hands)}

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "members": [m.public() for m in self.members.values()],
                "floor": self.floor, "locked": self.locked, "ended": self.ended,
                "hands": list(self.hands), "speaker": self.speaker}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Room:
        members = {m["id"]: Member(**m) for m in data["members"]}
        return cls(id=data["id"], members=members, floor=data["floor"], locked=data["locked"],
                   ended=data["ended"], hands=list(data["hands"]), speaker=data["speaker"])
