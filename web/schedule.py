"""A stored meeting's occurrences (recurrence expanded, exceptions applied)."""

from __future__ import annotations

import datetime as dt
import zoneinfo

from lienthong.store.meetings import Meeting
from web.recurrence import Occurrence, Recurrence, expand


def recurrence_of(m: Meeting) -> Recurrence | None:
    return Recurrence.parse(m.rrule, zoneinfo.ZoneInfo(m.timezone)) if m.rrule else None


def occurrences(m: Meeting) -> list[Occurrence]:
    tz = zoneinfo.ZoneInfo(m.timezone)
    return expand(m.start, m.end, recurrence_of(m), tz, m.cancelled_occurrences, m.overrides)


def occurrences_between(m: Meeting, start: dt.datetime, end: dt.datetime) -> list[Occurrence]:
    return [o for o in occurrences(m) if o.end > start and o.start < end]


def last_end(m: Meeting) -> dt.datetime:
    occ = occurrences(m)
    return max((o.end for o in occ), default=m.end)
