"""Join tokens: what a site's join link carries, signed so it cannot be forged or altered.

Token = base64url(JSON claims) "." base64url(HMAC-SHA256(secret, that first part)).
Claims: ``l`` link id, ``g`` link generation (re-issuing a link bumps it, so the old token
stops working), ``m`` meeting, ``s`` site (unit id), ``r`` role, ``exp`` expiry (Unix time:
the series' last end + grace).  Verification is constant-time; revocation and the meeting's
window are checked against the store by web.joinlinks.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

ROLES = ("chair", "site", "observer")
# Both parts are unpadded base64url; anything else (a URL mangled by a mail client, stray
# non-ASCII) is refused before any decoding.
_SHAPE = re.compile(r"[A-Za-z0-9_-]{1,900}\.[A-Za-z0-9_-]{43}")


class TokenError(ValueError):
    """``reason`` is "invalid" (malformed, bad signature) or "expired"."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class JoinClaims:
    link_id: str
    generation: int
    meeting_id: str
    site_id: str
    role: str
    expires: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(secret: bytes, claims: JoinClaims) -> str:
    body = _b64(json.dumps({"l": claims.link_id, "g": claims.generation, "m": claims.meeting_id,
                            "s": claims.site_id, "r": claims.role, "exp": claims.expires},
                           separators=(",", ":")).encode())
    mac = hmac.new(secret, body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(mac)}"


def verify(secret: bytes, token: str, now: float) -> JoinClaims:
    """The claims of a genuine, unexpired token; TokenError otherwise."""
    claims = verify_signature(secret, token)
    if now > claims.expires:
        raise TokenError("expired")
    return claims


def verify_signature(secret: bytes, token: str) -> JoinClaims:
    """The claims of a genuine token, expired or not (constant-time MAC check)."""
    if not isinstance(token, str) or not _SHAPE.fullmatch(token):
        raise TokenError("invalid")
    body, _, mac = token.partition(".")
    try:
        given = _unb64(mac)
    except (ValueError, TypeError):
        raise TokenError("invalid") from None
    expected = hmac.new(secret, body.encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(given, expected):
        raise TokenError("invalid")
    try:
        raw = json.loads(_unb64(body))
        claims = JoinClaims(str(raw["l"]), int(raw["g"]), str(raw["m"]), str(raw["s"]), str(raw["r"]), int(raw["exp"]))
    except (ValueError, KeyError, TypeError):
        raise TokenError("invalid") from None
    if claims.role not in ROLES:
        raise TokenError("invalid")
    return claims


def load_or_create_secret(path: Path) -> bytes:
    """The signing key, created (0600) at first start.  Replacing it invalidates every link."""
    try:
        data = path.read_bytes()
        if len(data) >= 32:
            if path.stat().st_mode & 0o077:  # copied in with a loose mode: only we may read it
                path.chmod(0o600)
            return data
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return data
