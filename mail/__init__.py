"""The shared mail relay.  Public face used by lienthong."""

from __future__ import annotations

import argparse
import ssl
from typing import TYPE_CHECKING, Any, Callable

from prometheus_client import CollectorRegistry

if TYPE_CHECKING:
    from lienthong.config import Config
    from lienthong.store import Store


class MailService:
    """Placeholder until issue 4 lands."""

    name = "mail"

    def __init__(self, config: Config, store: Store, ssl_context: ssl.SSLContext | None,
                 registry: CollectorRegistry):
        self.config = config

    async def start(self) -> None:
        pass

    async def stop(self, timeout: float) -> None:
        pass


def register_cli(sub: Any, config_args: Callable[[argparse.ArgumentParser], None]) -> None:
    pass
