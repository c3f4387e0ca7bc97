"""Meetings through the real API and pages."""

from __future__ import annotations

import datetime as dt

import icalendar

from lienthong.store.web import now_utc
from tests.web.conftest import Running, api, login
from tests.web.meeting_helpers import HCM, admin_session, create_meeting, local, meeting_body


async def test_create_lists_links_and_audits(running: Running) -> None:
    start = now_utc() + dt.timedelta(days=2)
    created = await create_meeting(running, meeting_body(start, pin="2468"))
    assert created["pin"] is True
    roles = {l["site"]: l["role"] for l in created["links"]}
    assert roles == {"bo-dttg": "chair", "so-dttg-ha-noi": "site", "so-dttg-lao-cai": "site", "so-dttg-son-la": "site"}
    assert all("/j/" in l["url"] for l in created["links"])
    s = await admin_session(running)
    async with s:
        status, listing = await api(s, "GET", "/api/meetings?when=upcoming")
        assert [m["id"] for m in listing["meetings"]] == [created["id"]]
        status, listing = await api(s, "GET", "/api/meetings?when=past")
        assert listing["meetings"] == []
        status, listing = await api(s, "GET", "/api/meetings?when=upcoming&unit=so-dttg-hue")
        assert listing["meetings"] == []
        status, listing = await api(s, "GET", "/api/meetings?when=upcoming&unit=so-dttg-lao-cai")
        assert len(listing["meetings"]) == 1
        status, log = await api(s, "GET", "/api/audit")
        assert any(e["action"] == "meeting.create" and e["object"] == f"meeting:{created['id']}" for e in log["entries"])


async def test_shortcuts_all_provincial_and_children_of(running: Running) -> None:
    start = now_utc() + dt.timedelta(days=1)
    created = await create_meeting(running, meeting_body(start, sites=[], all_provincial=True))
    assert len([s for s in created["sites"] if s["role"] == "site"]) == 34
    created = await create_meeting(running, meeting_body(start, sites=[], children_of=["so-dttg-lao-cai"]))
    assert {s["unit"] for s in created["sites"]} == {"bo-dttg", "xa-bac-ha-lao-cai", "xa-muong-khuong-lao-cai",
                                                     "phuong-sa-pa-lao-cai"}


async def test_validation_errors_are_readable(running: Running) -> None:
    start = now_utc() + dt.timedelta(days=1)
    s = await admin_session(running)
    async with s:
        cases = [
            (meeting_body(start, minutes=-30), "kết thúc phải sau thời gian bắt đầu"),
            (meeting_body(start, minutes=24 * 60 + 1), "tối đa 24 giờ"),
            (meeting_body(start, chair="nowhere"), "chair"),
            (meeting_body(start, sites=["ghost"]), "ghost"),
            (meeting_body(start, sites=[]), "at least one site"),
            (meeting_body(start, pin="12"), "pin"),
            (meeting_body(start, recurrence={"freq": "WEEKLY"}), "COUNT or UNTIL"),
            (meeting_body(start, recurrence={"freq": "HOURLY", "count": 3}), "FREQ"),
            ({**meeting_body(start), "colour": "red"}, "colour"),
            ({**meeting_body(start), "start": "next tuesday"}, "start"),
        ]
        for body, expected in cases:
            status, err = await api(s, "POST", "/api/meetings", json=body)
            assert status == 400 and expected in err["error"]["message"], (body, err)
        status, listing = await api(s, "GET", "/api/meetings?when=all")
        assert listing["meetings"] == []


async def test_edit_series_bumps_sequence_and_ics_follows(running: Running) -> None:
    start = dt.datetime.combine(now_utc().astimezone(HCM).date() + dt.timedelta(days=3), dt.time(14, 0), HCM)
    created = await create_meeting(running, meeting_body(start, recurrence={"freq": "WEEKLY", "count": 4}))
    mid = created["id"]
    s = await admin_session(running)
    async with s:
        async with s.get(f"/meetings/{mid}.ics") as r:
            assert r.status == 200 and r.content_type == "text/calendar"
            cal = icalendar.Calendar.from_ical(await r.read())
        (ev,) = cal.walk("VEVENT")
        uid, seq = str(ev["UID"]), int(ev["SEQUENCE"])
        assert ev["RRULE"]["COUNT"] == [4]
        status, m = await api(s, "PATCH", f"/api/meetings/{mid}", json={"title": "Giao ban tuần (đổi tên)"})
        assert status == 200 and m["sequence"] == seq + 1
        # Move the third occurrence, cancel the second.
        occ = [o["id"] for o in m["occurrences"]]
        third_start = dt.datetime.fromisoformat(m["occurrences"][2]["start"]).replace(tzinfo=HCM) + dt.timedelta(hours=2)
        status, m = await api(s, "PATCH", f"/api/meetings/{mid}?occurrence={occ[2]}",
                              json={"start": local(third_start), "end": local(third_start + dt.timedelta(hours=1))})
        assert status == 200 and m["occurrences"][2]["moved"] is True
        status, m = await api(s, "DELETE", f"/api/meetings/{mid}?occurrence={occ[1]}")
        assert status == 200 and len(m["occurrences"]) == 3 and m["cancelled_occurrences"] == [occ[1]]
        status, _ = await api(s, "DELETE", f"/api/meetings/{mid}?occurrence=2020-01-01T00:00:00Z")
        assert status == 404
        async with s.get(f"/meetings/{mid}.ics") as r:
            cal = icalendar.Calendar.from_ical(await r.read())
        events = cal.walk("VEVENT")
        assert {str(e["UID"]) for e in events} == {uid}
        main = next(e for e in events if "RECURRENCE-ID" not in e)
        assert str(main["SUMMARY"]) == "Giao ban tuần (đổi tên)" and int(main["SEQUENCE"]) == seq + 3
        assert len(main["EXDATE"].dts) == 1
        assert any("RECURRENCE-ID" in e for e in events)
        # Cancel the series: METHOD:CANCEL.
        status, m = await api(s, "DELETE", f"/api/meetings/{mid}")
        assert status == 200 and m["status"] == "cancelled"
        async with s.get(f"/meetings/{mid}.ics") as r:
            cal = icalendar.Calendar.from_ical(await r.read())
        assert cal["METHOD"] == "CANCEL"


