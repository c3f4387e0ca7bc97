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


def test_organizer_always_attendees_only_when_cancelling() -> None:
    kw = dict(organizer=("Bộ Dân tộc và Tôn giáo", "vanphong@bdttg.gov.vn"),
              attendees=[("Sở Dân tộc và Tôn giáo tỉnh Lào Cai", "sdttg@laocai.gov.vn")])
    published = parse(meeting_ics(IcsMeeting("m1@lienthong", "X", "", START, START + dt.timedelta(hours=1), HCM, 1,
                                             False, **kw)))  # type: ignore[arg-type]
    (ev,) = published.walk("VEVENT")
    assert str(ev["ORGANIZER"]) == "mailto:vanphong@bdttg.gov.vn"
    assert ev["ORGANIZER"].params["CN"] == "Bộ Dân tộc và Tôn giáo"
    assert "ATTENDEE" not in ev  # RFC 5546 PUBLISH
    cancelled = parse(meeting_ics(IcsMeeting("m1@lienthong", "X", "", START, START + dt.timedelta(hours=1), HCM, 2,
                                             True, **kw)))  # type: ignore[arg-type]
    (ev,) = cancelled.walk("VEVENT")
    assert str(ev["ATTENDEE"]) == "mailto:sdttg@laocai.gov.vn"
    assert ev["ATTENDEE"].params["CN"] == "Sở Dân tộc và Tôn giáo tỉnh Lào Cai"


def test_times_in_a_dst_zone_keep_their_tzid_and_wall_clock() -> None:
    berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    start = dt.datetime(2026, 3, 27, 14, 0, tzinfo=berlin)
    cal = parse(meeting_ics(IcsMeeting("b@lienthong", "X", "", start, start + dt.timedelta(hours=1), berlin, 0,
                                       False, rrule="FREQ=DAILY;COUNT=4")))
    (ev,) = cal.walk("VEVENT")
    assert ev["DTSTART"].params["TZID"] == "Europe/Berlin" and ev.decoded("DTSTART").hour == 14
    tz = cal.walk("VTIMEZONE")[0]
    assert str(tz["TZID"]) == "Europe/Berlin" and tz.walk("DAYLIGHT"), "the DST rules are described"


def test_uid_is_stable_and_output_is_deterministic() -> None:
    m = IcsMeeting("m1@lienthong", "Giao ban", "", START, START + dt.timedelta(hours=1), HCM, 4, False,
                   updated=dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc))
    assert meeting_ics(m) == meeting_ics(m)
    (ev,) = parse(meeting_ics(m)).walk("VEVENT")
    assert ev.decoded("DTSTAMP") == dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
