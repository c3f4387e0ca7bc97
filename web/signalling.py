"""The meeting room: its page (``GET /m/{token}``) and its signalling WebSocket (``GET /ws/meeting``).

One WebSocket per site carries the JSON messages of docs/signalling.md (parsed and validated in
``web.room_protocol``).  The join token travels in the first ``join`` message, not in the URL, so
it stays out of access logs.  The token is resolved (``keys.JOIN_RESOLVER``) on join and again on
every reconnect; nothing is allocated in the SFU for a refused token.  A dropped WebSocket keeps
the site's place for a grace period (``web.room_sessions``); the media path is independent of it.

Everything the SFU does goes through ``media``'s public face, ``app[keys.MEDIA]``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import WSMsgType, web

from web import keys
from web.joins import JoinRefused
from web.room_protocol import (BEFORE_JOIN, CHAIR_ONLY, OBSERVER_FORBIDDEN, ClientMessage, ProtocolError,
                               error_message, parse_client_message, server_message)
from web.room_sessions import RoomSession, RoomSessions

log = logging.getLogger("lienthong.web.signalling")

WEB_DIR = Path(__file__).parent
WS_PATH = "/ws/meeting"
# WebSocket close codes (4000-4999 are the application's own).
CLOSE_REFUSED = 4003
CLOSE_ENDED = 4004
CLOSE_REMOVED = 4005
CLOSE_LEFT = 4006
CLOSE_REPLACED = 4007
CLOSE_JOIN_TIMEOUT = 4008
CLOSE_SERVER_CLOSING = 1001

# Defaults, overridable per app (tests shorten them) through SIGNALLING_TIMERS.
DEFAULT_TIMERS = {"grace_seconds": 30.0, "heartbeat_seconds": 15.0, "ping_seconds": 20.0,
                  "join_timeout_seconds": 15.0}

SESSIONS: web.AppKey[RoomSessions] = web.AppKey("signalling_sessions")
CONNECTIONS: web.AppKey[set["SignallingConnection"]] = web.AppKey("signalling_connections")
TIMERS: web.AppKey[dict[str, float]] = web.AppKey("signalling_timers")
TEMPLATES: web.AppKey[jinja2.Environment] = web.AppKey("signalling_templates")

LANGS = ("vi", "en")


def load_catalog(lang: str) -> dict[str, str]:
    with open(WEB_DIR / "locale" / lang / "meeting.json", encoding="utf-8") as f:
        catalog: dict[str, str] = json.load(f)
    return catalog


def choose_lang(request: web.Request) -> str:
    asked = request.query.get("lang")
    if asked in LANGS:
        return asked
    default = getattr(request.app[keys.CONFIG].general, "language", "vi")
    return default if default in LANGS else "vi"


def static_url(app: web.Application) -> str:
    """Where web/static is served: the panel's static route when it has one, else ours."""
    for name in ("static", "meeting_static"):
        if name in app.router.named_resources():
            return str(app.router[name].url_for(filename="x")).rsplit("/", 1)[0]
    return "/m-static"


# ---- the page ----