async def test_calendar_api_and_pages(running: Running) -> None:
    day = now_utc().astimezone(HCM).date() + dt.timedelta(days=1)
    start = dt.datetime.combine(day, dt.time(9, 30), HCM)
    created = await create_meeting(running, meeting_body(start, recurrence={"freq": "DAILY", "count": 3}))
    s = await admin_session(running)
    async with s:
        status, cal = await api(s, "GET", f"/api/calendar?start={day}&end={day + dt.timedelta(days=7)}")
        assert [o["start"] for o in cal["occurrences"]] == [local(start + dt.timedelta(days=i)) for i in range(3)]
        status, _ = await api(s, "GET", "/api/calendar?start=x&end=y")
        assert status == 400
        for view in ("week", "month"):
            async with s.get(f"/calendar?view={view}&date={day}") as r:
                html = await r.text()
                assert r.status == 200 and f'href="/meetings/{created["id"]}"' in html and "09:30" in html
        async with s.get("/meetings") as r:
            html = await r.text()
            assert "Họp giao ban công tác dân tộc" in html and "Định kỳ" in html
        async with s.get(f"/meetings/{created['id']}") as r:
            html = await r.text()
            assert html.count('class="joinlink"') == 4 and "Sở Dân tộc và Tôn giáo tỉnh Lào Cai" in html


async def test_form_create_and_edit(running: Running) -> None:
    from tests.web.conftest import csrf_of

    s = await admin_session(running)
    day = (now_utc().astimezone(HCM) + dt.timedelta(days=5)).date()
    async with s:
        form = [("csrf_token", csrf_of(s)), ("title", "Hội nghị trực tuyến"), ("agenda", ""), ("start_date", str(day)),
                ("start_time", "08:00"), ("end_date", str(day)), ("end_time", "10:00"), ("chair", "bo-dttg"), ("sites", "so-dttg-hue"),
                ("sites", "vpcp"), ("freq", "WEEKLY"), ("interval", "1"), ("byday", "MO"), ("byday", "WE"),
                ("end_kind", "until"), ("until", str(day + dt.timedelta(days=30))), ("pin", "")]
        async with s.post("/meetings", data=form, allow_redirects=False) as r:
            assert r.status == 303, await r.text()
            mid = r.headers["Location"].rsplit("/", 1)[1]
        status, m = await api(s, "GET", f"/api/meetings/{mid}")
        assert "BYDAY=MO,WE" in m["rrule"] and "UNTIL=" in m["rrule"]
        bad = [(k, v if k != "end_time" else "07:00") for k, v in form]
        async with s.post(f"/meetings/{mid}/edit", data=bad) as r:
            assert r.status == 400 and "Thời gian kết thúc phải sau thời gian bắt đầu." in await r.text()
        async with s.get(f"/meetings/{mid}/edit") as r:
            assert 'value="Hội nghị trực tuyến"' in await r.text()


async def test_unit_admin_and_viewer_permissions(running: Running) -> None:
    start = now_utc() + dt.timedelta(days=1)
    central = await create_meeting(running, meeting_body(start))
    await running.add_account("laocai", "unit_admin", "so-dttg-lao-cai")
    await running.add_account("xem", "viewer")
    async with running.client() as s:
        await login(s, "laocai")
        status, _ = await api(s, "POST", "/api/meetings", json=meeting_body(start))  # chair: the ministry
        assert status == 403
        status, own = await api(s, "POST", "/api/meetings",
                                json=meeting_body(start, chair="so-dttg-lao-cai", sites=[], children_of=["so-dttg-lao-cai"]))
        assert status == 201
        status, _ = await api(s, "PATCH", f"/api/meetings/{central['id']}", json={"title": "x"})
        assert status == 403
        status, got = await api(s, "GET", f"/api/meetings/{central['id']}")
        assert status == 200 and "links" not in got  # can read, cannot see other units' links
        status, _ = await api(s, "POST", f"/api/meetings/{own['id']}/links/xa-bac-ha-lao-cai/revoke")
        assert status == 200
    async with running.client() as s:
        await login(s, "xem")
        status, _ = await api(s, "POST", "/api/meetings", json=meeting_body(start))
        assert status == 403
        status, _ = await api(s, "GET", "/api/meetings")
        assert status == 200
