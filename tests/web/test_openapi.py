"""web/openapi.json against the app's real router: every /api route (method and path) is
described, and every described operation exists, so the document cannot rot; it is served at
/api/openapi.json and is a valid OpenAPI 3.1 document."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from aiohttp import web

from tests.web.conftest import Running

DOC = Path(__file__).parents[2] / "web" / "openapi.json"
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def normalized(path: str) -> str:
    """``/api/meetings/{meeting_id}/links/{unit_id}/{action:revoke|reissue}`` and the
    document's ``.../{action}`` both become ``/api/meetings/{}/links/{}/{}``."""
    return re.sub(r"\{[^{}]*(\{[^{}]*\}[^{}]*)*\}", "{}", path)


def app_routes(app: web.Application) -> set[tuple[str, str]]:
    out = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if path is None or route.method in ("HEAD", "*"):  # HEAD: added with every GET
            continue
        out.add((route.method.lower(), normalized(path)))
    return out


def documented(doc: dict) -> set[tuple[str, str]]:  # type: ignore[type-arg]
    return {(method, normalized(path)) for path, item in doc["paths"].items() for method in item if method in METHODS}


def load() -> dict:  # type: ignore[type-arg]
    return json.loads(DOC.read_text(encoding="utf-8"))


def test_document_has_the_openapi_top_level_keys() -> None:
    doc = load()
    assert doc["openapi"].startswith("3.1.")
    assert {"openapi", "info", "paths", "components"} <= set(doc)
    assert doc["info"]["title"] and doc["info"]["version"]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in METHODS:
                assert op.get("responses") and op.get("summary"), (method, path)


def test_document_is_valid_openapi_3_1() -> None:
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(load())


async def test_every_api_route_is_documented_and_nothing_else(running: Running) -> None:
    assert running.server.web is not None and running.server.web.runner is not None
    routes = app_routes(running.server.web.runner.app)
    api = {r for r in routes if r[1].startswith("/api/")}
    assert ("get", "/api/meetings") in api and ("post", "/api/meetings/{}/links/{}/{}") in api
    doc = documented(load())
    missing = sorted(api - doc)
    assert not missing, f"routes missing from web/openapi.json (describe them there): {missing}"
    ghosts = sorted(doc - routes)
    assert not ghosts, f"web/openapi.json describes routes the app does not have: {ghosts}"


def test_the_comparison_sees_a_missing_and_an_extra_route() -> None:
    doc = load()
    del doc["paths"]["/api/calendar"]
    doc["paths"]["/api/nowhere/{id}"] = {"get": {"summary": "x", "responses": {"200": {"description": "x"}}}}
    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    app = web.Application()
    app.router.add_get("/api/calendar", handler)
    app.router.add_post("/api/meetings/{meeting_id}/links/{unit_id}/{action:revoke|reissue}", handler)
    routes = app_routes(app)
    assert routes == {("get", "/api/calendar"), ("post", "/api/meetings/{}/links/{}/{}")}
    assert ("get", "/api/calendar") not in documented(doc) and ("get", "/api/nowhere/{}") in documented(doc)


async def test_served_at_api_openapi_json(running: Running) -> None:
    async with running.client() as s:  # anonymous: the description is public
        async with s.get("/api/openapi.json") as r:
            assert r.status == 200 and r.content_type == "application/json"
            assert await r.json() == load()
