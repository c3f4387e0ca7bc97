"""The signalling WebSocket and the room page against the real server (lienthong.app.Server) on
127.0.0.1 port 0, with meetings and join links made through the real panel API."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import aiohttp

from lienthong.store.web import now_utc
from tests.web.conftest import Running, api, config, running  # noqa: F401  (fixtures)
from tests.web.meeting_helpers import admin_session, create_meeting, link_of, meeting_body


def token_of(url: str) -> str:
    return url.rsplit("/j/", 1)[1]


async def meeting_now(running: Running, **extra: Any) -> dict[str, Any]:
    start = (now_utc() - dt.timedelta(minutes=5)).replace(second=0, microsecond=0)
    return await create_meeting(running, meeting_body(start, **extra))


async def receive(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await ws.receive(timeout=10)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    return json.loads(msg.data)  # type: ignore[no-any-return]


async def test_every_bad_message_gets_an_error_and_the_socket_stays_open(running: Running) -> None:
    async with running.client() as s, s.ws_connect("/ws/meeting") as ws:
        cases = [
            ("not json", "bad_json"),
            (json.dumps({"type": "ping"}), "unsupported_version"),
            (json.dumps({"v": 1, "type": "teleport", "id": 3}), "unknown_type"),
            (json.dumps({"v": 1, "type": "join", "id": 4}), "bad_field"),
            (json.dumps({"v": 1, "type": "hand", "raised": "yes", "id": 5}), "bad_field"),
            (json.dumps({"v": 1, "type": "give_floor", "site": "x", "id": 6}), "not_joined"),
            (json.dumps({"v": 1, "type": "offer", "sdp": "v=0\r\n", "id": 7}), "not_joined"),
        ]
        for text, code in cases:
            await ws.send_str(text)
            reply = await receive(ws)
            assert (reply["v"], reply["type"], reply["code"]) == (1, "error", code), reply
        await ws.send_bytes(b"\x00\x01")
        assert (await receive(ws))["code"] == "bad_frame"
        await ws.send_str(json.dumps({"v": 1, "type": "ping", "id": 9}))
        assert await receive(ws) == {"v": 1, "type": "pong", "id": 9}
        assert not ws.closed


async def test_refused_tokens_get_a_clear_reason_and_a_close(running: Running) -> None:
    created = await meeting_now(running)
    token = token_of(link_of(created, "so-dttg-lao-cai"))
    s = await admin_session(running)
    async with s:
        status, _ = await api(s, "POST", f"/api/meetings/{created['id']}/links/so-dttg-lao-cai/revoke")
        assert status == 200
    async with running.client() as c:
        for bad, code in [("garbage.token", "invalid"), (token, "revoked")]:
            async with c.ws_connect("/ws/meeting") as ws:
                await ws.send_str(json.dumps({"v": 1, "type": "join", "token": bad, "lang": "en"}))
                reply = await receive(ws)
                assert reply["type"] == "refused" and reply["code"] == code, reply
                assert reply["message"] == reply["message_en"] and reply["message_vi"]
                closing = await ws.receive(timeout=10)
                assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 4003
        # The page says so too, without opening a WebSocket.
        async with c.get(f"/m/{token}?lang=vi") as r:
            html = await r.text()
            assert r.status == 403 and '"code": "revoked"' in html and '<main id="room" class="room" hidden>' in html
    app = running.server.web.runner.app  # type: ignore[union-attr]
    from web.signalling import SESSIONS
    assert len(app[SESSIONS]) == 0  # nothing allocated for refused tokens


async def test_room_page_renders_in_both_languages_with_its_assets(running: Running) -> None:
    created = await meeting_now(running)
    token = token_of(link_of(created, "so-dttg-ha-noi"))
    async with running.client() as c:
        async with c.get(f"/m/{token}") as r:
            vi = await r.text()
            assert r.status == 200 and 'lang="vi"' in vi and "Rời cuộc họp" in vi
        async with c.get(f"/m/{token}?lang=en") as r:
            en = await r.text()
            assert r.status == 200 and "Leave the meeting" in en
        config = json.loads(en.split('id="lienthong-config">', 1)[1].split("</script>", 1)[0])
        assert config["token"] == token and config["ws_path"] == "/ws/meeting" and config["refused"] is None
        for asset in ("meeting.js", "meeting.css"):
            src = en.split(asset, 1)[0].rsplit('"', 1)[1] + asset
            async with c.get(src) as r:
                assert r.status == 200, src


async def test_chair_commands_before_join_are_refused(running: Running) -> None:
    async with running.client() as c, c.ws_connect("/ws/meeting") as ws:
        for msg in ({"type": "end"}, {"type": "lock", "locked": True}, {"type": "remove_site", "site": "a"}):
            await ws.send_str(json.dumps({"v": 1, "id": 1, **msg}))
            reply = await receive(ws)
            assert reply["code"] == "not_joined" and reply["ref"] == msg["type"]


async def test_granted_join_without_media_service_allocates_nothing(running: Running) -> None:
    # media/ has not published join/offer/answer yet: the server says so instead of crashing.
    created = await meeting_now(running)
    token = token_of(link_of(created, "so-dttg-son-la"))
    async with running.client() as c, c.ws_connect("/ws/meeting") as ws:
        await ws.send_str(json.dumps({"v": 1, "type": "join", "token": token, "id": 1}))
        reply = await receive(ws)
        assert reply["type"] == "error" and reply["code"] == "media_unavailable" and reply["message_vi"]
        assert (await ws.receive(timeout=10)).type == aiohttp.WSMsgType.CLOSE
    app = running.server.web.runner.app  # type: ignore[union-attr]
    from web.signalling import SESSIONS
    assert len(app[SESSIONS]) == 0


async def test_server_shutdown_closes_sockets_with_a_reason(tmp_path: Any) -> None:
    from lienthong.app import Server
    from tests.web.conftest import make_config

    server = Server(make_config(tmp_path))
    await server.start()
    assert server.web is not None
    try:
        async with aiohttp.ClientSession(server.web.url, connector=aiohttp.TCPConnector(ssl=False)) as c:
            async with c.ws_connect("/ws/meeting") as ws:
                await ws.send_str(json.dumps({"v": 1, "type": "ping"}))
                assert (await receive(ws))["type"] == "pong"
                await server.web.stop(5)
                closed = await receive(ws)
                assert closed["type"] == "closed" and closed["reason"] == "server_closing"
                assert "khởi động lại" in closed["message"]
                final = await ws.receive(timeout=10)
                assert final.type == aiohttp.WSMsgType.CLOSE and final.data == 1001
    finally:
        await server.stop()


async def test_a_socket_that_never_joins_is_closed(running: Running) -> None:
    from web.signalling import TIMERS

    app = running.server.web.runner.app  # type: ignore[union-attr]
    app[TIMERS]["join_timeout_seconds"] = 0.2  # shortened protocol timer, not a sleep
    async with running.client() as c, c.ws_connect("/ws/meeting") as ws:
        reply = await receive(ws)
        assert reply["type"] == "error" and reply["code"] == "join_timeout"
        closing = await ws.receive(timeout=10)
        assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 4008
