"""MeetingsRepo on a real SQLite file: what is written survives closing and reopening."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from lienthong.store import Store
from lienthong.store.web import Unit

UTC = dt.timezone.utc
START = dt.datetime(2026, 11, 24, 7, 0, tzinfo=UTC)
UNITS = [Unit("bo", None, "Bộ Dân tộc và Tôn giáo", "Ministry", "central"),
         Unit("so-a", "bo", "Sở A", "Dept A", "provincial"), Unit("so-b", "bo", "Sở B", "Dept B", "provincial")]


async def _store(path: Path) -> Store:
    store = Store(path)
    await store.open()
    return store


async def test_meeting_exceptions_and_links_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    store = await _store(path)
    try:
        await store.web.sync_units(UNITS, {u.id: "h" for u in UNITS})
        mid = await store.meetings.create(
            title="Giao ban tuần", agenda="Nội dung", start=START, end=START + dt.timedelta(hours=1),
            timezone="Asia/Ho_Chi_Minh", rrule="FREQ=WEEKLY;COUNT=3", chair_unit_id="bo",
            sites={"bo": "chair", "so-a": "site", "so-b": "observer"}, pin_hash="", created_by="quantri")
        week = dt.timedelta(days=7)
        await store.meetings.set_exception(mid, START + week, cancelled=True)
        await store.meetings.set_exception(mid, START + 2 * week, cancelled=False,
                                           start=START + 2 * week + dt.timedelta(hours=2),
                                           end=START + 2 * week + dt.timedelta(hours=3))
        await store.meetings.revoke_link(mid, "so-b")
        await store.meetings.reissue_link(mid, "so-a")
    finally:
        await store.close()

    store = await _store(path)
    try:
        m = await store.meetings.get(mid)
        assert m is not None
        assert (m.title, m.start, m.rrule, m.sequence, m.status) == (
            "Giao ban tuần", START, "FREQ=WEEKLY;COUNT=3", 2, "scheduled")
        assert m.sites == {"bo": "chair", "so-a": "site", "so-b": "observer"}
        assert m.cancelled_occurrences == {START + dt.timedelta(days=7)}
        assert m.overrides == {START + dt.timedelta(days=14): (START + dt.timedelta(days=14, hours=2),
                                                                  START + dt.timedelta(days=14, hours=3))}
        links = {l.unit_id: l for l in await store.meetings.links(mid)}
        assert (links["so-a"].generation, links["so-a"].revoked) == (2, False)
        assert (links["so-b"].generation, links["so-b"].revoked) == (1, True)
        assert links["bo"].role == "chair"
        # Cancelling the series bumps SEQUENCE again; the meeting stays, marked cancelled.
        await store.meetings.update(mid, status="cancelled")
        m = await store.meetings.get(mid)
        assert m is not None and (m.status, m.sequence) == ("cancelled", 3)
        assert [x.id for x in await store.meetings.all()] == [mid]
    finally:
        await store.close()
