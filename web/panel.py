"""The panel's common machinery and its own pages: log-in, units, accounts, audit log.

``setup(app)`` installs, for every route of every area:
- templates (Jinja2 through aiohttp-jinja2, ``web/templates``; ``base.html`` is the layout)
  with ``t``, ``fmt_datetime``, ``fmt_date``, ``fmt_time``, ``fmt_range``, ``csrf_token``, ``user``, ``lang`` in context;
- the request middleware: language (``request[keys.LANG]``, ``request[keys.TR]``: a Translator),
  authentication (``request[keys.USER]``: Account or None, ``request[keys.AUTH]``: "cookie" |
  "bearer" | ""), CSRF on unsafe requests not made with a bearer token, and error rendering
  (``ApiError`` → JSON under /api/, an error page elsewhere; 401 on a page → log-in redirect;
  anything unexpected → 500 with a generic message, logged with its traceback);
- ``/healthz``, ``/metrics``, ``/static/``.

Other areas use ``web.auth.require(...)``, ``web.auth.can_manage_unit``, ``web.audit.audit``,
``web.errors.ApiError`` and ``render(request, "page.html", {...})`` from here.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest

from lienthong.store.web import ROLES
from web import auth, keys
from web.audit import audit
from web.errors import ApiError
from web.i18n import LANGUAGES, Translator
from web.units import _EMAIL, tree_rows

log = logging.getLogger("web.panel")
HERE = Path(__file__).parent
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
LANG_COOKIE = "lt_lang"
LOGIN_PATHS = {"/login", "/api/session"}
_USERNAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

REQUESTS: web.AppKey[Counter] = web.AppKey("web_requests", Counter)
# web/openapi.json: the API's description, kept by hand next to the handlers (a test checks it
# names exactly the app's /api routes).
OPENAPI: web.AppKey[bytes] = web.AppKey("openapi", bytes)
LOGINS: web.AppKey[Counter] = web.AppKey("web_logins", Counter)


# -- rendering -----------------------------------------------------------------------------

def tr(request: web.Request) -> Translator:
    return request[keys.TR]


def render(request: web.Request, template: str, context: dict[str, Any], status: int = 200) -> web.Response:
    response = aiohttp_jinja2.render_template(template, request, {**base_context(request), **context}, status=status)
    auth.set_cookies(request, response)
    return response


def base_context(request: web.Request) -> dict[str, Any]:
    """What every page's template gets (base.html needs all of it)."""
    t = request.get(keys.TR) or Translator(request.app[keys.CONFIG].general.language,
                                           request.app[keys.CONFIG].general.timezone)
    return {"t": t.t, "fmt_datetime": t.fmt_datetime, "fmt_date": t.fmt_date, "fmt_time": t.fmt_time, "fmt_range": t.fmt_range,
            "lang": t.lang, "user": request.get(keys.USER), "csrf_token": lambda: auth.csrf_token(request),
            "path": request.path_qs, "flash": request.query.get("flash", "")}


def wants_json(request: web.Request) -> bool:
    if request.path.startswith("/api/"):
        return True
    accept = request.headers.get("Accept", "")
    return "application/json" in accept and "text/html" not in accept


def error_response(request: web.Request, status: int, code: str, message: str,
                   headers: dict[str, str] | None = None) -> web.StreamResponse:
    if status == 401 and request.method == "GET" and not wants_json(request):
        raise web.HTTPFound(f"/login?next={request.path_qs}" if request.path != "/" else "/login")
    if wants_json(request):
        return web.json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)
    response = render(request, "error.html", {"status": status, "message": message}, status=status)
    response.headers.update(headers or {})
    return response


# -- middleware ----------------------------------------------------------------------------

def choose_language(request: web.Request) -> str:
    q = request.query.get("lang")
    if q in LANGUAGES:
        return q
    cookie = request.cookies.get(LANG_COOKIE)
    if cookie in LANGUAGES:
        return cookie
    return request.app[keys.CONFIG].general.language


