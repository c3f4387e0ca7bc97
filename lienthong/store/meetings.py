"""Queries of meetings: meetings and their recurrence, sites, exceptions, join links."""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lienthong.store.web import now_utc, parse_utc, utc_text

if TYPE_CHECKING:
    from lienthong.store import Store


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


def _link(r: Any) -> JoinLink:
    return JoinLink(r["id"], r["meeting_id"], r["unit_id"], r["role"], r["generation"], bool(r["revoked"]))


class MeetingsRepo:
    def __init__(self, store: Store):
        self.store = store

    async def _load(self, rows: list[Any]) -> list[Meeting]:
        meetings = [Meeting(r["id"], r["title"], r["agenda"], parse_utc(r["start_at"]), parse_utc(r["end_at"]),
                            r["timezone"], r["rrule"], r["chair_unit_id"], r["pin_hash"], r["status"], r["sequence"],
                            r["created_by"], parse_utc(r["updated_at"])) for r in rows]
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

    async def create(self, *, title: str, agenda: str, start: dt.datetime, end: dt.datetime, timezone: str,
                     rrule: str, chair_unit_id: str, sites: dict[str, str], pin_hash: str, created_by: str) -> str:
        meeting_id = secrets.token_hex(6)
        now = utc_text(now_utc())
        async with self.store.transaction() as db:
            await db.execute(
                "INSERT INTO meetings(id, title, agenda, start_at, end_at, timezone, rrule, chair_unit_id, pin_hash,"
                " created_by, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (meeting_id, title, agenda, utc_text(start), utc_text(end), timezone, rrule, chair_unit_id, pin_hash,
                 created_by, now, now))
            await self._write_sites(db, meeting_id, sites)
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
                     exceptions: dict[dt.datetime, dt.datetime | None] | None = None, **fields: Any) -> None:
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

    async def set_exception(self, meeting_id: str, original: dt.datetime, *, cancelled: bool,
                            start: dt.datetime | None = None, end: dt.datetime | None = None) -> None:
        async with self.store.transaction() as db:
            await db.execute(
                "INSERT INTO meeting_exceptions(meeting_id, original_start, cancelled, start_at, end_at)"
                " VALUES (?,?,?,?,?) ON CONFLICT(meeting_id, original_start) DO UPDATE SET"
                " cancelled = excluded.cancelled, start_at = excluded.start_at, end_at = excluded.end_at",
                (meeting_id, utc_text(original), int(cancelled), start and utc_text(start), end and utc_text(end)))
            await db.execute("UPDATE meetings SET sequence = sequence + 1, updated_at = ? WHERE id = ?",
                             (utc_text(now_utc()), meeting_id))

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
