from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest

from web.recurrence import Recurrence, RecurrenceError, expand, occurrence_starts

HCM = zoneinfo.ZoneInfo("Asia/Ho_Chi_Minh")
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


def local_days(starts: list[dt.datetime], tz: zoneinfo.ZoneInfo) -> list[str]:
    return [s.astimezone(tz).strftime("%Y-%m-%d %H:%M") for s in starts]


def test_daily_count() -> None:
    s = dt.datetime(2026, 11, 24, 14, 0, tzinfo=HCM)
    assert local_days(occurrence_starts(s, Recurrence("DAILY", count=3), HCM), HCM) == [
        "2026-11-24 14:00", "2026-11-25 14:00", "2026-11-26 14:00"]


def test_weekly_byday_until_inclusive() -> None:
    s = dt.datetime(2026, 11, 23, 8, 0, tzinfo=HCM)  # a Monday
    rule = Recurrence("WEEKLY", until=dt.date(2026, 12, 3), byday=("MO", "TH"))
    assert local_days(occurrence_starts(s, rule, HCM), HCM) == [
        "2026-11-23 08:00", "2026-11-26 08:00", "2026-11-30 08:00", "2026-12-03 08:00"]


def test_every_second_week() -> None:
    s = dt.datetime(2026, 1, 5, 9, 0, tzinfo=HCM)
    starts = occurrence_starts(s, Recurrence("WEEKLY", interval=2, count=3), HCM)
    assert local_days(starts, HCM) == ["2026-01-05 09:00", "2026-01-19 09:00", "2026-02-02 09:00"]


def test_monthly_on_31st_skips_short_months() -> None:
    s = dt.datetime(2026, 1, 31, 14, 0, tzinfo=HCM)
    starts = occurrence_starts(s, Recurrence("MONTHLY", count=4), HCM)
    assert local_days(starts, HCM) == ["2026-01-31 14:00", "2026-03-31 14:00", "2026-05-31 14:00", "2026-07-31 14:00"]


def test_monthly_until_across_year_end_and_leap_day() -> None:
    s = dt.datetime(2027, 11, 29, 14, 0, tzinfo=HCM)
    starts = occurrence_starts(s, Recurrence("MONTHLY", until=dt.date(2028, 3, 31)), HCM)
    assert local_days(starts, HCM) == ["2027-11-29 14:00", "2027-12-29 14:00", "2028-01-29 14:00",
                                       "2028-02-29 14:00", "2028-03-29 14:00"]


def test_wall_clock_kept_across_dst() -> None:
    s = dt.datetime(2026, 3, 27, 14, 0, tzinfo=BERLIN)  # DST starts 29 March
    starts = occurrence_starts(s, Recurrence("DAILY", count=4), BERLIN)
    assert local_days(starts, BERLIN) == ["2026-03-27 14:00", "2026-03-28 14:00", "2026-03-29 14:00", "2026-03-30 14:00"]
    assert [s.hour for s in starts] == [13, 13, 12, 12]  # UTC hours shift by one


def test_until_is_end_of_local_day_in_utc() -> None:
    rule = Recurrence("DAILY", until=dt.date(2026, 12, 31))
    assert rule.to_rrule(HCM) == "FREQ=DAILY;UNTIL=20261231T165959Z"
    assert Recurrence.parse(rule.to_rrule(HCM), HCM) == rule


@pytest.mark.parametrize("kwargs, message", [
    ({"freq": "YEARLY", "count": 2}, "FREQ"),
    ({"freq": "DAILY"}, "exactly one of COUNT or UNTIL"),
    ({"freq": "DAILY", "count": 2, "until": dt.date(2027, 1, 1)}, "exactly one"),
    ({"freq": "DAILY", "count": 0}, "COUNT"),
    ({"freq": "DAILY", "count": 2, "byday": ("MO",)}, "BYDAY"),
    ({"freq": "WEEKLY", "count": 2, "byday": ("XX",)}, "BYDAY"),
    ({"freq": "DAILY", "count": 2, "interval": 0}, "INTERVAL"),
])
def test_invalid_rules(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(RecurrenceError, match=message):
        Recurrence(**kwargs)  # type: ignore[arg-type]


def test_parse_rejects_unsupported_parts() -> None:
    with pytest.raises(RecurrenceError, match="BYSETPOS"):
        Recurrence.parse("FREQ=MONTHLY;COUNT=3;BYSETPOS=-1", HCM)


def test_expand_applies_cancellations_and_moves() -> None:
    s = dt.datetime(2026, 11, 24, 14, 0, tzinfo=HCM)
    e = s + dt.timedelta(hours=2)
    starts = occurrence_starts(s, Recurrence("DAILY", count=3), HCM)
    moved_to = starts[2] + dt.timedelta(hours=1)
    occ = expand(s, e, Recurrence("DAILY", count=3), HCM, cancelled={starts[1]},
                 overrides={starts[2]: (moved_to, moved_to + dt.timedelta(minutes=30))})
    assert [o.original_start for o in occ] == [starts[0], starts[2]]
    assert occ[1].start == moved_to and occ[1].overridden
    assert occ[0].end - occ[0].start == dt.timedelta(hours=2)
