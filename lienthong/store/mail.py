"""Queries of the mail relay: agencies, their domains, relay accounts, inbound routes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from lienthong.store.web import now_utc, utc_text

if TYPE_CHECKING:
    from lienthong.store import Store


@dataclass(frozen=True)
class RelayAccount:
    username: str
    agency: str
    password_hash: str
    disabled: bool


@dataclass(frozen=True)
class HostedDomain:
    domain: str
    agency: str
    next_hop: str


class MailRepo:
    def __init__(self, store: Store):
        self.store = store

    async def add_agency(self, name: str) -> None:
        await self.store.execute("INSERT INTO mail_agencies(name, created_at) VALUES (?, ?)", (name, utc_text(now_utc())))

    async def agencies(self) -> list[str]:
        return [r[0] for r in await self.store.fetchall("SELECT name FROM mail_agencies ORDER BY name")]

    async def add_domain(self, agency: str, domain: str, next_hop: str = "") -> None:
        await self.store.execute("INSERT INTO mail_domains(domain, agency, next_hop) VALUES (?,?,?)",
                                 (domain.lower().rstrip("."), agency, next_hop))

    async def domains(self) -> list[HostedDomain]:
        rows = await self.store.fetchall("SELECT domain, agency, next_hop FROM mail_domains ORDER BY domain")
        return [HostedDomain(r[0], r[1], r[2]) for r in rows]

    async def add_account(self, agency: str, username: str, password_hash: str) -> None:
        await self.store.execute(
            "INSERT INTO mail_accounts(username, agency, password_hash, created_at) VALUES (?,?,?,?)",
            (username, agency, password_hash, utc_text(now_utc())))

    async def accounts(self) -> list[RelayAccount]:
        rows = await self.store.fetchall("SELECT username, agency, password_hash, disabled FROM mail_accounts")
        return [RelayAccount(r[0], r[1], r[2], bool(r[3])) for r in rows]
