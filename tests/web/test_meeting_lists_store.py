"""Lists and calendar ranges on a real SQLite store with many meetings and recurring series:
what the span-indexed queries and window-only expansion return equals a brute force over every
meeting fully expanded, page by page, with and without the unit filter."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import shutil
import zoneinfo
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lienthong.store import Store
from lienthong.store.meetings import MIN_TIME, Meeting
from lienthong.store.web import Unit
from web import meeting_lists
from web.recurrence import Occurrence, Recurrence
from web.schedule import occurrences, occurrences_between, span

HCM = zoneinfo.ZoneInfo("Asia/Ho_Chi_Minh")
T0 = dt.datetime(2026, 1, 5, 8, 0, tzinfo=HCM)
NOW = dt.datetime(2026, 11, 25, 10, 0, tzinfo=HCM).astimezone(dt.timezone.utc)
UNITS = [Unit("bo", None, "Bộ", "Ministry", "central"), Unit("so-a", "bo", "Sở A", "Dept A", "provincial"),
         Unit("so-b", "bo", "Sở B", "Dept B", "provincial"), Unit("xa-a1", "so-a", "Xã A1", "Commune A1", "commune")]
SINGLES, SERIES = 400, 40


@pytest.fixture(scope="module")
def filled_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built once per module (through the repository, spans from web.schedule.span); each test
    opens its own copy."""
    path = tmp_path_factory.mktemp("lists") / "state.sqlite3"

    async def build() -> None:
        async with Store(path) as s:
            await _fill(s, random.Random(20261125))

    asyncio.run(build())
    return path


@pytest.fixture
async def store(filled_db: Path, tmp_path: Path) -> AsyncIterator[Store]:
    """400 single meetings over two years (a fifth crossing midnight, some cancelled) and 40
    series (daily, weekly, monthly; by count or until; some with moved and cancelled occurrences)."""
    copy = tmp_path / "state.sqlite3"
    shutil.copyfile(filled_db, copy)
    s = Store(copy)
    await s.open()
    yield s
    await s.close()


async def _fill(s: Store, rnd: random.Random) -> None:
    await s.web.sync_units(UNITS, {u.id: "h" for u in UNITS})
    repo = s.meetings
    for i in range(SINGLES):
        start = T0 + dt.timedelta(days=rnd.randrange(0, 720), hours=rnd.randrange(0, 15))
        length = dt.timedelta(hours=rnd.choice([1, 2, 3])) + (dt.timedelta(hours=14) if i % 5 == 0 else dt.timedelta())
        mid = await repo.create(title=f"Họp {i}", agenda="", start=start, end=start + length, timezone="Asia/Ho_Chi_Minh",
                                rrule="", chair_unit_id="bo", sites={"bo": "chair", rnd.choice(["so-a", "so-b", "xa-a1"]): "site"},
                                pin_hash="", created_by="t", span_of=span)
        if i % 37 == 0:
            await repo.update(mid, status="cancelled", span_of=span)
    rules = [Recurrence("DAILY", count=30), Recurrence("WEEKLY", byday=("MO", "TH"), count=60),
             Recurrence("MONTHLY", count=14), Recurrence("WEEKLY", interval=2, until=dt.date(2027, 6, 30)),
             Recurrence("DAILY", until=dt.date(2026, 12, 31))]
    for i in range(SERIES):
        start = T0 + dt.timedelta(days=rnd.randrange(0, 600), hours=rnd.choice([0, 6, 14]))
        rule = rules[i % len(rules)]
        mid = await repo.create(title=f"Giao ban {i}", agenda="", start=start, end=start + dt.timedelta(hours=2),
                                timezone="Asia/Ho_Chi_Minh", rrule=rule.to_rrule(HCM), chair_unit_id="bo",
                                sites={"bo": "chair", ["so-a", "so-b"][i % 2]: "site"}, pin_hash="", created_by="t",
                                span_of=span)
        m = await repo.get(mid)
        assert m is not None
        occ = occurrences(m)
        if i % 3 == 0 and len(occ) > 2:
            await repo.set_exception(mid, occ[1].original_start, cancelled=True, span_of=span)
        if i % 4 == 0 and occ:  # the last occurrence moved three weeks later: the span grows
            last = occ[-1].original_start
            await repo.set_exception(mid, last, cancelled=False, start=last + dt.timedelta(days=21),
                                     end=last + dt.timedelta(days=21, hours=1), span_of=span)


