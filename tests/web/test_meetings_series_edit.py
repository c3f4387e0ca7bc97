"""Editing a series keeps its exceptions attached to the right occurrences (real server)."""

from __future__ import annotations

import datetime as dt

from lienthong.store.web import now_utc
from tests.web.conftest import Running, api
from tests.web.meeting_helpers import HCM, admin_session, create_meeting, local, meeting_body


async def test_cancelled_and_moved_occurrences_follow_a_series_time_change(running: Running) -> None:
    start = dt.datetime.combine(now_utc().astimezone(HCM).date() + dt.timedelta(days=2), dt.time(14, 0), HCM)
    created = await create_meeting(running, meeting_body(start, recurrence={"freq": "DAILY", "count": 4}))
    mid = created["id"]
    s = await admin_session(running)
    async with s:
        occ = [o["id"] for o in created["occurrences"]]
        status, m = await api(s, "DELETE", f"/api/meetings/{mid}?occurrence={occ[1]}")
        assert status == 200
        moved = start + dt.timedelta(days=2, hours=3)  # the third: 17:00 instead of 14:00
        status, m = await api(s, "PATCH", f"/api/meetings/{mid}?occurrence={occ[2]}",
                              json={"start": local(moved), "end": local(moved + dt.timedelta(hours=1))})
        assert status == 200
        # The whole series moves to 15:00: the second stays cancelled, the third stays at 17:00.
        later = start + dt.timedelta(hours=1)
        status, m = await api(s, "PATCH", f"/api/meetings/{mid}",
                              json={"start": local(later), "end": local(later + dt.timedelta(hours=2))})
        assert status == 200, m
        assert [(o["start"][11:], o["moved"]) for o in m["occurrences"]] == [
            ("15:00", False), ("17:00", True), ("15:00", False)]
        days = [o["start"][:10] for o in m["occurrences"]]
        assert days == [f"{start + dt.timedelta(days=d):%Y-%m-%d}" for d in (0, 2, 3)]
        assert m["cancelled_occurrences"] == [(start + dt.timedelta(days=1, hours=1)).astimezone(dt.UTC)
                                              .strftime("%Y-%m-%dT%H:%M:%SZ")]
        # A new rule: the old exceptions mean nothing any more and are dropped.
        status, m = await api(s, "PATCH", f"/api/meetings/{mid}", json={"recurrence": {"freq": "WEEKLY", "count": 3}})
        assert status == 200
        assert m["cancelled_occurrences"] == [] and not any(o["moved"] for o in m["occurrences"])
        assert [o["start"][11:] for o in m["occurrences"]] == ["15:00"] * 3


async def test_title_edit_keeps_exceptions(running: Running) -> None:
    start = now_utc() + dt.timedelta(days=1)
    created = await create_meeting(running, meeting_body(start, recurrence={"freq": "WEEKLY", "count": 3}))
    mid, occ = created["id"], [o["id"] for o in created["occurrences"]]
    s = await admin_session(running)
    async with s:
        assert (await api(s, "DELETE", f"/api/meetings/{mid}?occurrence={occ[2]}"))[0] == 200
        status, m = await api(s, "PATCH", f"/api/meetings/{mid}", json={"title": "Giao ban tháng"})
        assert status == 200 and m["cancelled_occurrences"] == [occ[2]] and len(m["occurrences"]) == 2
