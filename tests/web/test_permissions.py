from __future__ import annotations

from typing import Any

import pytest

from tests.web.conftest import Running, api
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
    got = {}
    async with running.client() as s:
        for role in ROLES:
            headers = {"Authorization": f"Bearer {tokens[role]}"} if role != "anonymous" else {}
            status, _ = await api(s, method, path, json=body, headers=headers) if body is not None else \
                await api(s, method, path, headers=headers)
            got[role] = status
            if status < 300 and method == "DELETE":
                # Re-create what the allowed role deleted, so the next role sees the same state.
                await running.add_account("victim", "viewer")
            if status < 300 and method == "POST" and path == "/api/accounts":
                acc = await running.store.web.account_by_name("moi")
                await running.store.web.delete_account(acc.id)
    assert got == expected