@web.middleware
async def panel_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    cfg = request.app[keys.CONFIG]
    lang = choose_language(request)
    request[keys.LANG] = lang
    request[keys.TR] = Translator(lang, cfg.general.timezone)
    request[keys.USER] = None
    request[keys.AUTH] = ""
    try:
        try:
            user, how = await auth.authenticate(request)
            request[keys.USER], request[keys.AUTH] = user, how
            if user and user.language in LANGUAGES and "lang" not in request.query and LANG_COOKIE not in request.cookies:
                request[keys.LANG] = user.language
                request[keys.TR] = Translator(user.language, cfg.general.timezone)
            # CSRF matters where a cookie carries authority, and for log-in itself (login CSRF).
            if request.method not in SAFE_METHODS and (how == "cookie" or request.path in LOGIN_PATHS):
                form = None
                if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
                    form = await request.post()
                auth.check_csrf(request, form)
            response: web.StreamResponse = await handler(request)
        except ApiError as e:
            response = error_response(request, e.status, e.code, request[keys.TR].t(e.message_key, **e.args_), e.headers)
        except web.HTTPException as e:
            if e.status < 400:
                raise
            key = {404: "error.not_found", 403: "error.forbidden", 401: "error.login_required"}.get(e.status)
            message = request[keys.TR].t(key) if key else (e.text or e.reason)
            if e.status == 405 or e.status == 413:
                message = e.reason
            response = error_response(request, e.status, re.sub(r"\W+", "_", e.reason.lower()), message)
        except Exception:
            log.exception("unhandled error", extra={"path": request.path, "method": request.method})
            response = error_response(request, 500, "internal", request[keys.TR].t("error.internal"))
    except web.HTTPException as e:  # redirects
        request.app[REQUESTS].labels(str(e.status)).inc()
        raise
    if "lang" in request.query and request.query["lang"] in LANGUAGES and not response.prepared:
        response.set_cookie(LANG_COOKIE, request.query["lang"], samesite="Lax", path="/", max_age=365 * 86400)
    if not response.prepared:
        auth.set_cookies(request, response)
    request.app[REQUESTS].labels(str(response.status)).inc()
    return response


# -- health and metrics --------------------------------------------------------------------

