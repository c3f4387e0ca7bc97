"""Creating meetings through the real API, for the meetings, join and signalling tests."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Any

import aiohttp

from lienthong.store.web import now_utc
from tests.web.conftest import Running, api, login

HCM = zoneinfo.ZoneInfo("Asia/Ho_Chi_Minh")


def local(t: dt.datetime) -> str:
    return t.astimezone(HCM).strftime("%Y-%m-%dT%H:%M")


def meeting_body(start: dt.datetime, minutes: int = 120, **extra: Any) -> dict[str, Any]:
    body = {"title": "Họp giao ban công tác dân tộc", "agenda": "Tổng kết năm 2026",
            "start": local(start), "end": local(start + dt.timedelta(minutes=minutes)),
            "chair": "bo-dttg", "sites": ["so-dttg-ha-noi", "so-dttg-lao-cai", "so-dttg-son-la"]}
    body.update(extra)
    return body


async def admin_session(running: Running, username: str = "quantri") -> aiohttp.ClientSession:
    if await running.store.web.account_by_name(username) is None:
        await running.add_account(username, "system_admin")
    s = running.client()
    assert (await login(s, username)).status == 303
    return s


async def create_meeting(running: Running, body: dict[str, Any]) -> dict[str, Any]:
    s = await admin_session(running)
    try:
        status, created = await api(s, "POST", "/api/meetings", json=body)
        assert status == 201, created
        return created  # type: ignore[no-any-return]
    finally:
        await s.close()


async def meeting_now(running: Running, **extra: Any) -> dict[str, Any]:
    """A meeting that started five minutes ago (its join links open now)."""
    start = (now_utc() - dt.timedelta(minutes=5)).replace(second=0, microsecond=0)
    return await create_meeting(running, meeting_body(start, **extra))


def link_of(created: dict[str, Any], site: str) -> str:
    return next(l["url"] for l in created["links"] if l["site"] == site)
