"""The .ics download from a real server: organizer and attendees come from the units' contacts."""

from __future__ import annotations

import datetime as dt

import icalendar

from lienthong.store.web import now_utc
from tests.web.conftest import Running, api
from tests.web.meeting_helpers import admin_session, create_meeting, meeting_body


async def test_ics_names_the_chair_and_on_cancel_the_sites(running: Running) -> None:
    created = await create_meeting(running, meeting_body(now_utc() + dt.timedelta(days=1)))
    mid = created["id"]
    s = await admin_session(running)
    async with s:
        units = {}
        for uid in ("bo-dttg", "so-dttg-ha-noi", "so-dttg-lao-cai", "so-dttg-son-la"):
            status, unit = await api(s, "GET", f"/api/units/{uid}")
            assert status == 200
            units[uid] = unit.get("unit", unit)
        async with s.get(f"/meetings/{mid}.ics") as r:
            assert r.status == 200 and "attachment" in r.headers["Content-Disposition"]
            (ev,) = icalendar.Calendar.from_ical(await r.read()).walk("VEVENT")
        assert units["bo-dttg"]["emails"], "the demo chair has a contact address"
        assert str(ev["ORGANIZER"]) == "mailto:" + units["bo-dttg"]["emails"][0]
        assert "ATTENDEE" not in ev
        assert (await api(s, "DELETE", f"/api/meetings/{mid}"))[0] == 200
        async with s.get(f"/meetings/{mid}.ics") as r:
            cal = icalendar.Calendar.from_ical(await r.read())
        (ev,) = cal.walk("VEVENT")
        attendees = ev["ATTENDEE"] if isinstance(ev["ATTENDEE"], list) else [ev["ATTENDEE"]]
        assert cal["METHOD"] == "CANCEL" and sorted(str(a) for a in attendees) == sorted(
            "mailto:" + units[u]["emails"][0] for u in ("so-dttg-ha-noi", "so-dttg-lao-cai", "so-dttg-son-la"))
