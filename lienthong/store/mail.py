"""Queries of the mail relay: agencies, their domains, relay accounts, inbound routes."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lienthong.store import Store


class MailRepo:
    def __init__(self, store: Store):
        self.store = store
