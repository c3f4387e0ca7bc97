"""expand_between: the occurrences of a window, built only near it, equal the full expansion
filtered to the window (DST and month-end edges, moved and cancelled occurrences)."""

from __future__ import annotations

import datetime as dt
import itertools
import zoneinfo

import pytest

from lienthong.store.meetings import MAX_TIME, MIN_TIME
from web.recurrence import Recurrence, expand, expand_between, too_many_occurrences

UTC = dt.timezone.utc
HCM = zoneinfo.ZoneInfo("Asia/Ho_Chi_Minh")
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")

RULES = [None, Recurrence("DAILY", count=40), Recurrence("WEEKLY", byday=("MO", "TH"), until=dt.date(2027, 3, 31)),
         Recurrence("WEEKLY", interval=2, count=12), Recurrence("MONTHLY", count=14)]


def windowed(occ, a, b):  # type: ignore[no-untyped-def]
    return [o for o in occ if o.end > a and o.start < b]


@pytest.mark.parametrize("tz", [HCM, BERLIN], ids=["hcm", "berlin"])
@pytest.mark.parametrize("rule", RULES, ids=["single", "daily", "weekly-byday", "biweekly", "monthly"])
def test_window_equals_filtered_full_expansion(tz: zoneinfo.ZoneInfo, rule: Recurrence | None) -> None:
    # 22:30 to 01:15: every occurrence crosses midnight; January 31st for the month-end edge.
    start = dt.datetime(2027, 1, 31, 22, 30, tzinfo=tz)
    end = start + dt.timedelta(hours=2, minutes=45)
    full = expand(start, end, rule, tz)
    second = full[1].original_start if len(full) > 2 else None
    cancelled = {second} if second else set()
    overrides = {}
    if len(full) > 4:  # the 5th moved a month later, the 4th moved into the first day
        o5, o4 = full[4].original_start, full[3].original_start
        overrides = {o5: (o5 + dt.timedelta(days=30), o5 + dt.timedelta(days=30, hours=1)),
                     o4: (start + dt.timedelta(hours=3), start + dt.timedelta(hours=4))}
    full = expand(start, end, rule, tz, cancelled, overrides)
    edges = [start - dt.timedelta(days=1), start, start + dt.timedelta(hours=1, minutes=30), end,
             dt.datetime(2027, 2, 1, tzinfo=tz), dt.datetime(2027, 3, 28, 1, 30, tzinfo=UTC),  # Berlin DST
             dt.datetime(2027, 3, 1, tzinfo=tz), dt.datetime(2027, 6, 1, tzinfo=tz), dt.datetime(2028, 6, 1, tzinfo=tz)]
    for a, b in itertools.combinations(sorted(edges), 2):
        got = expand_between(start, end, rule, tz, a, b, cancelled, overrides)
        assert got == windowed(full, a, b), (a, b)
    assert expand_between(start, end, rule, tz, MIN_TIME, MAX_TIME, cancelled, overrides) == full


def test_window_builds_only_nearby_occurrences() -> None:
    """A daily series of 500: a one-day window yields that day's occurrence only, and one in
    the middle of a long series matches the full expansion's."""
    start = dt.datetime(2026, 1, 1, 23, 0, tzinfo=HCM)
    rule = Recurrence("DAILY", count=500)
    a = dt.datetime(2026, 10, 10, tzinfo=HCM)
    got = expand_between(start, start + dt.timedelta(hours=2), rule, HCM, a, a + dt.timedelta(days=1))
    # 23:00 on the 9th runs into the 10th; 23:00 on the 10th starts within it.
    assert [o.start.astimezone(HCM).strftime("%m-%d %H:%M") for o in got] == ["10-09 23:00", "10-10 23:00"]
    assert expand_between(start, start + dt.timedelta(hours=2), rule, HCM, dt.datetime(2028, 1, 1, tzinfo=HCM),
                          dt.datetime(2028, 1, 8, tzinfo=HCM)) == []


def test_until_series_over_the_limit_is_refused() -> None:
    start = dt.datetime(2026, 1, 1, 9, 0, tzinfo=HCM)
    assert too_many_occurrences(start, Recurrence("DAILY", until=dt.date(2027, 12, 31)), HCM)
    assert not too_many_occurrences(start, Recurrence("DAILY", until=dt.date(2027, 5, 1)), HCM)
    assert not too_many_occurrences(start, Recurrence("DAILY", count=500), HCM)
    assert not too_many_occurrences(start, None, HCM)
