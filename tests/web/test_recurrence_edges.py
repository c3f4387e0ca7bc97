"""More edges of the RRULE subset: DST gaps and folds, BYDAY with INTERVAL, UNTIL parsing,
the occurrence cap, and the no-DST configured zone."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest
from dateutil import rrule as du

from web.recurrence import MAX_OCCURRENCES, Recurrence, RecurrenceError, expand, occurrence_starts

HCM = zoneinfo.ZoneInfo("Asia/Ho_Chi_Minh")
NEW_YORK = zoneinfo.ZoneInfo("America/New_York")
UTC = dt.timezone.utc


def local(starts: list[dt.datetime], tz: zoneinfo.ZoneInfo) -> list[str]:
    return [s.astimezone(tz).strftime("%Y-%m-%d %H:%M") for s in starts]


def test_ho_chi_minh_is_always_utc_plus_7() -> None:
    s = dt.datetime(2026, 1, 1, 8, 0, tzinfo=HCM)
    starts = occurrence_starts(s, Recurrence("MONTHLY", count=12), HCM)
    assert {x.hour for x in starts} == {1}
    assert all(x.tzinfo == UTC for x in starts)


def test_time_in_the_spring_gap_uses_the_offset_before_it() -> None:
    # RFC 5545 3.3.5: a local time that does not exist is read with the offset before the gap,
    # so 02:30 on 8 March 2026 (New York jumps 02:00 -> 03:00) is 07:30 UTC = 03:30 EDT.
    s = dt.datetime(2026, 3, 7, 2, 30, tzinfo=NEW_YORK)
    starts = occurrence_starts(s, Recurrence("DAILY", count=3), NEW_YORK)
    assert [x.strftime("%d %H:%M") for x in starts] == ["07 07:30", "08 07:30", "09 06:30"]


def test_ambiguous_time_in_the_autumn_fold_is_the_first_one() -> None:
    # 01:30 happens twice on 1 November 2026 in New York; RFC 5545 takes the first (EDT).
    s = dt.datetime(2026, 10, 31, 1, 30, tzinfo=NEW_YORK)
    starts = occurrence_starts(s, Recurrence("DAILY", count=3), NEW_YORK)
    assert [x.strftime("%d %H:%M") for x in starts] == ["31 05:30", "01 05:30", "02 06:30"]


def test_weekly_byday_with_interval() -> None:
    s = dt.datetime(2026, 11, 23, 8, 0, tzinfo=HCM)  # Monday
    rule = Recurrence("WEEKLY", interval=2, count=5, byday=("MO", "FR"))
    assert local(occurrence_starts(s, rule, HCM), HCM) == [
        "2026-11-23 08:00", "2026-11-27 08:00", "2026-12-07 08:00", "2026-12-11 08:00", "2026-12-21 08:00"]


def test_weekly_byday_not_including_the_start_day_starts_later() -> None:
    # As dateutil (and RFC 5545 for most clients) do: the first occurrence is the first match.
    s = dt.datetime(2026, 11, 24, 8, 0, tzinfo=HCM)  # Tuesday
    rule = Recurrence("WEEKLY", count=2, byday=("TH",))
    assert local(occurrence_starts(s, rule, HCM), HCM) == ["2026-11-26 08:00", "2026-12-03 08:00"]


def test_monthly_on_the_30th_skips_february_only() -> None:
    s = dt.datetime(2027, 1, 30, 9, 0, tzinfo=HCM)
    assert local(occurrence_starts(s, Recurrence("MONTHLY", count=3), HCM), HCM) == [
        "2027-01-30 09:00", "2027-03-30 09:00", "2027-04-30 09:00"]


def test_monthly_on_the_31st_until_excludes_months_without_one() -> None:
    s = dt.datetime(2026, 8, 31, 9, 0, tzinfo=HCM)
    rule = Recurrence("MONTHLY", until=dt.date(2027, 1, 31))
    assert local(occurrence_starts(s, rule, HCM), HCM) == [
        "2026-08-31 09:00", "2026-10-31 09:00", "2026-12-31 09:00", "2027-01-31 09:00"]


def test_matches_dateutil_on_the_rrule_text_it_writes() -> None:
    # What we write into the .ics must expand, in a client, to what the server expands.
    s = dt.datetime(2026, 11, 23, 14, 0, tzinfo=NEW_YORK)
    for rule in (Recurrence("WEEKLY", interval=2, until=dt.date(2027, 4, 30), byday=("MO", "WE")),
                 Recurrence("MONTHLY", count=7), Recurrence("DAILY", interval=3, until=dt.date(2027, 3, 20))):
        ours = occurrence_starts(s, rule, NEW_YORK)
        theirs = [x.astimezone(UTC) for x in du.rrulestr(rule.to_rrule(NEW_YORK), dtstart=s)]
        assert ours == theirs, rule


def test_until_before_start_gives_no_occurrence() -> None:
    s = dt.datetime(2026, 11, 24, 14, 0, tzinfo=HCM)
    assert occurrence_starts(s, Recurrence("DAILY", until=dt.date(2026, 11, 23)), HCM) == []


def test_until_on_the_start_day_gives_one() -> None:
    s = dt.datetime(2026, 11, 24, 23, 30, tzinfo=HCM)
    assert len(occurrence_starts(s, Recurrence("DAILY", until=dt.date(2026, 11, 24)), HCM)) == 1


def test_long_until_is_capped() -> None:
    s = dt.datetime(2026, 1, 1, 8, 0, tzinfo=HCM)
    assert len(occurrence_starts(s, Recurrence("DAILY", until=dt.date(2030, 1, 1)), HCM)) == MAX_OCCURRENCES


def test_single_meeting_has_one_occurrence() -> None:
    s = dt.datetime(2026, 11, 24, 14, 0, tzinfo=HCM)
    occ = expand(s, s + dt.timedelta(hours=2), None, HCM)
    assert [(o.start, o.end) for o in occ] == [(s.astimezone(UTC), (s + dt.timedelta(hours=2)).astimezone(UTC))]


def test_moved_occurrence_is_sorted_by_its_new_start() -> None:
    s = dt.datetime(2026, 11, 24, 14, 0, tzinfo=HCM).astimezone(UTC)
    day = dt.timedelta(days=1)
    occ = expand(s, s + dt.timedelta(hours=1), Recurrence("DAILY", count=3), HCM,
                 overrides={s: (s + 2 * day + dt.timedelta(hours=3), s + 2 * day + dt.timedelta(hours=4))})
    assert [o.original_start for o in occ] == [s + day, s + 2 * day, s]
    assert [o.overridden for o in occ] == [False, False, True]


def test_cancelling_every_occurrence_leaves_none() -> None:
    s = dt.datetime(2026, 11, 24, 14, 0, tzinfo=HCM)
    rule = Recurrence("DAILY", count=2)
    starts = set(occurrence_starts(s, rule, HCM))
    assert expand(s, s + dt.timedelta(hours=1), rule, HCM, cancelled=starts) == []


@pytest.mark.parametrize("text", [
    "FREQ=YEARLY;COUNT=2", "FREQ=DAILY", "FREQ=DAILY;COUNT=2;UNTIL=20261231", "FREQ=MONTHLY;COUNT=2;BYDAY=MO",
    "FREQ=WEEKLY;COUNT=2;BYDAY=XX", "FREQ=DAILY;COUNT=0", "FREQ=DAILY;COUNT=501", "FREQ=DAILY;INTERVAL=0;COUNT=2",
    "FREQ=DAILY;COUNT=two", "FREQ=DAILY;UNTIL=2026-12-31", "FREQ=DAILY;BYMONTHDAY=3;COUNT=2", "garbage",
])
def test_parse_refuses(text: str) -> None:
    with pytest.raises(RecurrenceError):
        Recurrence.parse(text, HCM)


@pytest.mark.parametrize("text, expected", [
    ("RRULE:FREQ=DAILY;COUNT=3", Recurrence("DAILY", count=3)),
    ("freq=weekly;byday=mo,we;count=4", Recurrence("WEEKLY", count=4, byday=("MO", "WE"))),
    ("FREQ=MONTHLY;INTERVAL=2;UNTIL=20270131", Recurrence("MONTHLY", interval=2, until=dt.date(2027, 1, 31))),
    # UNTIL in UTC is read back as the local day it falls on (+7 in Hồ Chí Minh City).
    ("FREQ=DAILY;UNTIL=20261231T170000Z", Recurrence("DAILY", until=dt.date(2027, 1, 1))),
])
def test_parse_accepts(text: str, expected: Recurrence) -> None:
    assert Recurrence.parse(text, HCM) == expected
