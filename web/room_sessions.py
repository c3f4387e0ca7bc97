"""Sites' places in meetings across signalling reconnects.

A ``RoomSession`` is a site's place: its join grant, its media participant and the WebSocket it
currently speaks through.  When that WebSocket drops, the session is *detached*: its media keeps
flowing (media travels over UDP, not over the WebSocket) and a grace timer starts.  A new
WebSocket presenting the session's resume key, with a token that still resolves to the same link,
re-attaches within the grace period; when the timer fires the site leaves for good.

``RoomSessions`` owns every grace timer and cancels them in ``stop()``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Protocol

from web.joins import JoinGrant

log = logging.getLogger("lienthong.web.signalling")


class Connection(Protocol):
    """The WebSocket side of a session (web.signalling.SignallingConnection)."""

    async def send_json(self, message: dict[str, Any]) -> None: ...


@dataclass(eq=False)
class RoomSession:
    grant: JoinGrant
    # What media.MediaService handed out for this site (its public face only).
    participant: Any
    resume_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    connection: Connection | None = None
    grace_task: asyncio.Task[None] | None = None
    left: bool = False

    @property
    def detached(self) -> bool:
        return self.connection is None


class RoomSessions:
    def __init__(self, grace_seconds: float, on_expired: Callable[[RoomSession], Awaitable[None]]):
        self.grace_seconds = grace_seconds
        self.on_expired = on_expired
        self._by_key: dict[str, RoomSession] = {}

    def __len__(self) -> int:
        return len(self._by_key)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(list(self._by_key.values()))

    def add(self, session: RoomSession, connection: Connection) -> None:
        session.connection = connection
        self._by_key[session.resume_key] = session

    def find(self, resume_key: str | None) -> RoomSession | None:
        return self._by_key.get(resume_key) if resume_key else None

    def for_link(self, link_id: str) -> RoomSession | None:
        """The live session of one join link (a link is one site's place)."""
        for session in self._by_key.values():
            if session.grant.link_id == link_id:
                return session
        return None

    def attach(self, session: RoomSession, connection: Connection) -> None:
        """A reconnect: the session speaks through ``connection`` from now on."""
        self._cancel_grace(session)
        session.connection = connection

    def detach(self, session: RoomSession) -> None:
        """The session's WebSocket dropped: hold its place for the grace period."""
        if session.left or session.resume_key not in self._by_key:
            return
        session.connection = None
        self._cancel_grace(session)
        session.grace_task = asyncio.get_running_loop().create_task(
            self._expire_after_grace(session), name=f"grace {session.grant.site_id}")

    def remove(self, session: RoomSession) -> None:
        """The session is over (left, removed, ended, expired)."""
        session.left = True
        self._by_key.pop(session.resume_key, None)
        if session.grace_task is not asyncio.current_task():
            self._cancel_grace(session)

    def _cancel_grace(self, session: RoomSession) -> None:
        if session.grace_task is not None:
            session.grace_task.cancel()
            session.grace_task = None

    async def _expire_after_grace(self, session: RoomSession) -> None:
        await asyncio.sleep(self.grace_seconds)
        log.info("site did not reconnect within the grace period",
                 extra={"site": session.grant.site_id, "room": session.grant.room_id})
        self.remove(session)
        session.grace_task = None
        try:
            await self.on_expired(session)
        except Exception:
            log.exception("leaving after the grace period failed", extra={"site": session.grant.site_id})

    async def stop(self) -> None:
        tasks = [s.grace_task for s in self._by_key.values() if s.grace_task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
