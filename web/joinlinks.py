"""Join links: issuing tokens, and resolving them into a JoinGrant (web/joins.py contract).

``StoreJoinResolver.resolve(token, pin=, now=)`` checks, in order: the signature (invalid),
the link in the store (revoked: revoked or re-issued since), expiry (expired: the token's
expiry and the meeting's current last end + grace both passed; a postponed meeting keeps the
links already sent out working), the meeting (cancelled), its occurrences' windows [start - join_early_minutes, end + join_grace_minutes]
(not_open_yet with ``opens_at`` of the next one; ended), then the PIN (pin_required, pin_wrong; pin_throttled after 5 wrong PINs on a link in 10 minutes).
It is called by the join page and by the signalling endpoint on join and on reconnect.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import TYPE_CHECKING

from lienthong.store.meetings import JoinLink, Meeting
from lienthong.store.web import now_utc
from web import tokens
from web.joins import JoinGrant, JoinRefused
from web.schedule import last_end, occurrences

if TYPE_CHECKING:
    from lienthong.config import Config
    from lienthong.store import Store

_MESSAGES = {
    "invalid": ("Đường dẫn tham gia không hợp lệ.", "This join link is not valid."),
    "expired": ("Đường dẫn tham gia đã hết hạn.", "This join link has expired."),
    "revoked": ("Đường dẫn tham gia đã bị thu hồi. Vui lòng liên hệ đơn vị tổ chức để nhận đường dẫn mới.",
                "This join link was revoked. Ask the organiser for a new one."),
    "cancelled": ("Cuộc họp đã bị hủy.", "The meeting was cancelled."),
    "ended": ("Cuộc họp đã kết thúc.", "The meeting has ended."),
    "not_open_yet": ("Cuộc họp chưa bắt đầu.", "The meeting has not opened yet."),
    "pin_required": ("Cuộc họp yêu cầu mã PIN.", "This meeting needs a PIN."),
    "pin_wrong": ("Mã PIN không đúng.", "Wrong PIN."),
    "pin_throttled": ("Nhập sai mã PIN quá nhiều lần. Vui lòng thử lại sau ít phút.",
                      "Too many wrong PINs. Try again in a few minutes."),
}


class PinThrottle:
    """Wrong PINs per join link in a sliding window: a leaked link cannot be used to try every
    4-digit PIN.  In memory (a restart forgets it, which is fine for minutes-long windows)."""

    def __init__(self, limit: int = 5, window: dt.timedelta = dt.timedelta(minutes=10)):
        self.limit = limit
        self.window = window
        self._failures: dict[str, list[dt.datetime]] = {}

    def _recent(self, link_id: str, now: dt.datetime) -> list[dt.datetime]:
        recent = [t for t in self._failures.get(link_id, []) if now - t < self.window]
        if recent:
            self._failures[link_id] = recent
        else:
            self._failures.pop(link_id, None)
        return recent

    def blocked(self, link_id: str, now: dt.datetime) -> bool:
        return len(self._recent(link_id, now)) >= self.limit

    def failed(self, link_id: str, now: dt.datetime) -> None:
        self._failures.setdefault(link_id, []).append(now)
        if len(self._failures) > 10_000:  # bound memory: forget links with only old failures
            for key in list(self._failures):
                self._recent(key, now)

    def succeeded(self, link_id: str) -> None:
        self._failures.pop(link_id, None)


def refused(code: str, opens_at: dt.datetime | None = None) -> JoinRefused:
    vi, en = _MESSAGES[code]
    return JoinRefused(code, vi, en, opens_at)


class StoreJoinResolver:
    def __init__(self, store: Store, secret: bytes, config: Config):
        self.store = store
        self.secret = secret
        self.early = dt.timedelta(minutes=config.web.join_early_minutes)
        self.grace = dt.timedelta(minutes=config.web.join_grace_minutes)
        self.pin_throttle = PinThrottle()

    def token_for(self, meeting: Meeting, link: JoinLink) -> str:
        expires = int((last_end(meeting) + self.grace).timestamp())
        return tokens.sign(self.secret, tokens.JoinClaims(link.id, link.generation, meeting.id, link.unit_id,
                                                          link.role, expires))

    async def resolve(self, token: str, *, pin: str | None = None, now: dt.datetime | None = None) -> JoinGrant:
        from web.auth import verify_password

        now = now or now_utc()
        try:
            claims = tokens.verify_signature(self.secret, token)
        except tokens.TokenError as e:
            raise refused(e.reason) from None
        link = await self.store.meetings.link(claims.link_id)
        if (link is None or link.revoked or link.generation != claims.generation
                or link.meeting_id != claims.meeting_id or link.unit_id != claims.site_id):
            raise refused("revoked")
        meeting = await self.store.meetings.get(link.meeting_id)
        if meeting is None:
            raise refused("revoked")
        # The expiry in a token is the series' end (+ grace) when the link was shown.  A link
        # already sent out must survive the meeting being postponed, so the meeting's current
        # end is what counts; a token is expired only when both have passed.
        if now.timestamp() > claims.expires and now > last_end(meeting) + self.grace:
            raise refused("expired")
        if meeting.status == "cancelled":
            raise refused("cancelled")
        current = None
        upcoming = None
        for o in occurrences(meeting):
            if o.start - self.early <= now <= o.end + self.grace:
                current = o
                break
            if o.start - self.early > now and upcoming is None:
                upcoming = o
        if current is None:
            if upcoming is not None:
                raise refused("not_open_yet", upcoming.start - self.early)
            raise refused("ended")
        if meeting.pin_hash:
            if not pin:
                raise refused("pin_required")
            if self.pin_throttle.blocked(link.id, now):
                raise refused("pin_throttled")
            # argon2 takes tens of milliseconds: keep it off the loop the media also runs on.
            if not await asyncio.to_thread(verify_password, meeting.pin_hash, pin):
                self.pin_throttle.failed(link.id, now)
                raise refused("pin_wrong")
            self.pin_throttle.succeeded(link.id)
        unit = await self.store.web.unit(link.unit_id)
        return JoinGrant(link_id=link.id, meeting_id=meeting.id, occurrence_start=current.original_start,
                         meeting_title=meeting.title, site_id=link.unit_id, site_name=unit.name if unit else link.unit_id,
                         role=link.role,  # type: ignore[arg-type]
                         opens_at=current.start - self.early, closes_at=current.end + self.grace,
                         pin_required=bool(meeting.pin_hash))
