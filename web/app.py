"""The web application factory.

Three areas register their routes, each from one module:
- ``web.panel``: accounts and sessions, units, audit log, /healthz, /metrics, the JSON API's
  common machinery, templates, translations, static files;
- ``web.meetings``: meetings, recurrence, calendar, .ics, join links and the join page
  (sets ``keys.JOIN_RESOLVER``);
- ``web.signalling``: the meeting room page and its signalling WebSocket (uses the media service).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from web import keys, meetings, panel, signalling

if TYPE_CHECKING:
    from lienthong.config import Config
    from lienthong.store import Store


def create_app(config: Config, store: Store, media: Any, registry: CollectorRegistry) -> web.Application:
    app = web.Application(client_max_size=2 * 1024 * 1024)
    app[keys.CONFIG] = config
    app[keys.STORE] = store
    app[keys.MEDIA] = media
    app[keys.REGISTRY] = registry
    panel.setup(app)
    meetings.setup(app)
    signalling.setup(app)
    return app
