"""The web panel, JSON API, join pages and signalling endpoint.  Public face used by lienthong:

- ``WebService(config, store, media, registry, ssl_context)``: ``start()`` loads the units file
  into the store, creates a first ``admin`` account when there is none (its password printed
  once), and serves ``web.app.create_app()`` over HTTPS; ``stop(timeout)``.
- ``register_cli(sub, config_args)``: ``lienthong admin add|token``.
- ``check_config(config)``: problems beyond the config file itself (the units file).
"""

from __future__ import annotations

import argparse
import logging
import secrets
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from aiohttp import web as aioweb
from prometheus_client import CollectorRegistry

if TYPE_CHECKING:
    from lienthong.config import Config
    from lienthong.store import Store

log = logging.getLogger("web")


def units_file(config: Config) -> Path:
    """``general.units_file``, or the demo hierarchy shipped with the package when empty."""
    from web.units import demo_units_path

    return config.resolve_path(config.general.units_file) if config.general.units_file else demo_units_path()


def check_config(config: Config) -> list[str]:
    from web.units import UnitsError, load_units_file

    try:
        load_units_file(units_file(config))
    except UnitsError as e:
        return e.errors
    return []


async def load_units(config: Config, store: Store) -> dict[str, int]:
    from web.units import load_units_file

    units, hashes = load_units_file(units_file(config))
    counts = await store.web.sync_units(units, hashes)
    log.info("units loaded", extra={"file": str(units_file(config)), **counts})
    return counts


async def ensure_first_admin(store: Store) -> str | None:
    """Create ``admin`` with a random password when there is no account; returns the password."""
    from web.auth import hash_password

    if await store.web.account_count() > 0:
        return None
    password = secrets.token_urlsafe(12)
    await store.web.add_account("admin", hash_password(password), "system_admin", None)
    return password


class WebService:
    """Serves web.app.create_app() over HTTPS (plain HTTP behind a proxy)."""

    name = "web"

    def __init__(self, config: Config, store: Store, media: Any, registry: CollectorRegistry,
                 ssl_context: ssl.SSLContext | None):
        self.config, self.store, self.media, self.registry = config, store, media, registry
        self.ssl_context = None if config.web.plain_http else ssl_context
        self.runner: aioweb.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        if self.config.web.public_url:
            return self.config.web.public_url.rstrip("/")
        host = self.config.web.host
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else (f"[{host}]" if ":" in host else host)
        return f"{'http' if self.ssl_context is None else 'https'}://{shown}:{self.port}"

    async def start(self) -> None:
        from web.app import create_app

        await load_units(self.config, self.store)
        first_password = await ensure_first_admin(self.store)
        app = create_app(self.config, self.store, self.media, self.registry)
        self.runner = aioweb.AppRunner(app, access_log=None, shutdown_timeout=self.config.general.shutdown_timeout)
        await self.runner.setup()
        site = aioweb.TCPSite(self.runner, self.config.web.host, self.config.web.port, ssl_context=self.ssl_context)
        await site.start()
        server = site._server  # the bound port when configured as 0
        self.port = server.sockets[0].getsockname()[1] if server is not None else self.config.web.port  # type: ignore[attr-defined]
        log.info("panel listening", extra={"url": self.url})
        print(f"Liên thông is running: open {self.url}/", flush=True)
        if first_password:
            print(f"First start: log in as admin / {first_password}  (shown once; change it under "
                  f"'Đổi mật khẩu' after logging in)", flush=True)

    async def stop(self, timeout: float) -> None:
        if self.runner:
            await self.runner.cleanup()
            self.runner = None


def register_cli(sub: Any, config_args: Callable[[argparse.ArgumentParser], None]) -> None:
    from web.cli import register

    register(sub, config_args)
