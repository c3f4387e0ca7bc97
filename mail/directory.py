"""Agencies, hosted domains and relay accounts, held in memory for the per-command checks.

Loaded from the store at start and on ``refresh()`` (the MailService refreshes every minute, so
CLI changes take effect without a restart).  Passwords are argon2 hashes; because aiosmtpd calls
the authenticator synchronously, a successful check is remembered as an HMAC of user and
password under a per-process key, so repeated AUTHs of a busy account cost microseconds and
argon2 runs only for new or wrong credentials.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from lienthong.store.mail import HostedDomain, RelayAccount
from mail.policy import normalise_domain

_hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


@dataclass(frozen=True)
class Identity:
    """What a successful AUTH leaves on the session (``session.auth_data``)."""

    username: str
    agency: str


class Directory:
    def __init__(self) -> None:
        self._domains: dict[str, HostedDomain] = {}
        self._agency_domains: dict[str, set[str]] = {}
        self._accounts: dict[str, RelayAccount] = {}
        self._cache_key = secrets.token_bytes(32)
        self._verified: dict[str, str] = {}  # username -> HMAC of the password that worked

    def load(self, domains: list[HostedDomain], accounts: list[RelayAccount]) -> None:
        self._domains = {normalise_domain(d.domain): d for d in domains}
        agency_domains: dict[str, set[str]] = {}
        for d in domains:
            agency_domains.setdefault(d.agency, set()).add(normalise_domain(d.domain))
        self._agency_domains = agency_domains
        old = self._accounts
        self._accounts = {a.username: a for a in accounts}
        for name in list(self._verified):  # a changed or removed account must log in afresh
            if name not in self._accounts or self._accounts[name] != old.get(name):
                del self._verified[name]

    def is_hosted(self, domain: str) -> bool:
        return normalise_domain(domain) in self._domains

    def hosted(self, domain: str) -> HostedDomain | None:
        return self._domains.get(normalise_domain(domain))

    def agency_domains(self, agency: str) -> set[str]:
        return self._agency_domains.get(agency, set())

    def authenticate(self, username: str, password: str) -> Identity | None:
        account = self._accounts.get(username)
        if account is None or account.disabled:
            _dummy_verify(password)
            return None
        mac = hmac.new(self._cache_key, f"{username}\0{password}".encode(), hashlib.sha256).hexdigest()
        if hmac.compare_digest(self._verified.get(username, ""), mac):
            return Identity(username, account.agency)
        try:
            _hasher.verify(account.password_hash, password)
        except (VerificationError, InvalidHashError):
            return None
        self._verified[username] = mac
        return Identity(username, account.agency)


_DUMMY = _hasher.hash("not a real password")


def _dummy_verify(password: str) -> None:
    """Spend the time a real check costs, so unknown names are not told apart by timing."""
    try:
        _hasher.verify(_DUMMY, password)
    except (VerificationError, InvalidHashError):
        pass
