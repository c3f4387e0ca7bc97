from __future__ import annotations

from typing import Any

import pytest

import datetime as dt

from lienthong.store.web import now_utc
from tests.web.conftest import Running, api
from tests.web.meeting_helpers import create_meeting, meeting_body
from tests.web.permissions_table import ROLES, ROUTES
from web.auth import new_api_token, token_hash


async def _tokens(running: Running) -> dict[str, str]:
    tokens = {}
    for role, unit in (("viewer", None), ("unit_admin", "so-dttg-lao-cai"), ("system_admin", None)):
        account = await running.add_account(role.replace("_", ""), role, unit)
        token = new_api_token()
        await running.store.web.add_api_token(token_hash(token), account.id, "test")
        tokens[role] = token
    await running.add_account("victim", "viewer")
    return tokens


@pytest.mark.parametrize("method, path, body, expected", ROUTES, ids=[f"{m} {p}" for m, p, _, _ in ROUTES])
async def test_route_permissions(running: Running, method: str, path: str, body: Any, expected: dict[str, int]) -> None:
    tokens = await _tokens(running)
    start = now_utc() + dt.timedelta(days=1)
    bodies = {"own_body": meeting_body(start, chair="so-dttg-lao-cai", sites=["xa-bac-ha-lao-cai"]),
              "central_body": meeting_body(start, sites=["so-dttg-hue"])}
    own = await create_meeting(running, bodies["own_body"])
    central = await create_meeting(running, bodies["central_body"])
    path = path.format(own=own["id"], central=central["id"], own_occ=own["occurrences"][0]["id"],
                       central_occ=central["occurrences"][0]["id"])
    body = bodies.get(body, body) if isinstance(body, str) else body
    got = {}
    async with running.client() as s:
        for role in ROLES:
            headers = {"Authorization": f"Bearer {tokens[role]}"} if role != "anonymous" else {}
            kw: dict[str, Any] = {"headers": headers, "allow_redirects": False}
            if body is not None:
                kw["json"] = body
            status, _ = await api(s, method, path, **kw)
            got[role] = status
            if status < 300 and method == "DELETE" and path.startswith("/api/accounts/"):
                # Re-create what the allowed role deleted, so the next role sees the same state.
                await running.add_account("victim", "viewer")
            if status < 300 and method == "POST" and path == "/api/accounts":
                acc = await running.store.web.account_by_name("moi")
                await running.store.web.delete_account(acc.id)
    assert got == expected
