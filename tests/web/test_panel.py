"""The panel's foundation against a real server: sessions, CSRF, throttling, passwords, tokens,
units, audit, language, health and metrics."""

from __future__ import annotations

from pathlib import Path

import pytest

from lienthong.app import Server
from lienthong.store import Store
from tests.web.conftest import PASSWORD, Running, api, csrf_of, login, make_config
from web.auth import LoginThrottle


async def test_wrong_password_and_unknown_user_look_the_same(running: Running) -> None:
    await running.add_account("thu", "viewer")
    async with running.client() as s:
        r1 = await login(s, "thu", "wrong password!")
        r2 = await login(s, "nobody", "wrong password!")
        assert r1.status == r2.status == 401
        status, _ = await api(s, "GET", "/api/me")
        assert status == 401


async def test_page_redirects_to_login_and_back(running: Running) -> None:
    await running.add_account("thu", "system_admin")
    async with running.client() as s:
        async with s.get("/units", allow_redirects=False) as r:
            assert r.status == 302 and r.headers["Location"] == "/login?next=/units"


async def test_session_cookie_flags(running: Running) -> None:
    await running.add_account("thu", "viewer")
    async with running.client() as s:
        async with s.get("/login") as r:
            csrf_header = r.headers.getall("Set-Cookie")
        assert any("lt_csrf=" in h and "Secure" in h and "HttpOnly" in h and "SameSite=Strict" in h
                   for h in csrf_header)
        async with s.get("/login") as r:
            import re
            token = re.search(r'name="csrf_token" value="([^"]+)"', await r.text()).group(1)  # type: ignore[union-attr]
        async with s.post("/login", data={"username": "thu", "password": PASSWORD, "csrf_token": token},
                          allow_redirects=False) as r:
            cookies = r.headers.getall("Set-Cookie")
        session = [h for h in cookies if h.startswith("lt_session=")]
        assert session and all(f in session[0] for f in ("Secure", "HttpOnly", "SameSite=Lax"))


async def test_csrf_required_on_forms_and_cookie_api(running: Running) -> None:
    await running.add_account("thu", "system_admin")
    async with running.client() as s:
        await s.get("/login")
        async with s.post("/login", data={"username": "thu", "password": PASSWORD}, allow_redirects=False) as r:
            assert r.status == 403  # login form without its token
        assert (await login(s, "thu")).status == 303
        async with s.post("/api/tokens", json={"label": "x"}) as r:  # cookie auth, no header
            assert r.status == 403
            body = await r.json()
            assert body["error"]["code"] == "csrf"
        async with s.post("/api/tokens", json={"label": "x"}, headers={"X-CSRF-Token": "forged"}) as r:
            assert r.status == 403
        status, body = await api(s, "POST", "/api/tokens", json={"label": "x"})
        assert status == 201 and body["token"].startswith("lt_")


async def test_login_throttled_per_user(running: Running) -> None:
    await running.add_account("thu", "viewer")
    async with running.client() as s:
        for _ in range(5):
            assert (await login(s, "thu", "wrong password!")).status == 401
        r = await login(s, "thu")  # right password, but throttled now
        assert r.status == 429
        status, _ = await api(s, "GET", "/api/me")
        assert status == 401


def test_throttle_window_slides() -> None:
    now = [0.0]
    th = LoginThrottle(per_address=3, per_user=2, window=60, clock=lambda: now[0])
    th.failed("1.2.3.4", "a")
    th.failed("1.2.3.4", "a")
    assert th.retry_after("1.2.3.4", "a") == pytest.approx(60)
    assert th.retry_after("1.2.3.4", "b") == 0  # another user from the same address
    th.failed("1.2.3.4", "b")
    assert th.retry_after("1.2.3.4", "c") > 0  # the address is now over its limit
    now[0] = 61
    assert th.retry_after("1.2.3.4", "a") == 0


async def test_logout_ends_session(running: Running) -> None:
    await running.add_account("thu", "viewer")
    async with running.client() as s:
        await login(s, "thu")
        async with s.post("/logout", data={"csrf_token": csrf_of(s)}, allow_redirects=False) as r:
            assert r.status == 303
        status, _ = await api(s, "GET", "/api/me")
        assert status == 401


