"""The SFU.  Public face used by lienthong and by web's signalling endpoint."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

if TYPE_CHECKING:
    from lienthong.config import Config


class MediaService:
    """Placeholder until issue 3 lands."""

    name = "media"

    def __init__(self, config: Config, registry: CollectorRegistry):
        self.config = config

    async def start(self) -> None:
        pass

    async def stop(self, timeout: float) -> None:
        pass
