"""The contract between join links (the panel) and the meeting endpoint (signalling).

A site's join link carries a signed token.  ``JoinResolver.resolve(token)`` checks signature,
expiry, revocation, cancellation and the meeting's window, and answers a ``JoinGrant`` or raises
``JoinRefused`` with a reason a person can read in both languages.  The signalling endpoint
calls it on join and again on reconnect, and allocates nothing for a refused token.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal, Protocol

Role = Literal["chair", "site", "observer"]


@dataclass(frozen=True)
class JoinGrant:
    link_id: str
    meeting_id: str
    # Which occurrence of a recurring meeting (its start, UTC); the meeting's start otherwise.
    occurrence_start: dt.datetime
    meeting_title: str
    site_id: str
    site_name: str
    role: Role
    # The window in which the link lets the site in: start - early, end + grace (UTC).
    opens_at: dt.datetime
    closes_at: dt.datetime
    pin_required: bool = False

    @property
    def room_id(self) -> str:
        """One media room per meeting occurrence."""
        return f"{self.meeting_id}@{self.occurrence_start.strftime('%Y%m%dT%H%M%SZ')}"


class JoinRefused(Exception):
    """Why a token does not let a site in.  ``code`` is stable, for clients and tests:
    invalid, expired, revoked, cancelled, not_open_yet, ended, pin_required, pin_wrong, pin_throttled, locked."""

    def __init__(self, code: str, message_vi: str, message_en: str, opens_at: dt.datetime | None = None):
        super().__init__(message_en)
        self.code = code
        self.message_vi = message_vi
        self.message_en = message_en
        self.opens_at = opens_at

    def message(self, lang: str) -> str:
        return self.message_vi if lang == "vi" else self.message_en


class JoinResolver(Protocol):
    async def resolve(self, token: str, *, pin: str | None = None,
                      now: dt.datetime | None = None) -> JoinGrant: ...
