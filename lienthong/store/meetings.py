"""Queries of meetings: meetings and their recurrence, invited sites, join links."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lienthong.store import Store


class MeetingsRepo:
    def __init__(self, store: Store):
        self.store = store