def occ_key(o: Occurrence | None) -> tuple[dt.datetime, dt.datetime] | None:
    return (o.original_start, o.start) if o else None


async def test_calendar_windows_match_brute_force_and_use_the_index(store: Store) -> None:
    everything = await store.meetings.all()
    assert len(everything) == SINGLES + SERIES
    statements: list[str] = []
    await store.db.set_trace_callback(statements.append)
    windows = [(dt.datetime(2026, 11, 23, tzinfo=HCM), dt.timedelta(days=7)),
               (dt.datetime(2026, 2, 1, tzinfo=HCM), dt.timedelta(days=35)),
               (dt.datetime(2027, 7, 1, tzinfo=HCM), dt.timedelta(days=42)),
               (dt.datetime(2029, 1, 1, tzinfo=HCM), dt.timedelta(days=7))]
    for start, length in windows:
        end = start + length
        statements.clear()
        candidates = await store.meetings.overlapping(start, end)
        got = {(m.id, occ_key(o)) for m in candidates for o in occurrences_between(m, start, end)}
        want = {(m.id, occ_key(o)) for m in everything if m.status == "scheduled"
                for o in occurrences(m) if o.end > start and o.start < end}
        assert got == want
        # Only meetings near the window are loaded, not the whole table.
        assert len(candidates) <= len(want) + SERIES
        if length.days == 7:
            assert len(candidates) < (SINGLES + SERIES) // 10
    await store.db.set_trace_callback(None)
    # The range query runs on a span index.
    select = next(s for s in statements if s.startswith("SELECT * FROM meetings WHERE span_end >"))
    plan = " ".join(str(tuple(r)) for r in await store.fetchall("EXPLAIN QUERY PLAN " + select))
    assert "USING INDEX meetings_span" in plan, plan


def brute_upcoming(everything: list[Meeting], units: set[str] | None) -> list[tuple[str, object]]:
    rows = []
    for m in everything:
        if units is not None and not units & set(m.sites):
            continue
        nxt = next((o for o in occurrences(m) if o.end > NOW), None)
        if nxt is not None:
            rows.append((nxt.start, m.id, occ_key(nxt)))
    return [(mid, k) for _, mid, k in sorted(rows)]


def brute_past(everything: list[Meeting], units: set[str] | None) -> list[tuple[str, object]]:
    rows = []
    for m in everything:
        if units is not None and not units & set(m.sites):
            continue
        occ = occurrences(m)
        if all(o.end <= NOW for o in occ):
            last = max(occ, key=lambda o: (o.end, o.start)) if occ else None
            rows.append((last.end if last else MIN_TIME, m.id, occ_key(last)))
    return [(mid, k) for _, mid, k in sorted(rows, reverse=True)]


@pytest.mark.parametrize("when", ["upcoming", "past"])
@pytest.mark.parametrize("units", [None, ("so-a", "xa-a1")], ids=["all-units", "so-a-subtree"])
async def test_list_pages_match_brute_force(store: Store, when: str, units: tuple[str, ...] | None) -> None:
    everything = await store.meetings.all()
    unit_set = set(units) if units else None
    want = (brute_upcoming if when == "upcoming" else brute_past)(everything, unit_set)
    assert len(want) > 40
    got: list[tuple[str, object]] = []
    page, limit = 1, 17
    while True:
        rows, more = await meeting_lists.page(store.meetings, when, NOW, unit_ids=units, page=page, limit=limit)
        assert len(rows) == limit or not more
        got.extend((r.meeting.id, occ_key(r.occurrence)) for r in rows)
        if not more:
            break
        page += 1
    assert got == want
    assert page == -(-len(want) // limit)
    # A page past the end is empty, not an error.
    rows, more = await meeting_lists.page(store.meetings, when, NOW, unit_ids=units, page=page + 3, limit=limit)
    assert rows == [] and not more


async def test_every_meeting_by_first_start(store: Store) -> None:
    rows, more = await meeting_lists.page(store.meetings, "all", NOW, unit_ids=None, page=2, limit=50)
    everything = sorted(await store.meetings.all(), key=lambda m: (m.span_start, m.id))
    assert more and [r.meeting.id for r in rows] == [m.id for m in everything[50:100]]
