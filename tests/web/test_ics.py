from __future__ import annotations

import datetime as dt
import zoneinfo

import icalendar

from web.ics import IcsMeeting, meeting_ics

HCM = zoneinfo.ZoneInfo("Asia/Ho_Chi_Minh")
START = dt.datetime(2026, 11, 24, 14, 0, tzinfo=HCM)


def parse(data: bytes) -> icalendar.Calendar:
    return icalendar.Calendar.from_ical(data)


def test_single_meeting_round_trip() -> None:
    cal = parse(meeting_ics(IcsMeeting("m1@lienthong", "Họp giao ban tháng 11", "Nội dung: tổng kết", START,
                                       START + dt.timedelta(hours=2), HCM, 0, False, location="Bộ Dân tộc và Tôn giáo")))
    assert cal["METHOD"] == "PUBLISH"
    (ev,) = cal.walk("VEVENT")
    assert str(ev["UID"]) == "m1@lienthong" and str(ev["SUMMARY"]) == "Họp giao ban tháng 11"
    assert ev.decoded("DTSTART") == START and ev.decoded("DTSTART").tzinfo is not None
    assert ev["DTSTART"].params["TZID"] == "Asia/Ho_Chi_Minh"
    assert int(ev["SEQUENCE"]) == 0 and str(ev["STATUS"]) == "CONFIRMED"
    assert cal.walk("VTIMEZONE"), "the zone is described"


def test_series_with_exdate_and_moved_occurrence() -> None:
    second = (START + dt.timedelta(days=7)).astimezone(dt.timezone.utc)
    third = (START + dt.timedelta(days=14)).astimezone(dt.timezone.utc)
    moved = third + dt.timedelta(hours=1)
    data = meeting_ics(IcsMeeting("s1@lienthong", "Giao ban tuần", "", START, START + dt.timedelta(hours=1), HCM, 3,
                                  False, rrule="FREQ=WEEKLY;COUNT=4", exdates=[second],
                                  overrides=[(third, moved, moved + dt.timedelta(hours=1))]))
    cal = parse(data)
    events = cal.walk("VEVENT")
    assert len(events) == 2
    main = next(e for e in events if "RECURRENCE-ID" not in e)
    assert main["RRULE"]["FREQ"] == ["WEEKLY"] and main["RRULE"]["COUNT"] == [4]
    exdates = [d.dt for d in main["EXDATE"].dts]
    assert [d.astimezone(dt.timezone.utc) for d in exdates] == [second]
    override = next(e for e in events if "RECURRENCE-ID" in e)
    assert override.decoded("RECURRENCE-ID").astimezone(dt.timezone.utc) == third
    assert override.decoded("DTSTART").astimezone(dt.timezone.utc) == moved
    assert all(str(e["UID"]) == "s1@lienthong" and int(e["SEQUENCE"]) == 3 for e in events)


def test_cancelled_meeting_uses_method_cancel() -> None:
    cal = parse(meeting_ics(IcsMeeting("m1@lienthong", "X", "", START, START + dt.timedelta(hours=1), HCM, 5, True)))
    assert cal["METHOD"] == "CANCEL"
    (ev,) = cal.walk("VEVENT")
    assert str(ev["STATUS"]) == "CANCELLED" and int(ev["SEQUENCE"]) == 5
