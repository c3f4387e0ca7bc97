"""Sites keep their place across signalling reconnects for a grace period (web.room_sessions)."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from web.joins import JoinGrant
from web.room_sessions import RoomSession, RoomSessions

NOW = dt.datetime(2026, 11, 25, 8, 0, tzinfo=dt.UTC)


def grant(link: str = "L1", site: str = "S1") -> JoinGrant:
    return JoinGrant(link_id=link, meeting_id="M1", occurrence_start=NOW, meeting_title="Giao ban",
                     site_id=site, site_name="Sở Tư pháp", role="site",
                     opens_at=NOW - dt.timedelta(minutes=15), closes_at=NOW + dt.timedelta(hours=2))


class Conn:
    async def send_json(self, message: dict[str, Any]) -> None:
        pass


async def test_detached_session_expires_after_grace() -> None:
    expired: asyncio.Queue[RoomSession] = asyncio.Queue()
    sessions = RoomSessions(0.01, expired.put)
    s = RoomSession(grant(), participant=object())
    sessions.add(s, Conn())
    sessions.detach(s)
    assert s.detached
    assert await asyncio.wait_for(expired.get(), 5) is s
    assert s.left and sessions.find(s.resume_key) is None and len(sessions) == 0
    await sessions.stop()


async def test_reattach_within_grace_keeps_the_place() -> None:
    expired: list[RoomSession] = []

    async def on_expired(s: RoomSession) -> None:
        expired.append(s)

    sessions = RoomSessions(3600, on_expired)
    s = RoomSession(grant(), participant=object())
    sessions.add(s, Conn())
    sessions.detach(s)
    timer = s.grace_task
    assert timer is not None
    new = Conn()
    assert sessions.find(s.resume_key) is s
    sessions.attach(s, new)
    assert s.connection is new and s.grace_task is None
    await asyncio.gather(timer, return_exceptions=True)
    assert timer.cancelled() and not expired and not s.left
    await sessions.stop()


async def test_resume_keys_are_unguessable_and_distinct() -> None:
    keys = {RoomSession(grant(), participant=None).resume_key for _ in range(200)}
    assert len(keys) == 200 and all(len(k) >= 32 for k in keys)


async def test_for_link_finds_the_live_session_and_remove_forgets_it() -> None:
    sessions = RoomSessions(3600, lambda s: asyncio.sleep(0))
    a, b = RoomSession(grant("L1", "S1"), None), RoomSession(grant("L2", "S2"), None)
    sessions.add(a, Conn())
    sessions.add(b, Conn())
    assert sessions.for_link("L2") is b and sessions.for_link("L3") is None
    sessions.detach(b)
    sessions.remove(b)
    assert b.grace_task is None and sessions.for_link("L2") is None and sessions.find(None) is None
    sessions.detach(b)  # a removed session does not start a timer again
    assert b.grace_task is None
    await sessions.stop()


async def test_stop_cancels_every_grace_timer() -> None:
    sessions = RoomSessions(3600, lambda s: asyncio.sleep(0))
    ss = [RoomSession(grant(f"L{i}", f"S{i}"), None) for i in range(3)]
    for s in ss:
        sessions.add(s, Conn())
        sessions.detach(s)
    timers = [s.grace_task for s in ss]
    await sessions.stop()
    assert all(t is not None and t.done() for t in timers)
