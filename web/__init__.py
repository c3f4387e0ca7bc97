"""The web panel, JSON API, join pages and signalling endpoint.  Public face used by lienthong."""

from __future__ import annotations

import argparse
import ssl
from typing import TYPE_CHECKING, Any, Callable

from aiohttp import web as aioweb
from prometheus_client import CollectorRegistry

if TYPE_CHECKING:
    from lienthong.config import Config
    from lienthong.store import Store


class WebService:
    """Serves web.app.create_app() over HTTPS (plain HTTP behind a proxy)."""

    name = "web"

    def __init__(self, config: Config, store: Store, media: Any, registry: CollectorRegistry,
                 ssl_context: ssl.SSLContext | None):
        self.config, self.store, self.media, self.registry = config, store, media, registry
        self.ssl_context = None if config.web.plain_http else ssl_context
        self.runner: aioweb.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        from web.app import create_app

        app = create_app(self.config, self.store, self.media, self.registry)
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
