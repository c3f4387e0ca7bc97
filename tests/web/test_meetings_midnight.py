"""Meetings that cross midnight, through the real server: API, form, lists, calendar (both
days), .ics, join page and join window; and the readable vi/en errors on their times."""

from __future__ import annotations

import datetime as dt
import re

import icalendar

from lienthong.store.web import now_utc
from tests.web.conftest import Running, api, csrf_of
from tests.web.meeting_helpers import HCM, admin_session, create_meeting, link_of, meeting_body
from web import keys
from web.i18n import format_datetime


def next_monday() -> dt.date:
    today = now_utc().astimezone(HCM).date()
    return today + dt.timedelta(days=7 - today.weekday())


def cells(html: str) -> dict[str, str]:
    """The calendar's day cells: date -> their HTML."""
    return dict(re.findall(r'data-date="([0-9-]+)">(.*?)</td>', html, re.S))


async def test_a_daily_meeting_from_22_00_to_01_30(running: Running) -> None:
    monday = next_monday()
    start = dt.datetime.combine(monday, dt.time(22, 0), HCM)
    created = await create_meeting(running, {**meeting_body(start, minutes=210, title="Họp trực ban đêm"),
                                             "recurrence": {"freq": "DAILY", "count": 3}})
    mid = created["id"]
    day = [str(monday + dt.timedelta(days=i)) for i in range(4)]
    assert (created["start"], created["end"]) == (f"{day[0]}T22:00", f"{day[1]}T01:30")
    assert [(o["start"], o["end"]) for o in created["occurrences"]] == [
        (f"{day[i]}T22:00", f"{day[i + 1]}T01:30") for i in range(3)]
    s = await admin_session(running)
    async with s:
        # The API calendar of Tuesday alone: Monday's occurrence running on, Tuesday's starting.
        status, cal = await api(s, "GET", f"/api/calendar?start={day[1]}&end={day[2]}")
        assert status == 200
        assert [(o["start"], o["days"]) for o in cal["occurrences"]] == [
            (f"{day[0]}T22:00", [day[0], day[1]]), (f"{day[1]}T22:00", [day[1], day[2]])]
        status, cal = await api(s, "GET", f"/api/calendar?start={day[1]}&end={day[2]}&unit=so-dttg-hue")
        assert (status, cal["occurrences"]) == (200, [])
        status, cal = await api(s, "GET", f"/api/calendar?start={day[1]}&end={day[2]}&unit=so-dttg-lao-cai")
        assert len(cal["occurrences"]) == 2
        # Week and month views: the event appears on each day it takes place.
        for view in ("week", "month"):
            async with s.get(f"/calendar?view={view}&date={day[0]}") as r:
                assert r.status == 200
                by_date = cells(await r.text())
            assert "22:00 Họp trực ban đêm" in by_date[day[0]] and "đến 01:30" not in by_date[day[0]]
            for d in day[1:3]:
                assert "đến 01:30 Họp trực ban đêm" in by_date[d] and "22:00 Họp trực ban đêm" in by_date[d]
            assert "đến 01:30 Họp trực ban đêm" in by_date[day[3]] and "22:00 Họp" not in by_date[day[3]]
            assert "Họp trực ban đêm" not in by_date.get(str(monday + dt.timedelta(days=4)), "")
        async with s.get(f"/calendar?view=week&date={day[0]}&unit=so-dttg-hue") as r:
            html = await r.text()
        assert r.status == 200 and "&amp;unit=so-dttg-hue" in html  # the filter kept on prev/next
        assert "Họp trực ban đêm" not in html
        # Lists and the detail page give the end with its own date.
        first = dt.datetime.combine(monday, dt.time(22, 0))
        shown = f"{format_datetime(first, 'vi')} – {format_datetime(first + dt.timedelta(hours=3, minutes=30), 'vi')}"
        assert shown.endswith(", 01:30") and "Thứ Hai" in shown and "Thứ Ba" in shown
        for page in ("/meetings", f"/meetings/{mid}"):
            async with s.get(page) as r:
                assert shown in await r.text(), page
        async with s.get(f"/meetings/{mid}?lang=en") as r:
            assert f"{format_datetime(first, 'en')} – {format_datetime(first + dt.timedelta(hours=3.5), 'en')}" \
                in await r.text()
        # The .ics: DTSTART and DTEND on consecutive days, in the zone, with the rule.
        async with s.get(f"/meetings/{mid}.ics") as r:
            (ev,) = icalendar.Calendar.from_ical(await r.read()).walk("VEVENT")
        dtstart, dtend = ev.decoded("DTSTART"), ev.decoded("DTEND")
        assert (str(dtstart.tzinfo), dtstart.replace(tzinfo=None)) == ("Asia/Ho_Chi_Minh", first)
        assert dtend.replace(tzinfo=None) == first + dt.timedelta(hours=3, minutes=30)
        assert ev["RRULE"]["COUNT"] == [3]
    # The join page (not open yet) shows the range; after midnight the link grants the
    # occurrence that began the evening before.
    url = link_of(created, "so-dttg-lao-cai")
    async with running.client() as site:
        async with site.get(url[url.index("/j/"):]) as r:
            html = await r.text()
        assert 'id="not-open"' in html and shown in html
    assert running.server.web is not None and running.server.web.runner is not None
    resolver = running.server.web.runner.app[keys.JOIN_RESOLVER]
    grant = await resolver.resolve(url.rsplit("/j/", 1)[1],
                                   now=dt.datetime.combine(monday + dt.timedelta(days=1), dt.time(1, 0), HCM))
    assert grant.occurrence_start == start.astimezone(dt.UTC)
    assert grant.closes_at == start + dt.timedelta(hours=3, minutes=30, seconds=60 * 30)