async def test_change_password_ends_other_sessions(running: Running) -> None:
    await running.add_account("thu", "viewer")
    async with running.client() as a, running.client() as b:
        await login(a, "thu")
        await login(b, "thu")
        status, body = await api(a, "POST", "/api/me/password", json={"current": "nope", "new": "x" * 12})
        assert status == 400
        status, body = await api(a, "POST", "/api/me/password", json={"current": PASSWORD, "new": "short"})
        assert status == 400 and "10" in body["error"]["message"]
        status, _ = await api(a, "POST", "/api/me/password", json={"current": PASSWORD, "new": "new password 123"})
        assert status == 200
        assert (await api(a, "GET", "/api/me"))[0] == 200
        assert (await api(b, "GET", "/api/me"))[0] == 401
    async with running.client() as c:
        assert (await login(c, "thu", "new password 123")).status == 303


async def test_api_tokens_work_and_revoke(running: Running) -> None:
    await running.add_account("thu", "system_admin")
    async with running.client() as s:
        await login(s, "thu")
        _, created = await api(s, "POST", "/api/tokens", json={"label": "script"})
    async with running.client() as script:
        h = {"Authorization": f"Bearer {created['token']}"}
        status, me = await api(script, "GET", "/api/me", headers=h)
        assert status == 200 and me["username"] == "thu"
        # Bearer requests need no CSRF token.
        status, _ = await api(script, "PATCH", "/api/units/vpcp", json={"name_en": "Government Office of Viet Nam"},
                              headers=h)
        assert status == 200
        status, _ = await api(script, "GET", "/api/me", headers={"Authorization": f"Bearer {created['token']}x"})
        assert status == 401
        status, _ = await api(script, "DELETE", f"/api/tokens/{created['id']}", headers=h)
        assert status == 200
        status, body = await api(script, "GET", "/api/me", headers=h)
        assert status == 401 and body["error"]["code"] == "invalid_token"
        status, _ = await api(script, "GET", "/api/me", headers={"Authorization": "Basic abc"})
        assert status == 401


async def test_unit_admin_edits_only_its_subtree(running: Running) -> None:
    await running.add_account("laocai", "unit_admin", "so-dttg-lao-cai")
    async with running.client() as s:
        await login(s, "laocai")
        status, body = await api(s, "PATCH", "/api/units/xa-bac-ha-lao-cai", json={"emails": ["a@b.example.vn"]})
        assert status == 200 and body["emails"] == ["a@b.example.vn"]
        status, _ = await api(s, "PATCH", "/api/units/so-dttg-son-la", json={"name": "x"})
        assert status == 403
        status, body = await api(s, "PATCH", "/api/units/so-dttg-lao-cai", json={"emails": ["not an address"]})
        assert status == 400 and "not an address" in body["error"]["message"]
        status, body = await api(s, "PATCH", "/api/units/so-dttg-lao-cai", json={"colour": "red"})
        assert status == 400 and "colour" in body["error"]["message"]
        status, _ = await api(s, "PATCH", "/api/units/nope", json={"name": "x"})
        assert status == 404


async def test_units_tree_page_lists_demo_units(running: Running) -> None:
    await running.add_account("thu", "viewer")
    async with running.client() as s:
        await login(s, "thu")
        async with s.get("/units") as r:
            html = await r.text()
        assert "Sở Dân tộc và Tôn giáo tỉnh Lào Cai" in html and "Văn phòng Chính phủ" in html
        status, body = await api(s, "GET", "/api/units")
        provincial = [u for u in body["units"] if u["kind"] == "provincial"]
        assert len(provincial) == 34
        assert all(u["emails"] for u in body["units"])


