"""Errors a person can act on: JSON for the API, a page for the panel, never a traceback.

Raise ``ApiError(status, code, message_key, **args)``; the middleware in web.panel renders it
as ``{"error": {"code": ..., "message": ...}}`` (message translated) for ``/api/`` and JSON
clients, and as the error page otherwise.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    def __init__(self, status: int, code: str, message_key: str, **args: Any):
        super().__init__(f"{status} {code}")
        self.status = status
        self.code = code
        self.message_key = message_key
        self.args_ = args
        self.headers: dict[str, str] = {}