async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type="application/json", charset="utf-8")


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[keys.REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


# -- log-in, log-out, password, language ---------------------------------------------------

def _safe_next(value: str | None) -> str:
    return value if value and value.startswith("/") and not value.startswith("//") else "/"


async def login_page(request: web.Request) -> web.Response:
    return render(request, "login.html", {"error": "", "username": "", "next": _safe_next(request.query.get("next"))})


async def _check_login(request: web.Request, username: str, password: str) -> Any:
    throttle = request.app[auth.THROTTLE]
    address = auth.client_address(request)
    wait = throttle.retry_after(address, username)
    if wait > 0:
        request.app[LOGINS].labels("throttled").inc()
        err = ApiError(429, "throttled", "login.throttled", minutes=max(1, int(wait // 60) + 1))
        err.headers = {"Retry-After": str(int(wait) + 1)}
        raise err
    account = await request.app[keys.STORE].web.account_by_name(username) if username else None
    ok = auth.verify_password(account.password_hash if account else auth._DUMMY_HASH, password)
    if not (ok and account and not account.disabled):
        throttle.failed(address, username)
        request.app[LOGINS].labels("failed").inc()
        log.info("log-in failed", extra={"user": username, "address": address})
        raise ApiError(401, "login_failed", "login.failed")
    throttle.succeeded(username)
    request.app[LOGINS].labels("ok").inc()
    return account


async def login_submit(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    username, password = str(form.get("username", "")).strip(), str(form.get("password", ""))
    nxt = _safe_next(str(form.get("next", "")))
    try:
        account = await _check_login(request, username, password)
    except ApiError as e:
        return render(request, "login.html", {"error": tr(request).t(e.message_key, **e.args_),
                                              "username": username, "next": nxt}, status=e.status)
    response = web.HTTPSeeOther(nxt)
    await auth.start_session(request, response, account)
    request[keys.USER] = account
    await audit(request, "login", f"account:{account.username}")
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    response = web.HTTPSeeOther("/login?flash=logout")
    user = request.get(keys.USER)
    if user is not None:
        await audit(request, "logout", f"account:{user.username}")
    await auth.end_session(request, response)
    raise response


def _password_problem(request: web.Request, account: Any, current: str, new: str, confirm: str | None) -> str | None:
    t = tr(request).t
    if not auth.verify_password(account.password_hash, current):
        return t("password.wrong")
    if confirm is not None and new != confirm:
        return t("password.mismatch")
    if len(new) < auth.MIN_PASSWORD:
        return t("password.too_short", n=auth.MIN_PASSWORD)
    return None


async def _change_password(request: web.Request, account: Any, new: str) -> None:
    repo = request.app[keys.STORE].web
    await repo.set_password(account.id, auth.hash_password(new))
    # Other sessions of this account end; this one stays.
    await repo.delete_sessions_of(account.id, keep=auth.token_hash(request.cookies.get(auth.SESSION_COOKIE, "")))
    await audit(request, "password.change", f"account:{account.username}")


@auth.require()
async def password_page(request: web.Request) -> web.Response:
    return render(request, "password.html", {"error": "", "done": False})


@auth.require()
async def password_submit(request: web.Request) -> web.Response:
    form = await request.post()
    user = auth.require_user(request)
    problem = _password_problem(request, user, str(form.get("current", "")), str(form.get("new", "")),
                                str(form.get("confirm", "")))
    if problem:
        return render(request, "password.html", {"error": problem, "done": False}, status=400)
    await _change_password(request, user, str(form.get("new", "")))
    return render(request, "password.html", {"error": "", "done": True})


@auth.require()
async def home(request: web.Request) -> web.Response:
    return render(request, "home.html", {})


# -- units -----------------------------------------------------------------------------------

@auth.require()
async def units_page(request: web.Request) -> web.Response:
    units = await request.app[keys.STORE].web.units()
    user = auth.require_user(request)
    managed = await auth.managed_units(request, user)
    return render(request, "units.html", {"rows": tree_rows(units), "managed": managed})


def _parse_emails(request: web.Request, raw: Any) -> list[str]:
    emails = [e.strip() for e in (raw if isinstance(raw, list) else str(raw).splitlines()) if str(e).strip()]
    for e in emails:
        if not isinstance(e, str) or not _EMAIL.match(e):
            raise ApiError(400, "bad_email", "units.bad_email", email=str(e))
    return emails


async def _unit_or_404(request: web.Request) -> Any:
    unit = await request.app[keys.STORE].web.unit(request.match_info["unit_id"])
    if unit is None:
        raise ApiError(404, "not_found", "error.not_found")
    return unit


async def _require_manage(request: web.Request, unit_id: str) -> None:
    if not await auth.can_manage_unit(request, auth.require_user(request), unit_id):
        raise ApiError(403, "forbidden", "error.forbidden")


@auth.require("system_admin", "unit_admin")
async def unit_edit_page(request: web.Request) -> web.Response:
    unit = await _unit_or_404(request)
    await _require_manage(request, unit.id)
    return render(request, "unit_edit.html", {"unit": unit, "error": ""})


@auth.require("system_admin", "unit_admin")
async def unit_edit_submit(request: web.Request) -> web.StreamResponse:
    unit = await _unit_or_404(request)
    await _require_manage(request, unit.id)
    form = await request.post()
    name = str(form.get("name", "")).strip()
    try:
        if not name:
            raise ApiError(400, "bad_name", "error.bad_request", detail=tr(request).t("units.name"))
        emails = _parse_emails(request, form.get("emails", ""))
    except ApiError as e:
        return render(request, "unit_edit.html", {"unit": unit, "error": tr(request).t(e.message_key, **e.args_)},
                      status=400)
    await request.app[keys.STORE].web.update_unit(unit.id, name=name, name_en=str(form.get("name_en", "")).strip(),
                                                  emails=emails)
    await audit(request, "unit.update", f"unit:{unit.id}", {"name": name, "emails": emails})
    raise web.HTTPSeeOther("/units?flash=saved")


@auth.require()
async def api_units(request: web.Request) -> web.Response:
    units = await request.app[keys.STORE].web.units()
    return web.json_response({"units": [u.as_json() for u in units]})


@auth.require()
async def api_unit(request: web.Request) -> web.Response:
    return web.json_response((await _unit_or_404(request)).as_json())


@auth.require("system_admin", "unit_admin")
async def api_unit_patch(request: web.Request) -> web.Response:
    unit = await _unit_or_404(request)
    await _require_manage(request, unit.id)
    body = await _json_body(request)
    changes: dict[str, Any] = {}
    for key in ("name", "name_en"):
        if key in body:
            if not isinstance(body[key], str) or (key == "name" and not body[key].strip()):
                raise ApiError(400, "bad_field", "error.bad_request", detail=key)
            changes[key] = body[key].strip()
    if "emails" in body:
        if not isinstance(body["emails"], list):
            raise ApiError(400, "bad_field", "error.bad_request", detail="emails")
        changes["emails"] = _parse_emails(request, body["emails"])
    unknown = set(body) - {"name", "name_en", "emails"}
    if unknown:
        raise ApiError(400, "unknown_field", "error.bad_request", detail=", ".join(sorted(unknown)))
    updated = await request.app[keys.STORE].web.update_unit(unit.id, **changes)
    await audit(request, "unit.update", f"unit:{unit.id}", changes)
    assert updated is not None
    return web.json_response(updated.as_json())


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "bad_json", "error.bad_request", detail="JSON body") from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_json", "error.bad_request", detail="a JSON object")
    return body


# -- accounts --------------------------------------------------------------------------------

async def create_account(request: web.Request, username: str, password: str, role: str,
                         unit_id: str | None) -> Any:
    repo = request.app[keys.STORE].web
    if not _USERNAME.match(username):
        raise ApiError(400, "bad_username", "accounts.bad_username")
    if role not in ROLES:
        raise ApiError(400, "bad_role", "error.bad_request", detail=f"role: {', '.join(ROLES)}")
    if role == "unit_admin" and not unit_id:
        raise ApiError(400, "unit_required", "accounts.unit_required")
    if unit_id and await repo.unit(unit_id) is None:
        raise ApiError(400, "bad_unit", "error.bad_request", detail=f"unit {unit_id}")
    if len(password) < auth.MIN_PASSWORD:
        raise ApiError(400, "weak_password", "password.too_short", n=auth.MIN_PASSWORD)
    if await repo.account_by_name(username) is not None:
        raise ApiError(409, "exists", "accounts.exists", user=username)
    account = await repo.add_account(username, auth.hash_password(password), role, unit_id or None)
    await audit(request, "account.add", f"account:{username}", {"role": role, "unit": unit_id})
    return account


@auth.require("system_admin")
async def accounts_page(request: web.Request) -> web.Response:
    return await _accounts_render(request, "")


async def _accounts_render(request: web.Request, error: str, status: int = 200) -> web.Response:
    repo = request.app[keys.STORE].web
    return render(request, "accounts.html", {"accounts": await repo.accounts(), "rows": tree_rows(await repo.units()),
                                             "roles": ROLES, "error": error}, status=status)


@auth.require("system_admin")
async def accounts_submit(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    try:
        await create_account(request, str(form.get("username", "")).strip(), str(form.get("password", "")),
                             str(form.get("role", "")), str(form.get("unit_id", "")) or None)
    except ApiError as e:
        return await _accounts_render(request, tr(request).t(e.message_key, **e.args_), e.status)
    raise web.HTTPSeeOther("/accounts?flash=added")


async def _delete_account(request: web.Request, username: str) -> None:
    repo = request.app[keys.STORE].web
    account = await repo.account_by_name(username)
    if account is None:
        raise ApiError(404, "not_found", "error.not_found")
    if account.id == auth.require_user(request).id:
        raise ApiError(400, "self_delete", "accounts.self_delete")
    await repo.delete_account(account.id)
    await audit(request, "account.delete", f"account:{username}")


@auth.require("system_admin")
async def account_delete_submit(request: web.Request) -> web.StreamResponse:
    await _delete_account(request, request.match_info["username"])
    raise web.HTTPSeeOther("/accounts?flash=deleted")


@auth.require("system_admin")
async def api_accounts(request: web.Request) -> web.Response:
    return web.json_response({"accounts": [a.as_json() for a in await request.app[keys.STORE].web.accounts()]})


@auth.require("system_admin")
async def api_accounts_post(request: web.Request) -> web.Response:
    body = await _json_body(request)
    username, password, role, unit_id = (body.get(k) for k in ("username", "password", "role", "unit_id"))
    if not (isinstance(username, str) and isinstance(password, str) and isinstance(role, str)):
        raise ApiError(400, "bad_field", "error.bad_request", detail="username, password, role")
    account = await create_account(request, username, password, role, unit_id if isinstance(unit_id, str) else None)
    return web.json_response(account.as_json(), status=201)


@auth.require("system_admin")
async def api_account_delete(request: web.Request) -> web.Response:
    await _delete_account(request, request.match_info["username"])
    return web.json_response({"deleted": request.match_info["username"]})


# -- the API's own session, self, tokens -----------------------------------------------------

async def api_login(request: web.Request) -> web.Response:
    body = await _json_body(request)
    account = await _check_login(request, str(body.get("username", "")), str(body.get("password", "")))
    response = web.json_response(account.as_json())
    await auth.start_session(request, response, account)
    request[keys.USER] = account
    await audit(request, "login", f"account:{account.username}")
    return response


async def api_logout(request: web.Request) -> web.Response:
    response = web.json_response({"logged_out": True})
    await auth.end_session(request, response)
    return response


@auth.require()
async def api_me(request: web.Request) -> web.Response:
    return web.json_response(auth.require_user(request).as_json())


@auth.require()
async def api_me_patch(request: web.Request) -> web.Response:
    body = await _json_body(request)
    user = auth.require_user(request)
    if set(body) - {"language"} or body.get("language") not in LANGUAGES:
        raise ApiError(400, "bad_field", "error.bad_request", detail='{"language": "vi" | "en"}')
    await request.app[keys.STORE].web.set_language(user.id, body["language"])
    return web.json_response({**user.as_json(), "language": body["language"]})


@auth.require()
async def api_me_password(request: web.Request) -> web.StreamResponse:
    body = await _json_body(request)
    user = auth.require_user(request)
    problem = _password_problem(request, user, str(body.get("current", "")), str(body.get("new", "")), None)
    if problem:
        return error_response(request, 400, "bad_password", problem)
    await _change_password(request, user, str(body.get("new", "")))
    return web.json_response({"changed": True})


@auth.require()
async def api_tokens(request: web.Request) -> web.Response:
    return web.json_response({"tokens": await request.app[keys.STORE].web.api_tokens_of(auth.require_user(request).id)})


@auth.require()
async def api_tokens_post(request: web.Request) -> web.Response:
    body = await _json_body(request)
    user = auth.require_user(request)
    token = auth.new_api_token()
    token_id = await request.app[keys.STORE].web.add_api_token(auth.token_hash(token), user.id,
                                                               str(body.get("label", ""))[:100])
    await audit(request, "token.create", f"account:{user.username}", {"token_id": token_id})
    return web.json_response({"id": token_id, "token": token}, status=201)


@auth.require()
async def api_token_delete(request: web.Request) -> web.Response:
    user = auth.require_user(request)
    try:
        token_id = int(request.match_info["token_id"])
    except ValueError:
        raise ApiError(404, "not_found", "error.not_found") from None
    owner = None if user.role == "system_admin" else user.id
    if not await request.app[keys.STORE].web.revoke_api_token(token_id, owner):
        raise ApiError(404, "not_found", "error.not_found")
    await audit(request, "token.revoke", f"token:{token_id}")
    return web.json_response({"revoked": token_id})


# -- audit log -------------------------------------------------------------------------------

@auth.require("system_admin")
async def audit_page(request: web.Request) -> web.Response:
    entries = await request.app[keys.STORE].web.audit_entries(limit=500)
    return render(request, "audit.html", {"entries": entries})


@auth.require("system_admin")
async def api_audit(request: web.Request) -> web.Response:
    try:
        limit = min(1000, max(1, int(request.query.get("limit", "200"))))
        before = int(request.query["before"]) if "before" in request.query else None
    except ValueError:
        raise ApiError(400, "bad_query", "error.bad_request", detail="limit, before: integers") from None
    entries = await request.app[keys.STORE].web.audit_entries(limit=limit, before_id=before)
    return web.json_response({"entries": [e.as_json() for e in entries]})


# -- setup -----------------------------------------------------------------------------------

def setup(app: web.Application) -> None:
    registry = app[keys.REGISTRY]
    app[REQUESTS] = Counter("lienthong_web_requests", "HTTP requests answered, by status", ["status"],
                            registry=registry)
    app[LOGINS] = Counter("lienthong_web_logins", "Log-in attempts, by outcome", ["outcome"], registry=registry)
    app[auth.THROTTLE] = auth.LoginThrottle()
    app[OPENAPI] = (HERE / "openapi.json").read_bytes()
    app.middlewares.append(panel_middleware)
    aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(str(HERE / "templates")), autoescape=jinja2.select_autoescape(default=True),
                         undefined=jinja2.StrictUndefined, default_helpers=False)
    r = app.router
    r.add_get("/healthz", healthz)
    r.add_get("/metrics", metrics)
    r.add_static("/static/", HERE / "static", name="static")
    r.add_get("/", home)
    r.add_get("/login", login_page)
    r.add_post("/login", login_submit)
    r.add_post("/logout", logout)
    r.add_get("/account/password", password_page)
    r.add_post("/account/password", password_submit)
    r.add_get("/units", units_page)
    r.add_get("/units/{unit_id}", unit_edit_page)
    r.add_post("/units/{unit_id}", unit_edit_submit)
    r.add_get("/accounts", accounts_page)
    r.add_post("/accounts", accounts_submit)
    r.add_post("/accounts/{username}/delete", account_delete_submit)
    r.add_get("/audit", audit_page)
    r.add_get("/api/openapi.json", openapi)
    r.add_post("/api/session", api_login)
    r.add_delete("/api/session", api_logout)
    r.add_get("/api/me", api_me)
    r.add_patch("/api/me", api_me_patch)
    r.add_post("/api/me/password", api_me_password)
    r.add_get("/api/tokens", api_tokens)
    r.add_post("/api/tokens", api_tokens_post)
    r.add_delete("/api/tokens/{token_id}", api_token_delete)
    r.add_get("/api/units", api_units)
    r.add_get("/api/units/{unit_id}", api_unit)
    r.add_patch("/api/units/{unit_id}", api_unit_patch)
    r.add_get("/api/accounts", api_accounts)
    r.add_post("/api/accounts", api_accounts_post)
    r.add_delete("/api/accounts/{username}", api_account_delete)
    r.add_get("/api/audit", api_audit)
