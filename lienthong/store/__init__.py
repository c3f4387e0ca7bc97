"""All data access goes through this package; handlers never write SQL.

``Store`` owns the connection and the migrations.  Each service's queries live in one
repository module here (``store.web`` for units, accounts, sessions, API tokens and the audit
log; ``store.meetings`` for meetings and join links; ``store.mail`` for agencies, domains and relay accounts), so adding PostgreSQL later means
a second implementation of these modules, not changes to handlers.

Migrations are ``migrations/NNNN_name.sql`` files applied once each, in name order, at
start-up, and recorded in ``schema_migrations``.  Number ranges: 0001-0099 core,
0100-0499 web, 0500-0899 mail, 0900-0999 media.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import aiosqlite

log = logging.getLogger("lienthong.store")


class StoreError(Exception):
    """A store problem a person can act on (migration failed, database unreadable)."""


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._db: aiosqlite.Connection | None = None
        # Imported here so the repositories can import Store for type hints.
        from lienthong.store.mail import MailRepo
        from lienthong.store.meetings import MeetingsRepo
        from lienthong.store.web import WebRepo

        self.web = WebRepo(self)
        self.meetings = MeetingsRepo(self)
        self.mail = MailRepo(self)

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError("store is not open")
        return self._db

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.path, isolation_level=None)
        self._db.row_factory = aiosqlite.Row
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA synchronous=NORMAL")
        await self._db.execute("PRAGMA foreign_keys=ON")
        await self._db.execute("PRAGMA busy_timeout=5000")
        await self.migrate()

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def __aenter__(self) -> Store:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- migrations ---------------------------------------------------------------------

    @staticmethod
    def migration_files() -> list[tuple[str, str]]:
        folder = resources.files("lienthong.store") / "migrations"
        out = []
        for entry in folder.iterdir():
            if entry.name.endswith(".sql"):
                out.append((entry.name[:-4], entry.read_text(encoding="utf-8")))
        return sorted(out)

    async def migrate(self) -> list[str]:
        """Apply pending migrations, each in its own transaction.  Returns their names."""
        db = self.db
        await db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name TEXT PRIMARY KEY, applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ','now')))"
        )
        async with db.execute("SELECT name FROM schema_migrations") as cur:
            done = {row[0] for row in await cur.fetchall()}
        applied = []
        for name, sql in self.migration_files():
            if name in done:
                continue
            try:
                await db.execute("BEGIN IMMEDIATE")
                # executescript would COMMIT on its own; run statement by statement instead.
                for statement in _split_sql(sql):
                    await db.execute(statement)
                await db.execute("INSERT INTO schema_migrations(name) VALUES (?)", (name,))
                await db.execute("COMMIT")
            except Exception as e:
                await db.execute("ROLLBACK")
                raise StoreError(f"migration {name} failed on {self.path}: {e}") from e
            log.info("applied migration", extra={"migration": name, "db": str(self.path)})
            applied.append(name)
        return applied

    # -- helpers for the repositories ---------------------------------------------------

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error."""
        db = self.db
        await db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        await db.execute("COMMIT")

    async def fetchall(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[aiosqlite.Row]:
        async with self.db.execute(sql, params) as cur:
            return list(await cur.fetchall())

    async def fetchone(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> aiosqlite.Row | None:
        async with self.db.execute(sql, params) as cur:
            return await cur.fetchone()

    async def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> int:
        """Run one statement; returns lastrowid."""
        async with self.db.execute(sql, params) as cur:
            return cur.lastrowid or 0

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self.db.executemany(sql, rows)


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements (sqlite3.complete_statement knows about quotes)."""
    import sqlite3

    statements, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                statements.append(buf.strip())
            buf = ""
    if buf.strip():
        statements.append(buf.strip())
    return statements
