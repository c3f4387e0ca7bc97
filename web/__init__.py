"""The web panel, JSON API, join pages and signalling endpoint.  Public face used by lienthong."""

from __future__ import annotations

import argparse
import ssl
from typing import TYPE_CHECKING, Any, Callable

from aiohttp import web as aioweb
from prometheus_client import CollectorRegistry, generate_latest, CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from lienthong.config import Config
    from lienthong.store import Store


class WebService:
    """Placeholder until issue 2 lands: /healthz and /metrics only."""

    name = "web"

    def __init__(self, config: Config, store: Store, media: Any, registry: CollectorRegistry,
                 ssl_context: ssl.SSLContext | None):
        self.config, self.store, self.media, self.registry = config, store, media, registry
        self.ssl_context = None if config.web.plain_http else ssl_context
        self.runner: aioweb.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = aioweb.Application()
        app.router.add_get("/healthz", lambda r: aioweb.json_response({"status": "ok"}))

        async def metrics(request: aioweb.Request) -> aioweb.Response:
            return aioweb.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

        app.router.add_get("/metrics", metrics)
        self.runner = aioweb.AppRunner(app)
        await self.runner.setup()
        site = aioweb.TCPSite(self.runner, self.config.web.host, self.config.web.port, ssl_context=self.ssl_context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self, timeout: float) -> None:
        if self.runner:
            await self.runner.cleanup()


def register_cli(sub: Any, config_args: Callable[[argparse.ArgumentParser], None]) -> None:
    pass


def check_config(config: Config) -> list[str]:
    return []
