"""A real server (lienthong.app.Server) on 127.0.0.1 port 0 with a temp state dir, and a client."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from lienthong.app import Server
from lienthong.config import Config
from web.auth import hash_password

PASSWORD = "correct horse battery"


def make_config(tmp_path: Path, **general: Any) -> Config:
    cfg = Config()
    cfg.general.state_dir = str(tmp_path / "state")
    for k, v in general.items():
        setattr(cfg.general, k, v)
    cfg.web.port = 0
    cfg.mail.enabled = False
    cfg.media.candidate_addresses = ["127.0.0.1"]
    return cfg


@dataclass
class Running:
    server: Server
    url: str

    @property
    def store(self) -> Any:
        return self.server.store

    async def add_account(self, username: str, role: str, unit_id: str | None = None) -> Any:
        return await self.store.web.add_account(username, hash_password(PASSWORD), role, unit_id)

    def client(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(self.url, connector=aiohttp.TCPConnector(ssl=False),
                                     cookie_jar=aiohttp.CookieJar(unsafe=True))


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path)


@pytest.fixture
async def running(config: Config) -> AsyncIterator[Running]:
    server = Server(config)
    await server.start()
    assert server.web is not None
    try:
        yield Running(server, server.web.url)
    finally:
        await server.stop()


def csrf_of(session: aiohttp.ClientSession) -> str:
    for cookie in session.cookie_jar:
        if cookie.key == "lt_csrf":
            return cookie.value
    return ""


async def login(session: aiohttp.ClientSession, username: str, password: str = PASSWORD) -> aiohttp.ClientResponse:
    """Log in through the HTML form, as a browser does (GET the form for its CSRF cookie)."""
    async with session.get("/login") as r:
        html = await r.text()
    token = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert token, html
    async with session.post("/login", data={"username": username, "password": password,
                                            "csrf_token": token.group(1), "next": "/"},
                            allow_redirects=False) as r:
        await r.read()
        return r


async def api(session: aiohttp.ClientSession, method: str, path: str, **kw: Any) -> tuple[int, Any]:
    headers = kw.pop("headers", {})
    if method not in ("GET", "HEAD") and "Authorization" not in headers:
        headers["X-CSRF-Token"] = csrf_of(session)
    async with session.request(method, path, headers=headers, **kw) as r:
        body = await r.json() if r.content_type == "application/json" else await r.text()
        return r.status, body