async def test_form_takes_an_end_date_and_errors_read_well(running: Running) -> None:
    day = next_monday()
    nxt = day + dt.timedelta(days=1)
    s = await admin_session(running)
    async with s:
        form = [("csrf_token", csrf_of(s)), ("title", "Hội nghị tổng kết"), ("agenda", ""), ("start_date", str(day)),
                ("start_time", "23:00"), ("end_date", str(nxt)), ("end_time", "02:00"), ("chair", "bo-dttg"),
                ("sites", "so-dttg-hue"), ("freq", ""), ("pin", "")]
        async with s.post("/meetings", data=form, allow_redirects=False) as r:
            assert r.status == 303, await r.text()
            mid = r.headers["Location"].rsplit("/", 1)[1]
        status, m = await api(s, "GET", f"/api/meetings/{mid}")
        assert (m["start"], m["end"]) == (f"{day}T23:00", f"{nxt}T02:00")
        async with s.get(f"/meetings/{mid}/edit") as r:
            html = await r.text()
        assert f'name="end_date" id="end-date" value="{nxt}"' in html and 'value="02:00"' in html
        # 27 hours: refused, in Vietnamese by default and in English on request; what was
        # typed is shown again.
        too_long = [(k, str(day + dt.timedelta(days=2)) if k == "end_date" else v) for k, v in form]
        async with s.post(f"/meetings/{mid}/edit", data=too_long) as r:
            html = await r.text()
            assert r.status == 400 and "Cuộc họp kéo dài tối đa 24 giờ" in html
            assert f'value="{day + dt.timedelta(days=2)}"' in html
        async with s.post(f"/meetings/{mid}/edit?lang=en", data=too_long) as r:
            assert r.status == 400 and "A meeting lasts 24 hours at most" in await r.text()
        backwards = [(k, str(day) if k == "end_date" else v) for k, v in form]
        async with s.post("/meetings?lang=en", data=backwards) as r:
            assert r.status == 400 and "The end must be after the start." in await r.text()
        status, err = await api(s, "PATCH", f"/api/meetings/{mid}?lang=en", json={"end": f"{nxt}T23:30"})
        assert status == 400 and err["error"] == {"code": "bad_meeting",
                                                  "message": "A meeting lasts 24 hours at most; check the end date and time."}
        # The older single-date form still works (same day).
        legacy = [(k, v) for k, v in form if k not in ("start_date", "end_date")] + [("date", str(day))]
        legacy = [(k, "23:30" if k == "end_time" else v) for k, v in legacy]
        async with s.post("/meetings", data=legacy, allow_redirects=False) as r:
            assert r.status == 303
        # One occurrence of a series moved across midnight from the detail page's form.
        created = await create_meeting(running, meeting_body(dt.datetime.combine(day, dt.time(9, 0), HCM),
                                                             recurrence={"freq": "WEEKLY", "count": 2}))
        occ = created["occurrences"][1]["id"]
        week2 = day + dt.timedelta(days=7)
        move = {"csrf_token": csrf_of(s), "occurrence": occ, "start_date": str(week2), "start_time": "21:00",
                "end_date": str(week2 + dt.timedelta(days=1)), "end_time": "00:30"}
        async with s.post(f"/meetings/{created['id']}/move", data=move, allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"].endswith("flash=moved")
        status, m = await api(s, "GET", f"/api/meetings/{created['id']}")
        assert m["occurrences"][1] == {"id": occ, "start": f"{week2}T21:00",
                                       "end": f"{week2 + dt.timedelta(days=1)}T00:30", "moved": True}
        move["end_date"] = str(week2 + dt.timedelta(days=2))
        async with s.post(f"/meetings/{created['id']}/move", data=move, allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"].endswith("flash=bad_move")


async def test_until_series_with_too_many_occurrences_is_refused(running: Running) -> None:
    s = await admin_session(running)
    async with s:
        body = meeting_body(now_utc() + dt.timedelta(days=1), recurrence={"freq": "DAILY", "until": "2030-12-31"})
        status, err = await api(s, "POST", "/api/meetings", json=body)
        assert status == 400 and "tối đa 500" in err["error"]["message"]


def test_days_touched_and_ranges_as_written() -> None:
    from web.i18n import Translator
    from web.meetings import days_touched
    from web.recurrence import Occurrence

    def occ(s: dt.datetime, e: dt.datetime) -> Occurrence:
        return Occurrence(s, s.astimezone(dt.UTC), e.astimezone(dt.UTC))

    eve = dt.datetime(2026, 11, 23, 22, 0, tzinfo=HCM)
    midnight = dt.datetime(2026, 11, 24, 0, 0, tzinfo=HCM)
    assert days_touched(occ(eve, midnight), HCM) == [dt.date(2026, 11, 23)]  # ends at midnight: one day
    assert days_touched(occ(eve, midnight + dt.timedelta(minutes=1)), HCM) == [dt.date(2026, 11, 23),
                                                                               dt.date(2026, 11, 24)]
    assert days_touched(occ(eve - dt.timedelta(hours=21), eve + dt.timedelta(hours=1)), HCM) == [
        dt.date(2026, 11, 23)]
    vi, en = Translator("vi", "Asia/Ho_Chi_Minh"), Translator("en", "Asia/Ho_Chi_Minh")
    assert vi.fmt_range(eve - dt.timedelta(hours=8), eve) == "Thứ Hai, 23/11/2026, 14:00 – 22:00"
    assert vi.fmt_range(eve, midnight + dt.timedelta(hours=1, minutes=30)) == \
        "Thứ Hai, 23/11/2026, 22:00 – Thứ Ba, 24/11/2026, 01:30"
    assert en.fmt_range(eve, midnight + dt.timedelta(hours=1, minutes=30)) == \
        "Monday, 23 November 2026, 22:00 – Tuesday, 24 November 2026, 01:30"
