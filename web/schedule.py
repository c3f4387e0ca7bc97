"""A stored meeting's occurrences (recurrence expanded, exceptions applied), and the limits on
a meeting's times."""

from __future__ import annotations

import datetime as dt
import zoneinfo

from lienthong.store.meetings import NO_SPAN, Meeting
from web.recurrence import Occurrence, Recurrence, expand, expand_between

# The longest a meeting (or one occurrence of a series) may last.  A meeting may cross midnight
# (22:00 to 01:00 the next day); a whole day is the most a video conference sensibly takes,
# and the bound lets "upcoming" lists and the join window look back a bounded time.
MAX_DURATION = dt.timedelta(hours=24)


def recurrence_of(m: Meeting) -> Recurrence | None:
    return Recurrence.parse(m.rrule, zoneinfo.ZoneInfo(m.timezone)) if m.rrule else None


def occurrences(m: Meeting) -> list[Occurrence]:
    tz = zoneinfo.ZoneInfo(m.timezone)
    return expand(m.start, m.end, recurrence_of(m), tz, m.cancelled_occurrences, m.overrides)


def occurrences_between(m: Meeting, start: dt.datetime, end: dt.datetime) -> list[Occurrence]:
    """Occurrences overlapping [start, end), expanded only near that window."""
    return expand_between(m.start, m.end, recurrence_of(m), zoneinfo.ZoneInfo(m.timezone), start, end,
                          m.cancelled_occurrences, m.overrides)


def last_end(m: Meeting) -> dt.datetime:
    occ = occurrences(m)
    return max((o.end for o in occ), default=m.end)


def span(m: Meeting) -> tuple[dt.datetime, dt.datetime]:
    """From the earliest start to the latest end of the series' occurrences: what the store
    keeps to find the meetings of a time range in SQL.  A meeting with every occurrence
    cancelled spans nothing (``NO_SPAN``): it is in the past and in no calendar."""
    occ = occurrences(m)
    if not occ:
        return NO_SPAN
    return min(o.start for o in occ), max(o.end for o in occ)