async def meeting_page(request: web.Request) -> web.Response:
    token = request.match_info["token"]
    lang = choose_lang(request)
    strings = load_catalog(lang)
    status = 200
    refusal: JoinRefused | None = None
    try:
        await request.app[keys.JOIN_RESOLVER].resolve(token, now=dt.datetime.now(dt.UTC))
    except JoinRefused as e:
        # A PIN arrives with the WebSocket join (the join page keeps it in sessionStorage).
        if e.code not in ("pin_required",):
            refusal, status = e, 403
    page = {
        "token": token, "lang": lang, "ws_path": WS_PATH, "strings": strings,
        "ping_seconds": request.app[TIMERS]["ping_seconds"],
        "refused": None if refusal is None else {"code": refusal.code, "message": refusal.message(lang)},
    }

    def t(key: str, **params: Any) -> str:
        text = strings.get(key, key)
        return text.format(**params) if params else text

    html = request.app[TEMPLATES].get_template("meeting.html").render(
        lang=lang, other_lang="en" if lang == "vi" else "vi", static_url=static_url(request.app), t=t,
        # </script> cannot appear inside the JSON: escape the slash of every "</".
        config_json=json.dumps(page, ensure_ascii=False).replace("</", "<\\/"),
        refused=page["refused"])
    return web.Response(text=html, content_type="text/html", status=status,
                        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


# ---- the WebSocket ----

class SignallingConnection:
    """One site's WebSocket: parses messages, speaks for its ``RoomSession``."""

    def __init__(self, request: web.Request, ws: web.WebSocketResponse):
        self.request = request
        self.app = request.app
        self.ws = ws
        self.lang = "vi"
        self.session: RoomSession | None = None
        self.closing = False
        self._send_lock = asyncio.Lock()

    async def send_json(self, message: dict[str, Any]) -> None:
        if self.ws.closed:
            return
        async with self._send_lock:
            try:
                await self.ws.send_str(json.dumps(message, ensure_ascii=False))
            except (ConnectionError, RuntimeError):
                pass  # the peer went away; the receive loop notices and detaches

    async def send_error(self, code: str, message: str, msg: ClientMessage | None = None,
                         message_vi: str | None = None) -> None:
        await self.send_json(error_message(code, message, msg_id=msg.id if msg else None,
                                           msg_type=msg.type if msg else None, message_vi=message_vi))

    async def close(self, code: int, reason: str) -> None:
        self.closing = True
        await self.ws.close(code=code, message=reason.encode()[:120])

    async def run(self) -> None:
        join_timeout = self.app[TIMERS]["join_timeout_seconds"]
        try:
            while not self.ws.closed:
                timeout = join_timeout if self.session is None else None
                try:
                    frame = await self.ws.receive(timeout=timeout)
                except asyncio.TimeoutError:
                    await self.send_error("join_timeout", "send join first")
                    await self.close(CLOSE_JOIN_TIMEOUT, "join_timeout")
                    break
                if frame.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                    break
                if frame.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    continue
                await self.on_frame(frame.data)
        finally:
            await self.on_disconnect()

    async def on_frame(self, data: str | bytes) -> None:
        try:
            msg = parse_client_message(data)
        except ProtocolError as e:
            await self.send_json(error_message(e.code, e.message, msg_id=e.msg_id, msg_type=e.msg_type))
            return
        if msg.type == "ping":
            await self.send_json(server_message("pong", **({"id": msg.id} if msg.id is not None else {})))
            return
        if self.session is None and msg.type not in BEFORE_JOIN:
            await self.send_error("not_joined", "send join first", msg)
            return
        if self.session is not None and msg.type == "join":
            await self.send_error("already_joined", "this connection has joined already", msg)
            return
        if msg.type == "join":
            await self.on_join(msg)
            return
        assert self.session is not None
        role = self.session.grant.role
        if msg.type in CHAIR_ONLY and role != "chair":
            await self.send_error("forbidden", f"only the chair may send {msg.type}", msg,
                                  message_vi="Chỉ điểm cầu chủ trì được dùng chức năng này")
            return
        if msg.type in OBSERVER_FORBIDDEN and role == "observer":
            await self.send_error("forbidden", f"an observer may not send {msg.type}", msg,
                                  message_vi="Người theo dõi không được dùng chức năng này")
            return
        try:
            await MEDIA_HANDLERS[msg.type](self, self.session, msg)
        except MediaRefusal as e:
            await self.send_error(e.code, e.message, msg)
        except Exception:
            log.exception("signalling message failed", extra={"type": msg.type, "site": self.session.grant.site_id})
            await self.send_error("server_error", "the server could not do this; try again", msg)

    async def on_join(self, msg: ClientMessage) -> None:
        self.lang = msg.get("lang") or self.lang
        resolver = self.app[keys.JOIN_RESOLVER]
        try:
            grant = await resolver.resolve(msg.get("token"), pin=msg.get("pin"), now=dt.datetime.now(dt.UTC))
        except JoinRefused as e:
            await self.send_json(server_message("refused", code=e.code, message=e.message(self.lang),
                                                message_vi=e.message_vi, message_en=e.message_en))
            await self.close(CLOSE_REFUSED, e.code)
            return
        sessions = self.app[SESSIONS]
        earlier = sessions.find(msg.get("resume"))
        if earlier is not None and earlier.grant.link_id == grant.link_id and not earlier.left:
            await self.resume(earlier, msg)
            return
        await media_join(self, grant, msg)

    async def resume(self, session: RoomSession, msg: ClientMessage) -> None:
        previous = session.connection
        self.app[SESSIONS].attach(session, self)
        self.session = session
        if previous is not None and previous is not self and isinstance(previous, SignallingConnection):
            previous.session = None
            await previous.close(CLOSE_REPLACED, "replaced")
        log.info("site reconnected", extra={"site": session.grant.site_id, "room": session.grant.room_id})
        await media_resume(self, session, msg)

    async def on_disconnect(self) -> None:
        self.app[CONNECTIONS].discard(self)
        session, self.session = self.session, None
        if session is None or session.left:
            return
        if session.connection is self:
            self.app[SESSIONS].detach(session)


class MediaRefusal(Exception):
    """The SFU declined a request (a stale site id, a locked meeting...)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


async def meeting_socket(request: web.Request) -> web.WebSocketResponse:
    timers = request.app[TIMERS]
    ws = web.WebSocketResponse(heartbeat=timers["heartbeat_seconds"], max_msg_size=512 * 1024)
    await ws.prepare(request)
    connection = SignallingConnection(request, ws)
    request.app[CONNECTIONS].add(connection)
    await connection.run()
    return ws


# ---- media bridge: everything below speaks to media.MediaService's public face ----

# MediaError codes -> the error codes of docs/signalling.md
_MEDIA_CODES = {"no_such_participant": "unknown_site", "not_chair": "forbidden", "observer": "forbidden",
                "left": "not_joined", "bad_sdp": "bad_field", "bad_candidate": "bad_field"}
# A join the SFU refuses (the token was fine): said to the person like a refused token.
_JOIN_REFUSALS = {
    "locked": ("Chủ trì đã khóa cuộc họp, không nhận thêm điểm cầu.",
               "The chair has locked the meeting: no more sites can join."),
    "ended": ("Cuộc họp đã kết thúc.", "The meeting has ended."),
}


def media_available(app: web.Application) -> bool:
    """Whether ``app[keys.MEDIA]`` offers the SFU's public face (``join_room`` and friends); without
    it a granted join is answered with ``media_unavailable`` and nothing is allocated."""
    return callable(getattr(app[keys.MEDIA], "join_room", None))


def _event_sender(conn: SignallingConnection) -> Any:
    """The participant's event sink: media events as protocol messages on this WebSocket; a
    ``closed`` event (removed, ended) ends the session and closes the socket."""
    async def send(event: dict[str, Any]) -> None:
        await conn.send_json(server_message(event["type"], **{k: v for k, v in event.items() if k != "type"}))
        if event["type"] == "closed" and event.get("reason") in ("removed", "ended"):
            session, conn.session = conn.session, None
            if session is not None:
                conn.app[SESSIONS].remove(session)
            await conn.close(CLOSE_REMOVED if event["reason"] == "removed" else CLOSE_ENDED, event["reason"])
    return send


def _joined(conn: SignallingConnection, session: RoomSession, resumed: bool) -> dict[str, Any]:
    p = session.participant
    return server_message("joined", resume=session.resume_key, resumed=resumed, me=p.me(),
                          meeting_title=getattr(session.grant, "meeting_title", ""),
                          ice_servers=conn.app[keys.MEDIA].ice_servers(), layout=p.layout(), **p.snapshot())


async def media_join(conn: SignallingConnection, grant: Any, msg: ClientMessage) -> None:
    if not media_available(conn.app):
        await conn.send_error("media_unavailable", "the meeting server's media service is not available",
                              msg, message_vi="Dịch vụ hình ảnh, âm thanh của máy chủ họp chưa sẵn sàng")
        await conn.close(1011, "media_unavailable")
        return
    import media  # the public face only

    try:
        p = await conn.app[keys.MEDIA].join_room(room_id=grant.room_id, site_id=grant.site_id,
                                                 site_name=grant.site_name, role=grant.role,
                                                 on_event=_event_sender(conn))
    except media.MediaError as e:
        vi, en = _JOIN_REFUSALS.get(e.code, ("Không vào được cuộc họp.", e.message))
        await conn.send_json(server_message("refused", code=e.code, message=vi if conn.lang == "vi" else en,
                                            message_vi=vi, message_en=en))
        await conn.close(CLOSE_REFUSED, e.code)
        return
    session = RoomSession(grant, p)
    conn.app[SESSIONS].add(session, conn)
    conn.session = session
    log.info("site joined", extra={"site": grant.site_id, "room": grant.room_id, "participant": p.id})
    await conn.send_json(_joined(conn, session, False))


async def media_resume(conn: SignallingConnection, session: RoomSession, msg: ClientMessage) -> None:
    session.participant.set_event_sink(_event_sender(conn))
    await conn.send_json(_joined(conn, session, True))


async def media_leave(session: RoomSession) -> None:
    """The grace period ran out: the site leaves for good."""
    await session.participant.leave()


async def _offer(conn: SignallingConnection, session: RoomSession, msg: ClientMessage) -> None:
    sdp = await session.participant.answer(msg.get("sdp"))
    await conn.send_json(server_message("answer", sdp=sdp))


async def _ice(conn: SignallingConnection, session: RoomSession, msg: ClientMessage) -> None:
    await session.participant.add_ice_candidate(msg.get("candidate"))


async def _leave(conn: SignallingConnection, session: RoomSession, msg: ClientMessage) -> None:
    await session.participant.leave()
    conn.app[SESSIONS].remove(session)
    conn.session = None
    await conn.send_json(server_message("closed", reason="left", message=""))
    await conn.close(CLOSE_LEFT, "left")


async def _answer(conn: SignallingConnection, session: RoomSession, msg: ClientMessage) -> None:
    raise MediaRefusal("bad_field", "the server makes no offers: send an offer, it answers")


async def _media_state(conn: SignallingConnection, session: RoomSession, msg: ClientMessage) -> None:
    await session.participant.set_media_state(msg.get("audio"), msg.get("video"), msg.get("screen"))


async def _hand(conn: SignallingConnection, session: RoomSession, msg: ClientMessage) -> None:
    await session.participant.raise_hand(msg.get("raised"))


async def _give_floor(conn: SignallingConnection, session: RoomSession, msg: ClientMessage) -> None:
    await session.participant.set_floor(msg.get("site"))


async def _take_floor(conn: SignallingConnection, session: RoomSession, msg: ClientMessage) -> None:
    await session.participant.set_floor(None)


async def _mute_site(conn: SignallingConnection, session: RoomSession, msg: ClientMessage) -> None:
    muted = msg.get("muted")
    await session.participant.mute_site(msg.get("site"), True if muted is None else muted)


async def _remove_site(conn: SignallingConnection, session: RoomSession, msg: ClientMessage) -> None:
    await session.participant.remove_site(msg.get("site"))


async def _lock(conn: SignallingConnection, session: RoomSession, msg: ClientMessage) -> None:
    await session.participant.lock(msg.get("locked"))


async def _end(conn: SignallingConnection, session: RoomSession, msg: ClientMessage) -> None:
    await session.participant.end()


def _media_call(handler: Any) -> Any:
    """A MediaError from the SFU becomes an ``error`` with the protocol's code."""
    async def call(conn: SignallingConnection, session: RoomSession, msg: ClientMessage) -> None:
        import media

        try:
            await handler(conn, session, msg)
        except media.MediaError as e:
            raise MediaRefusal(_MEDIA_CODES.get(e.code, e.code), e.message) from None
    return call


MEDIA_HANDLERS: dict[str, Any] = {t: _media_call(h) for t, h in {
    "offer": _offer, "answer": _answer, "ice": _ice, "leave": _leave, "media_state": _media_state,
    "hand": _hand, "give_floor": _give_floor, "take_floor": _take_floor, "mute_site": _mute_site,
    "remove_site": _remove_site, "lock": _lock, "end": _end}.items()}
assert set(MEDIA_HANDLERS) == {"offer", "answer", "ice", "leave", "media_state", "hand", *CHAIR_ONLY}


# ---- setup and shutdown ----

async def _close_all(app: web.Application) -> None:
    """Server shutdown: every page learns why its WebSocket closes."""
    connections: set[SignallingConnection] = app[CONNECTIONS]
    for conn in list(connections):
        await conn.send_json(server_message("closed", reason="server_closing",
                                            message=load_catalog(conn.lang)["meeting.server_closing"]))
        await conn.close(CLOSE_SERVER_CLOSING, "server_closing")


async def _sessions_ctx(app: web.Application):  # type: ignore[no-untyped-def]
    app[SESSIONS] = RoomSessions(app[TIMERS]["grace_seconds"], media_leave)
    yield
    await app[SESSIONS].stop()


def setup(app: web.Application, timers: dict[str, float] | None = None) -> None:
    app[TIMERS] = {**DEFAULT_TIMERS, **(timers or {})}
    app[CONNECTIONS] = set()
    app[TEMPLATES] = jinja2.Environment(loader=jinja2.FileSystemLoader(WEB_DIR / "templates"),
                                        autoescape=jinja2.select_autoescape(["html"]))
    app.router.add_get("/m/{token}", meeting_page, name="meeting_room")
    app.router.add_get(WS_PATH, meeting_socket, name="meeting_socket")
    if "static" not in app.router.named_resources():
        # The panel serves web/static when its framework is in place; until then, we do.
        app.router.add_static("/m-static/", WEB_DIR / "static", name="meeting_static")
    app.on_shutdown.append(_close_all)
    app.cleanup_ctx.append(_sessions_ctx)
