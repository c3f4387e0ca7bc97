"""Typed application keys: shared state of the web app (no module globals)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from web.joins import JoinResolver

if TYPE_CHECKING:
    from lienthong.config import Config
    from lienthong.store import Store

CONFIG: web.AppKey["Config"] = web.AppKey("config")
STORE: web.AppKey["Store"] = web.AppKey("store")
# media.MediaService, through its public face only.
MEDIA: web.AppKey[Any] = web.AppKey("media")
REGISTRY: web.AppKey[CollectorRegistry] = web.AppKey("registry")
# Set by web.meetings.setup(); used by the join page and by web.signalling.
JOIN_RESOLVER: web.AppKey[JoinResolver] = web.AppKey("join_resolver")

# Per-request state set by web.panel's middleware for every route.
from lienthong.store.web import Account  # noqa: E402
from web.i18n import Translator  # noqa: E402

LANG: web.RequestKey[str] = web.RequestKey("lang", str)
TR: web.RequestKey[Translator] = web.RequestKey("tr", Translator)
USER: web.RequestKey[Account | None] = web.RequestKey("user", object)  # type: ignore[arg-type]
AUTH: web.RequestKey[str] = web.RequestKey("auth", str)  # "cookie" | "bearer" | ""
NEW_CSRF: web.RequestKey[str] = web.RequestKey("new_csrf", str)
