"""Queries of the web panel: units, accounts, meetings, join links, audit log."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lienthong.store import Store


class WebRepo:
    def __init__(self, store: Store):
        self.store = store
