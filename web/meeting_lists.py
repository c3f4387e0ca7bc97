"""Upcoming and past meeting lists, one page at a time, from the store's span-indexed queries.

- *past*: meetings whose every occurrence has ended, the latest first; a plain SQL page
  (``span_end <= now ORDER BY span_end DESC``), each with its last occurrence.
- *upcoming*: meetings with an occurrence not yet ended, ordered by that next occurrence (an
  occurrence under way counts).  The order depends on the clock, so it cannot be an index: the
  time ahead is walked in windows of doubling width (a week, two, four...), each one a SQL
  range query whose candidates are expanded only within the window, until the page is full
  or the latest span end is passed.  A meeting is listed in the first window where it has an
  occurrence, so windows never reorder what earlier windows listed.
- *all*: every meeting by its first start.

Pages are ``offset``/``limit`` (the API's ``page``); ``has_more`` says whether a next page exists.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from lienthong.store.meetings import MIN_TIME, Meeting, MeetingsRepo
from web.recurrence import Occurrence
from web.schedule import occurrences_between

FIRST_WINDOW = dt.timedelta(days=7)
WHENS = ("upcoming", "past", "all")


@dataclass
class Listed:
    meeting: Meeting
    occurrence: Occurrence | None  # upcoming: the next one; past: the last one; all: the first one


async def upcoming(repo: MeetingsRepo, now: dt.datetime, *, unit_ids: Sequence[str] | None, offset: int,
                   limit: int) -> tuple[list[Listed], bool]:
    need = offset + limit + 1
    horizon = await repo.latest_end(unit_ids=unit_ids)
    listed: list[Listed] = []
    placed: set[str] = set()
    lo, width = now, FIRST_WINDOW
    while horizon is not None and lo < horizon and len(listed) < need:
        hi = horizon if horizon - lo <= width else lo + width
        found = []
        for m in await repo.overlapping(lo, hi, unit_ids=unit_ids, include_cancelled=True):
            if m.id in placed:
                continue
            occ = occurrences_between(m, lo, hi)
            if occ:
                placed.add(m.id)
                found.append(Listed(m, occ[0]))
        found.sort(key=lambda i: (i.occurrence.start if i.occurrence else now, i.meeting.id))
        listed.extend(found)
        lo, width = hi, width * 2
    return listed[offset:offset + limit], len(listed) > offset + limit


def last_occurrence(m: Meeting) -> Occurrence | None:
    if m.span_end <= MIN_TIME:
        return None
    occ = occurrences_between(m, m.span_end - dt.timedelta(seconds=1), m.span_end)
    return occ[-1] if occ else None


async def past(repo: MeetingsRepo, now: dt.datetime, *, unit_ids: Sequence[str] | None, offset: int,
               limit: int) -> tuple[list[Listed], bool]:
    meetings = await repo.ended_by(now, unit_ids=unit_ids, limit=limit + 1, offset=offset)
    return [Listed(m, last_occurrence(m)) for m in meetings[:limit]], len(meetings) > limit


async def every(repo: MeetingsRepo, *, unit_ids: Sequence[str] | None, offset: int,
                limit: int) -> tuple[list[Listed], bool]:
    meetings = await repo.by_start(unit_ids=unit_ids, limit=limit + 1, offset=offset)
    out = []
    for m in meetings[:limit]:
        occ = occurrences_between(m, m.span_start, m.span_start + dt.timedelta(seconds=1)) \
            if m.span_start > MIN_TIME else []
        out.append(Listed(m, occ[0] if occ else None))
    return out, len(meetings) > limit


async def page(repo: MeetingsRepo, when: str, now: dt.datetime, *, unit_ids: Sequence[str] | None, page: int,
               limit: int) -> tuple[list[Listed], bool]:
    offset = (page - 1) * limit
    if when == "upcoming":
        return await upcoming(repo, now, unit_ids=unit_ids, offset=offset, limit=limit)
    if when == "past":
        return await past(repo, now, unit_ids=unit_ids, offset=offset, limit=limit)
    return await every(repo, unit_ids=unit_ids, offset=offset, limit=limit)