async def test_audit_log_records_who_what_where(running: Running) -> None:
    await running.add_account("thu", "system_admin")
    await running.add_account("xem", "viewer")
    async with running.client() as s:
        await login(s, "thu")
        await api(s, "PATCH", "/api/units/vpcp", json={"name_en": "Government Office"})
        status, body = await api(s, "GET", "/api/audit")
        assert status == 200
        entry = next(e for e in body["entries"] if e["action"] == "unit.update")
        assert entry["actor"] == "thu" and entry["object"] == "unit:vpcp" and entry["address"] == "127.0.0.1"
        async with s.get("/audit") as r:
            assert "unit.update" in await r.text()
    async with running.client() as s:
        await login(s, "xem")
        assert (await api(s, "GET", "/api/audit"))[0] == 403
        async with s.get("/audit") as r:
            assert r.status == 403 and "không có quyền" in await r.text()


async def test_language_switch_and_vietnamese_dates(running: Running) -> None:
    await running.add_account("thu", "system_admin")
    async with running.client() as s:
        await login(s, "thu")
        async with s.get("/?lang=en") as r:
            assert "Hello, thu." in await r.text()
        async with s.get("/") as r:  # remembered by cookie
            assert "Hello, thu." in await r.text()
        async with s.get("/?lang=vi") as r:
            assert "Xin chào, thu." in await r.text()
        status, body = await api(s, "GET", "/api/nope?lang=en")
        assert status == 404


async def test_healthz_and_metrics(running: Running) -> None:
    async with running.client() as s:
        async with s.get("/healthz") as r:
            assert r.status == 200 and (await r.json())["status"] == "ok"
        await login(s, "nobody", "wrong password!")
        async with s.get("/metrics") as r:
            text = await r.text()
        assert 'lienthong_web_logins_total{outcome="failed"} 1.0' in text
        assert "lienthong_web_requests_total" in text


async def test_errors_are_readable_never_tracebacks(running: Running) -> None:
    await running.add_account("thu", "system_admin")
    async with running.client() as s:
        await login(s, "thu")
        async with s.patch("/api/units/vpcp", data=b"{not json", headers={"X-CSRF-Token": csrf_of(s),
                                                                          "Content-Type": "application/json"}) as r:
            body = await r.json()
            assert r.status == 400 and body["error"]["code"] == "bad_json"
        async with s.get("/no/such/page") as r:
            text = await r.text()
            assert r.status == 404 and "Traceback" not in text and "Không tìm thấy" in text


async def test_first_start_creates_admin_once_and_data_survives_restart(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = make_config(tmp_path)
    server = Server(cfg)
    await server.start()
    out = capsys.readouterr().out
    assert "log in as admin / " in out
    password = out.split("log in as admin / ")[1].split()[0]
    await server.store.web.update_unit("vpcp", emails=["edited@vpcp.example.gov.vn"])
    await server.stop()
    server = Server(cfg)
    await server.start()
    try:
        assert "log in as admin" not in capsys.readouterr().out
        assert server.web is not None
        from tests.web.conftest import Running as R
        async with R(server, server.web.url).client() as s:
            assert (await login(s, "admin", password)).status == 303
        unit = await server.store.web.unit("vpcp")
        # The units file did not change this unit: the panel edit survives the reload.
        assert unit is not None and unit.emails == ["edited@vpcp.example.gov.vn"]
    finally:
        await server.stop()


async def test_units_file_change_overrides_panel_edit(tmp_path: Path) -> None:
    from web.units import demo_units_path

    units = tmp_path / "units.toml"
    text = demo_units_path().read_text(encoding="utf-8")
    units.write_text(text, encoding="utf-8")
    cfg = make_config(tmp_path, units_file=str(units))
    async with Store(cfg.state_file(cfg.store.path)) as store:
        from web import load_units

        assert (await load_units(cfg, store))["added"] == 44
        await store.web.update_unit("vpcp", emails=["panel@vpcp.example.gov.vn"])
        units.write_text(text.replace("vanthu@vpcp.example.gov.vn", "file@vpcp.example.gov.vn"), encoding="utf-8")
        counts = await load_units(cfg, store)
        assert counts == {"added": 0, "updated": 1, "kept": 43}
        unit = await store.web.unit("vpcp")
        assert unit is not None and unit.emails == ["file@vpcp.example.gov.vn"]
