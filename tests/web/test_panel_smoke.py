from __future__ import annotations

from tests.web.conftest import Running, api, login


async def test_login_me_logout(running: Running) -> None:
    await running.add_account("thu", "system_admin")
    async with running.client() as s:
        r = await login(s, "thu")
        assert r.status == 303
        status, me = await api(s, "GET", "/api/me")
        assert status == 200 and me["username"] == "thu"
        async with s.get("/") as r:
            html = await r.text()
            assert "Xin chào, thu." in html
