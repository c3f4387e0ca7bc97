"""Queries of the web panel: units, accounts, sessions, API tokens, audit log.

Times are stored as ISO 8601 UTC strings (``2026-11-24T07:00:00Z``) so they sort as text.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lienthong.store import Store

ROLES = ("system_admin", "unit_admin", "viewer")


def utc_text(t: dt.datetime) -> str:
    t = t.astimezone(dt.timezone.utc)
    return f"{t.year:04d}-{t:%m-%dT%H:%M:%S}Z"  # %Y does not pad years below 1000 on every libc


def parse_utc(s: str) -> dt.datetime:
    return dt.datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


@dataclass
class Unit:
    id: str
    parent_id: str | None
    name: str
    name_en: str
    kind: str
    emails: list[str] = field(default_factory=list)
    sort_key: int = 0

    def display_name(self, lang: str) -> str:
        return self.name_en if lang == "en" and self.name_en else self.name

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "parent_id": self.parent_id, "name": self.name, "name_en": self.name_en,
                "kind": self.kind, "emails": self.emails}


@dataclass
class Account:
    id: int
    username: str
    password_hash: str
    role: str
    unit_id: str | None
    language: str
    disabled: bool

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "username": self.username, "role": self.role, "unit_id": self.unit_id,
                "language": self.language or None, "disabled": self.disabled}


@dataclass
class AuditEntry:
    id: int
    at: dt.datetime
    actor: str
    address: str
    action: str
    object: str
    details: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "at": utc_text(self.at), "actor": self.actor, "address": self.address,
                "action": self.action, "object": self.object, "details": self.details}


def _unit(row: Any) -> Unit:
    return Unit(row["id"], row["parent_id"], row["name"], row["name_en"], row["kind"],
                json.loads(row["emails"]), row["sort_key"])


def _account(row: Any) -> Account:
    return Account(row["id"], row["username"], row["password_hash"], row["role"], row["unit_id"],
                   row["language"], bool(row["disabled"]))


class WebRepo:
    def __init__(self, store: Store):
        self.store = store

    # -- units ----------------------------------------------------------------------------

    async def units(self) -> list[Unit]:
        rows = await self.store.fetchall("SELECT * FROM units ORDER BY sort_key, id")
        return [_unit(r) for r in rows]

    async def unit(self, unit_id: str) -> Unit | None:
        row = await self.store.fetchone("SELECT * FROM units WHERE id = ?", (unit_id,))
        return _unit(row) if row else None

    async def sync_units(self, units: list[Unit], hashes: dict[str, str]) -> dict[str, int]:
        """Load units from the units file.  A unit whose file version (hash) is unchanged since
        the last load keeps any panel edits; a new or changed one is written from the file.
        Units missing from the file are kept (meetings refer to them)."""
        counts = {"added": 0, "updated": 0, "kept": 0}
        async with self.store.transaction() as db:
            for u in units:  # parents first: the file loader orders them so
                async with db.execute("SELECT file_hash FROM units WHERE id = ?", (u.id,)) as cur:
                    row = await cur.fetchone()
                h = hashes[u.id]
                if row is not None and row[0] == h:
                    counts["kept"] += 1
                    continue
                await db.execute(
                    "INSERT INTO units(id, parent_id, name, name_en, kind, emails, sort_key, file_hash, updated_at)"
                    " VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET parent_id=excluded.parent_id,"
                    " name=excluded.name, name_en=excluded.name_en, kind=excluded.kind, emails=excluded.emails,"
                    " sort_key=excluded.sort_key, file_hash=excluded.file_hash, updated_at=excluded.updated_at",
                    (u.id, u.parent_id, u.name, u.name_en, u.kind, json.dumps(u.emails, ensure_ascii=False),
                     u.sort_key, h, utc_text(now_utc())))
                counts["added" if row is None else "updated"] += 1
        return counts

    async def update_unit(self, unit_id: str, *, name: str | None = None, name_en: str | None = None,
                          emails: list[str] | None = None) -> Unit | None:
        sets, params = [], []
        for col, value in (("name", name), ("name_en", name_en)):
            if value is not None:
                sets.append(f"{col} = ?")
                params.append(value)
        if emails is not None:
            sets.append("emails = ?")
            params.append(json.dumps(emails, ensure_ascii=False))
        if sets:
            sets.append("updated_at = ?")
            params.append(utc_text(now_utc()))
            await self.store.execute(f"UPDATE units SET {', '.join(sets)} WHERE id = ?", (*params, unit_id))
        return await self.unit(unit_id)

    # -- accounts -------------------------------------------------------------------------

    async def account_count(self) -> int:
        row = await self.store.fetchone("SELECT count(*) FROM accounts")
        return int(row[0]) if row else 0

    async def accounts(self) -> list[Account]:
        return [_account(r) for r in await self.store.fetchall("SELECT * FROM accounts ORDER BY username")]

    async def account_by_name(self, username: str) -> Account | None:
        row = await self.store.fetchone("SELECT * FROM accounts WHERE username = ?", (username,))
        return _account(row) if row else None

    async def account(self, account_id: int) -> Account | None:
        row = await self.store.fetchone("SELECT * FROM accounts WHERE id = ?", (account_id,))
        return _account(row) if row else None

    async def add_account(self, username: str, password_hash: str, role: str, unit_id: str | None) -> Account:
        await self.store.execute(
            "INSERT INTO accounts(username, password_hash, role, unit_id, created_at) VALUES (?,?,?,?,?)",
            (username, password_hash, role, unit_id, utc_text(now_utc())))
        acc = await self.account_by_name(username)
        assert acc is not None
        return acc

    async def set_password(self, account_id: int, password_hash: str) -> None:
        await self.store.execute("UPDATE accounts SET password_hash = ? WHERE id = ?", (password_hash, account_id))

    async def set_language(self, account_id: int, language: str) -> None:
        await self.store.execute("UPDATE accounts SET language = ? WHERE id = ?", (language, account_id))

    async def delete_account(self, account_id: int) -> None:
        await self.store.execute("DELETE FROM accounts WHERE id = ?", (account_id,))

    # -- sessions and API tokens (hashes only) --------------------------------------------

    async def add_session(self, token_hash: str, account_id: int, expires_at: dt.datetime, address: str) -> None:
        await self.store.execute(
            "INSERT INTO sessions(token_hash, account_id, created_at, expires_at, address) VALUES (?,?,?,?,?)",
            (token_hash, account_id, utc_text(now_utc()), utc_text(expires_at), address))

    async def session_account(self, token_hash: str, now: dt.datetime) -> Account | None:
        row = await self.store.fetchone(
            "SELECT a.* FROM sessions s JOIN accounts a ON a.id = s.account_id"
            " WHERE s.token_hash = ? AND s.expires_at > ? AND a.disabled = 0", (token_hash, utc_text(now)))
        return _account(row) if row else None

    async def delete_session(self, token_hash: str) -> None:
        await self.store.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash,))

    async def delete_sessions_of(self, account_id: int, keep: str | None = None) -> None:
        await self.store.execute("DELETE FROM sessions WHERE account_id = ? AND token_hash IS NOT ?",
                                 (account_id, keep))

    async def add_api_token(self, token_hash: str, account_id: int, label: str) -> int:
        return await self.store.execute(
            "INSERT INTO api_tokens(token_hash, account_id, label, created_at) VALUES (?,?,?,?)",
            (token_hash, account_id, label, utc_text(now_utc())))

    async def api_token_account(self, token_hash: str) -> Account | None:
        row = await self.store.fetchone(
            "SELECT a.* FROM api_tokens t JOIN accounts a ON a.id = t.account_id"
            " WHERE t.token_hash = ? AND t.revoked = 0 AND a.disabled = 0", (token_hash,))
        return _account(row) if row else None

    async def api_tokens_of(self, account_id: int) -> list[dict[str, Any]]:
        rows = await self.store.fetchall(
            "SELECT id, label, created_at, revoked FROM api_tokens WHERE account_id = ? ORDER BY id", (account_id,))
        return [{"id": r["id"], "label": r["label"], "created_at": r["created_at"], "revoked": bool(r["revoked"])}
                for r in rows]

    async def revoke_api_token(self, token_id: int, account_id: int | None = None) -> bool:
        params: tuple[int, ...]
        if account_id is None:
            sql, params = "UPDATE api_tokens SET revoked = 1 WHERE id = ?", (token_id,)
        else:
            sql, params = "UPDATE api_tokens SET revoked = 1 WHERE id = ? AND account_id = ?", (token_id, account_id)
        async with self.store.db.execute(sql, params) as cur:
            return cur.rowcount > 0

    # -- audit log ------------------------------------------------------------------------

    async def add_audit(self, actor: str, address: str, action: str, obj: str, details: dict[str, Any]) -> None:
        await self.store.execute(
            "INSERT INTO audit_log(at, actor, address, action, object, details) VALUES (?,?,?,?,?,?)",
            (utc_text(now_utc()), actor, address, action, obj, json.dumps(details, ensure_ascii=False, default=str)))

    async def audit_entries(self, limit: int = 200, before_id: int | None = None) -> list[AuditEntry]:
        if before_id is None:
            rows = await self.store.fetchall("SELECT * FROM audit_log ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = await self.store.fetchall("SELECT * FROM audit_log WHERE id < ? ORDER BY id DESC LIMIT ?",
                                             (before_id, limit))
        return [AuditEntry(r["id"], parse_utc(r["at"]), r["actor"], r["address"], r["action"], r["object"],
                           json.loads(r["details"])) for r in rows]
