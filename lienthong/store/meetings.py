"""Queries of meetings: meetings and their recurrence, sites, exceptions, join links.

Each meeting row keeps its *span* (earliest occurrence start, latest occurrence end) so that
calendars and lists select the meetings of a time range in SQL, on an index.  The store does
not expand recurrence itself: whoever writes a meeting passes ``span_of`` (web.schedule.span),
which is applied to the meeting as written, inside the same transaction.  Without it the span
is the widest safe one (the meeting is a candidate for every range).
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass, field
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from lienthong.store.web import now_utc, parse_utc, utc_text

if TYPE_CHECKING:
    from lienthong.store import Store

MIN_TIME = dt.datetime(1, 1, 1, tzinfo=dt.timezone.utc)
MAX_TIME = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.timezone.utc)
# The span of a meeting with no occurrence left (all cancelled): ended long ago, in no range.
NO_SPAN = (MIN_TIME, MIN_TIME)


@dataclass
class Meeting:
    id: str
    title: str
    agenda: str
    start: dt.datetime
    end: dt.datetime
    timezone: str
    rrule: str
    chair_unit_id: str
    pin_hash: str
    status: str
    sequence: int
    created_by: str
    updated_at: dt.datetime
    span_start: dt.datetime = MIN_TIME  # earliest occurrence start (see the module docstring)
    span_end: dt.datetime = MAX_TIME  # latest occurrence end
    sites: dict[str, str] = field(default_factory=dict)  # unit id -> role
    cancelled_occurrences: set[dt.datetime] = field(default_factory=set)
    overrides: dict[dt.datetime, tuple[dt.datetime, dt.datetime]] = field(default_factory=dict)


@dataclass
class JoinLink:
    id: str
    meeting_id: str
    unit_id: str
    role: str
    generation: int
    revoked: bool


SpanOf = Callable[[Meeting], tuple[dt.datetime, dt.datetime]]


def widest_span(m: Meeting) -> tuple[dt.datetime, dt.datetime]:
    """A span that is never too narrow, for writers that cannot expand recurrence."""
    starts = [m.start, *(s for s, _ in m.overrides.values())]
    ends = [m.end, *(e for _, e in m.overrides.values())]
    return min(starts), (MAX_TIME if m.rrule else max(ends))


def _link(r: Any) -> JoinLink:
    return JoinLink(r["id"], r["meeting_id"], r["unit_id"], r["role"], r["generation"], bool(r["revoked"]))


class MeetingsRepo:
    def __init__(self, store: Store):
        self.store = store

    async def _load(self, rows: list[Any]) -> list[Meeting]:
        meetings = [Meeting(r["id"], r["title"], r["agenda"], parse_utc(r["start_at"]), parse_utc(r["end_at"]),
                            r["timezone"], r["rrule"], r["chair_unit_id"], r["pin_hash"], r["status"], r["sequence"],
                            r["created_by"], parse_utc(r["updated_at"]), parse_utc(r["span_start"]),
                            parse_utc(r["span_end"])) for r in rows]
        if not meetings:
            return []
        by_id = {m.id: m for m in meetings}
        marks = ",".join("?" * len(by_id))
        for r in await self.store.fetchall(f"SELECT * FROM meeting_sites WHERE meeting_id IN ({marks})", list(by_id)):
            by_id[r["meeting_id"]].sites[r["unit_id"]] = r["role"]
        for r in await self.store.fetchall(f"SELECT * FROM meeting_exceptions WHERE meeting_id IN ({marks})",
                                           list(by_id)):
            m, original = by_id[r["meeting_id"]], parse_utc(r["original_start"])
            if r["cancelled"]:
                m.cancelled_occurrences.add(original)
            else:
                m.overrides[original] = (parse_utc(r["start_at"]), parse_utc(r["end_at"]))
        return meetings

    async def get(self, meeting_id: str) -> Meeting | None:
        found = await self._load(await self.store.fetchall("SELECT * FROM meetings WHERE id = ?", (meeting_id,)))
        return found[0] if found else None

    async def all(self) -> list[Meeting]:
        return await self._load(await self.store.fetchall("SELECT * FROM meetings ORDER BY start_at"))

    # -- selections by time (on the span indexes) ---------------------------------------

    @staticmethod
    def _units_clause(unit_ids: Sequence[str] | None) -> tuple[str, list[str]]:
        if unit_ids is None:
            return "", []
        marks = ",".join("?" * len(unit_ids)) or "NULL"
        return f" AND id IN (SELECT meeting_id FROM meeting_sites WHERE unit_id IN ({marks}))", list(unit_ids)

    async def overlapping(self, start: dt.datetime, end: dt.datetime, *, unit_ids: Sequence[str] | None = None,
                          include_cancelled: bool = False) -> list[Meeting]:
        """Meetings whose span overlaps [start, end) (candidates: expand each within the range),
        optionally only those inviting one of ``unit_ids``."""
        units, params = self._units_clause(unit_ids)
        status = "" if include_cancelled else " AND status = 'scheduled'"
        return await self._load(await self.store.fetchall(
            f"SELECT * FROM meetings WHERE span_end > ? AND span_start < ?{status}{units} ORDER BY span_start, id",
            [utc_text(start), utc_text(end), *params]))

    async def latest_end(self, *, unit_ids: Sequence[str] | None = None) -> dt.datetime | None:
        """The latest span end (the upcoming list's horizon)."""
        units, params = self._units_clause(unit_ids)
        row = await self.store.fetchone(f"SELECT MAX(span_end) AS e FROM meetings WHERE 1 = 1{units}", params)
        return parse_utc(row["e"]) if row and row["e"] else None

    async def ended_by(self, t: dt.datetime, *, unit_ids: Sequence[str] | None = None, limit: int,
                       offset: int = 0) -> list[Meeting]:
        """Meetings whose every occurrence has ended by ``t``, the latest first."""
        units, params = self._units_clause(unit_ids)
        return await self._load(await self.store.fetchall(
            f"SELECT * FROM meetings WHERE span_end <= ?{units} ORDER BY span_end DESC, id DESC LIMIT ? OFFSET ?",
            [utc_text(t), *params, limit, offset]))

    async def by_start(self, *, unit_ids: Sequence[str] | None = None, limit: int, offset: int = 0) -> list[Meeting]:
        """Every meeting, by first start."""
        units, params = self._units_clause(unit_ids)
        return await self._load(await self.store.fetchall(
            f"SELECT * FROM meetings WHERE 1 = 1{units} ORDER BY span_start, id LIMIT ? OFFSET ?",
            [*params, limit, offset]))

    async def spans_to_recompute(self) -> list[Meeting]:
        """Meetings still carrying the widest span (written before spans were kept)."""
        return await self._load(await self.store.fetchall(
            "SELECT * FROM meetings WHERE span_start = ? OR span_end = ?", (utc_text(MIN_TIME), utc_text(MAX_TIME))))

    async def set_span(self, meeting_id: str, span: tuple[dt.datetime, dt.datetime]) -> None:
        await self.store.execute("UPDATE meetings SET span_start = ?, span_end = ? WHERE id = ?",
                                 (utc_text(span[0]), utc_text(span[1]), meeting_id))

    async def _write_span(self, meeting_id: str, span_of: SpanOf | None) -> None:
        """Inside a write transaction: the span of the meeting as just written (same connection,
        so the read sees the uncommitted rows)."""
        m = await self.get(meeting_id)
        if m is not None:
            await self.set_span(meeting_id, (span_of or widest_span)(m))

    # -- writes -------------------------------------------------------------------------

    async def create(self, *, title: str, agenda: str, start: dt.datetime, end: dt.datetime, timezone: str,
                     rrule: str, chair_unit_id: str, sites: dict[str, str], pin_hash: str, created_by: str,
                     span_of: SpanOf | None = None) -> str:
        meeting_id = secrets.token_hex(6)
        now = utc_text(now_utc())
        async with self.store.transaction() as db:
            await db.execute(
                "INSERT INTO meetings(id, title, agenda, start_at, end_at, timezone, rrule, chair_unit_id, pin_hash,"
                " created_by, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (meeting_id, title, agenda, utc_text(start), utc_text(end), timezone, rrule, chair_unit_id, pin_hash,
                 created_by, now, now))
            await self._write_sites(db, meeting_id, sites)
            await self._write_span(meeting_id, span_of)
        return meeting_id

    async def _write_sites(self, db: Any, meeting_id: str, sites: dict[str, str]) -> None:
        before = {r["unit_id"] for r in await (await db.execute(
            "SELECT unit_id FROM meeting_sites WHERE meeting_id = ?", (meeting_id,))).fetchall()}
        await db.execute("DELETE FROM meeting_sites WHERE meeting_id = ?", (meeting_id,))
        await db.executemany("INSERT INTO meeting_sites(meeting_id, unit_id, role) VALUES (?,?,?)",
                             [(meeting_id, u, r) for u, r in sites.items()])
        # Every site has a join link; a site no longer invited loses its link.
        now = utc_text(now_utc())
        for unit_id, role in sites.items():
            await db.execute(
                "INSERT INTO join_links(id, meeting_id, unit_id, role, updated_at) VALUES (?,?,?,?,?)"
                " ON CONFLICT(meeting_id, unit_id) DO UPDATE SET role = excluded.role",
                (secrets.token_hex(8), meeting_id, unit_id, role, now))
        # A site invited again gets a fresh link (the one it lost when dropped stays dead); the
        # links of sites that stayed keep their state, so an edit never undoes a revocation.
        for unit_id in set(sites) - before:
            await db.execute("UPDATE join_links SET generation = generation + 1, revoked = 0, updated_at = ?"
                             " WHERE meeting_id = ? AND unit_id = ? AND revoked = 1", (now, meeting_id, unit_id))
        marks = ",".join("?" * len(sites))
        await db.execute(f"UPDATE join_links SET revoked = 1 WHERE meeting_id = ? AND unit_id NOT IN ({marks})",
                         (meeting_id, *sites))

    async def update(self, meeting_id: str, *, sites: dict[str, str] | None = None,
                     exceptions: dict[dt.datetime, dt.datetime | None] | None = None, span_of: SpanOf | None = None,
                     **fields: Any) -> None:
        """Update series fields (title, agenda, start, end, rrule, chair_unit_id, pin_hash, status);
        bumps SEQUENCE.  ``exceptions`` re-keys the series' exceptions in the same transaction
        (old original start -> new original start, or None to drop it), for when the series moved."""
        cols = {"title": "title", "agenda": "agenda", "start": "start_at", "end": "end_at", "rrule": "rrule",
                "chair_unit_id": "chair_unit_id", "pin_hash": "pin_hash", "status": "status"}
        sets, params = ["sequence = sequence + 1", "updated_at = ?"], [utc_text(now_utc())]
        for k, v in fields.items():
            sets.append(f"{cols[k]} = ?")
            params.append(utc_text(v) if isinstance(v, dt.datetime) else v)
        async with self.store.transaction() as db:
            await db.execute(f"UPDATE meetings SET {', '.join(sets)} WHERE id = ?", (*params, meeting_id))
            if sites is not None:
                await self._write_sites(db, meeting_id, sites)
            if exceptions:
                rows = await (await db.execute(
                    "SELECT * FROM meeting_exceptions WHERE meeting_id = ?", (meeting_id,))).fetchall()
                await db.execute("DELETE FROM meeting_exceptions WHERE meeting_id = ?", (meeting_id,))
                for r in rows:
                    new = exceptions.get(parse_utc(r["original_start"]), parse_utc(r["original_start"]))
                    if new is not None:
                        await db.execute(
                            "INSERT OR REPLACE INTO meeting_exceptions(meeting_id, original_start, cancelled,"
                            " start_at, end_at) VALUES (?,?,?,?,?)",
                            (meeting_id, utc_text(new), r["cancelled"], r["start_at"], r["end_at"]))
            await self._write_span(meeting_id, span_of)

    async def set_exception(self, meeting_id: str, original: dt.datetime, *, cancelled: bool,
                            start: dt.datetime | None = None, end: dt.datetime | None = None,
                            span_of: SpanOf | None = None) -> None:
        async with self.store.transaction() as db:
            await db.execute(
                "INSERT INTO meeting_exceptions(meeting_id, original_start, cancelled, start_at, end_at)"
                " VALUES (?,?,?,?,?) ON CONFLICT(meeting_id, original_start) DO UPDATE SET"
                " cancelled = excluded.cancelled, start_at = excluded.start_at, end_at = excluded.end_at",
                (meeting_id, utc_text(original), int(cancelled), start and utc_text(start), end and utc_text(end)))
            await db.execute("UPDATE meetings SET sequence = sequence + 1, updated_at = ? WHERE id = ?",
                             (utc_text(now_utc()), meeting_id))
            await self._write_span(meeting_id, span_of)

    async def links(self, meeting_id: str) -> list[JoinLink]:
        rows = await self.store.fetchall("SELECT * FROM join_links WHERE meeting_id = ? ORDER BY role, unit_id",
                                         (meeting_id,))
        return [_link(r) for r in rows]

    async def link(self, link_id: str) -> JoinLink | None:
        row = await self.store.fetchone("SELECT * FROM join_links WHERE id = ?", (link_id,))
        return _link(row) if row else None

    async def link_for(self, meeting_id: str, unit_id: str) -> JoinLink | None:
        row = await self.store.fetchone("SELECT * FROM join_links WHERE meeting_id = ? AND unit_id = ?",
                                        (meeting_id, unit_id))
        return _link(row) if row else None

    async def revoke_link(self, meeting_id: str, unit_id: str) -> None:
        await self.store.execute("UPDATE join_links SET revoked = 1, updated_at = ? WHERE meeting_id = ? AND unit_id = ?",
                                 (utc_text(now_utc()), meeting_id, unit_id))

    async def reissue_link(self, meeting_id: str, unit_id: str) -> None:
        await self.store.execute(
            "UPDATE join_links SET revoked = 0, generation = generation + 1, updated_at = ?"
            " WHERE meeting_id = ? AND unit_id = ?", (utc_text(now_utc()), meeting_id, unit_id))
