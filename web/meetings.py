"""Routes of the web.meetings area (see web/app.py)."""

from __future__ import annotations

from aiohttp import web


def setup(app: web.Application) -> None:
    pass
