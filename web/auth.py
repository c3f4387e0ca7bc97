"""Accounts, sessions, API tokens, CSRF, log-in throttling and permission checks.

- Passwords: argon2id (argon2-cffi), OWASP's minimum parameters (19 MiB, t=2).
- Sessions: a random token in the ``lt_session`` cookie (Secure, HttpOnly, SameSite=Lax),
  stored as its SHA-256 hash; 12 hours.
- API tokens: ``Authorization: Bearer lt_...``, stored hashed, revocable; same permissions.
- CSRF: double-submit.  ``lt_csrf`` cookie (Secure, SameSite=Strict) must equal the form
  field ``csrf_token`` or the ``X-CSRF-Token`` header on every unsafe request that is
  authenticated by cookie (or is the log-in form).  Bearer-token requests need none.
- Throttling: failed log-ins per client address and per user name in a sliding window.

Handlers use ``current_user(request)``, ``@require(...)`` and ``can_manage_unit``.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from lienthong.store.web import Account, now_utc
from web import keys
from web.errors import ApiError

SESSION_COOKIE = "lt_session"
CSRF_COOKIE = "lt_csrf"
SESSION_LIFETIME = dt.timedelta(hours=12)
MIN_PASSWORD = 10

_hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)

def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


# A hash to verify against when the user does not exist, so timing does not reveal names.
_DUMMY_HASH = _hasher.hash("not a real password")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_api_token() -> str:
    return "lt_" + secrets.token_urlsafe(32)


class LoginThrottle:
    """Failed log-ins per address and per user name within ``window`` seconds.

    In memory, per node: several nodes behind a balancer will move this to Redis."""

    def __init__(self, per_address: int = 20, per_user: int = 5, window: float = 900.0,
                 clock: Callable[[], float] = time.monotonic):
        self.per_address, self.per_user, self.window, self.clock = per_address, per_user, window, clock
        self._fails: dict[str, deque[float]] = {}

    def _recent(self, key: str) -> deque[float]:
        q = self._fails.setdefault(key, deque())
        cutoff = self.clock() - self.window
        while q and q[0] < cutoff:
            q.popleft()
        return q

    def retry_after(self, address: str, username: str) -> float:
        """Seconds until another attempt is allowed (0: allowed now)."""
        waits = []
        for key, limit in ((f"a:{address}", self.per_address), (f"u:{username.lower()}", self.per_user)):
            q = self._recent(key)
            if len(q) >= limit:
                waits.append(q[0] + self.window - self.clock())
        return max(waits, default=0.0)

    def failed(self, address: str, username: str) -> None:
        now = self.clock()
        self._recent(f"a:{address}").append(now)
        self._recent(f"u:{username.lower()}").append(now)
        if len(self._fails) > 100_000:  # bound memory under a spray of names
            for k in [k for k, q in self._fails.items() if not q]:
                del self._fails[k]

    def succeeded(self, username: str) -> None:
        self._fails.pop(f"u:{username.lower()}", None)


THROTTLE: web.AppKey[LoginThrottle] = web.AppKey("login_throttle", LoginThrottle)


def client_address(request: web.Request) -> str:
    return request.remote or ""


async def authenticate(request: web.Request) -> tuple[Account | None, str]:
    """The request's account and how it was authenticated ("bearer", "cookie" or "")."""
    repo = request.app[keys.STORE].web
    auth = request.headers.get("Authorization", "")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "bad_authorization", "error.bad_request", detail="Authorization: Bearer <token>")
        account = await repo.api_token_account(token_hash(token.strip()))
        if account is None:
            raise ApiError(401, "invalid_token", "error.login_required")
        return account, "bearer"
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        account = await repo.session_account(token_hash(cookie), now_utc())
        if account is not None:
            return account, "cookie"
    return None, ""


def check_csrf(request: web.Request, form: Any = None) -> None:
    expected = request.cookies.get(CSRF_COOKIE, "")
    given = request.headers.get("X-CSRF-Token") or (form.get("csrf_token", "") if form is not None else "")
    if not expected or not isinstance(given, str) or not hmac.compare_digest(expected, given):
        raise ApiError(403, "csrf", "error.csrf")


def csrf_token(request: web.Request) -> str:
    """The token for forms on this page (the cookie's, or a new one set by the middleware)."""
    token = request.cookies.get(CSRF_COOKIE) or request.get(keys.NEW_CSRF)
    if not token:
        token = secrets.token_urlsafe(24)
        request[keys.NEW_CSRF] = token
    return str(token)


def set_cookies(request: web.Request, response: web.StreamResponse) -> None:
    new = request.get(keys.NEW_CSRF)
    if new:
        response.set_cookie(CSRF_COOKIE, new, secure=True, httponly=True, samesite="Strict", path="/")


async def start_session(request: web.Request, response: web.StreamResponse, account: Account) -> None:
    token = secrets.token_urlsafe(32)
    await request.app[keys.STORE].web.add_session(token_hash(token), account.id, now_utc() + SESSION_LIFETIME,
                                                  client_address(request))
    response.set_cookie(SESSION_COOKIE, token, secure=True, httponly=True, samesite="Lax", path="/",
                        max_age=int(SESSION_LIFETIME.total_seconds()))


async def end_session(request: web.Request, response: web.StreamResponse) -> None:
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        await request.app[keys.STORE].web.delete_session(token_hash(cookie))
    response.del_cookie(SESSION_COOKIE, path="/")


def current_user(request: web.Request) -> Account | None:
    return request.get(keys.USER)


def require_user(request: web.Request) -> Account:
    user = current_user(request)
    if user is None:
        raise ApiError(401, "login_required", "error.login_required")
    return user


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def require(*roles: str) -> Callable[[Handler], Handler]:
    """Handler decorator: a logged-in user with one of ``roles`` (none given: any role)."""

    def deco(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapper(request: web.Request) -> web.StreamResponse:
            user = require_user(request)
            if roles and user.role not in roles:
                raise ApiError(403, "forbidden", "error.forbidden")
            return await handler(request)

        return wrapper

    return deco


async def managed_units(request: web.Request, user: Account) -> set[str] | None:
    """Unit ids the user may manage: None for all (system admin), else its unit's subtree."""
    from web.units import subtree

    if user.role == "system_admin":
        return None
    if user.role != "unit_admin" or not user.unit_id:
        return set()
    units = await request.app[keys.STORE].web.units()
    return subtree(units, user.unit_id)


async def can_manage_unit(request: web.Request, user: Account, unit_id: str) -> bool:
    allowed = await managed_units(request, user)
    return allowed is None or unit_id in allowed
