"""The audit log: every admin action, with who, what, when and from which address."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from web import keys

log = logging.getLogger("web.audit")


async def audit(request: web.Request, action: str, obj: str, details: dict[str, Any] | None = None) -> None:
    user = request.get(keys.USER)
    actor = user.username if user is not None else "-"
    address = request.remote or ""
    await request.app[keys.STORE].web.add_audit(actor, address, action, obj, details or {})
    log.info("audit", extra={"actor": actor, "action": action, "object": obj, "address": address})
