"""The signalling WebSocket and the room page against the real server (lienthong.app.Server) on
127.0.0.1 port 0, with meetings and join links made through the real panel API."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from tests.web.conftest import Running, api, config, running  # noqa: F401  (fixtures)
from tests.web.meeting_helpers import admin_session, link_of, meeting_now


def token_of(url: str) -> str:
    return url.rsplit("/j/", 1)[1]


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


class SocketSite:
    """A site speaking the protocol over the real WebSocket, with an aiortc peer (tests.media.sfu_client)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse):
        self.ws = ws
        self.messages: list[dict[str, Any]] = []

    async def send(self, **msg: Any) -> None:
        await self.ws.send_str(json.dumps({"v": 1, **msg}))

    async def next(self, predicate: Any) -> dict[str, Any]:
        for m in self.messages:
            if predicate(m):
                self.messages.remove(m)
                return m
        while True:
            m = await receive(self.ws)
            if predicate(m):
                return m
            self.messages.append(m)

    async def answer(self, sdp: str) -> str:
        await self.send(type="offer", sdp=sdp, id=2)
        reply = await self.next(lambda m: m["type"] in ("answer", "error"))
        assert reply["type"] == "answer", reply
        return reply["sdp"]  # type: ignore[no-any-return]


async def test_sites_join_negotiate_and_get_media_through_signalling(running: Running,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from media import forwarder
    from tests.media.sfu_client import Pump, Site

    monkeypatch.setattr(forwarder, "PAUSE_HOLD", 0.3)

    created = await meeting_now(running)
    sites: list[Site] = []
    async with running.client() as c, c.ws_connect("/ws/meeting") as ws_chair, c.ws_connect("/ws/meeting") as ws_site:
        chair, site = SocketSite(ws_chair), SocketSite(ws_site)
        await chair.send(type="join", token=token_of(link_of(created, "bo-dttg")), lang="en")
        joined_chair = await chair.next(lambda m: m["type"] == "joined")
        await site.send(type="join", token=token_of(link_of(created, "so-dttg-ha-noi")), lang="vi")
        joined_site = await site.next(lambda m: m["type"] == "joined")
        assert joined_chair["me"]["role"] == "chair" and joined_site["me"]["role"] == "site"
        assert [e["slot"] for e in joined_site["layout"][:4]] == ["audio-0", "main", "chair", "screen"]
        assert joined_site["slots"]["chair"] == joined_chair["me"]["id"] and joined_site["ice_servers"] == []
        assert joined_site["paused"] == [] and joined_chair["paused"] == []
        try:
            chair_rtc, site_rtc = Site(joined_chair["layout"], fill=1), Site(joined_site["layout"], fill=2)
            sites += [chair_rtc, site_rtc]
            await chair_rtc.connect(chair.answer)
            await site_rtc.connect(site.answer)
            async with Pump([chair_rtc, site_rtc]):
                await chair_rtc.until(lambda: 2 in chair_rtc.fills("main") and 2 in chair_rtc.fills("audio-0"))
                await site_rtc.until(lambda: 1 in site_rtc.fills("chair"))
            # Two participants: each shows the other's camera, nobody a thumbnail (no gallery has
            # anyone to show): both are asked to pause it.
            for who in (chair, site):
                assert await who.next(lambda m: m["type"] == "layers") == {"v": 1, "type": "layers", "paused": ["thumb"]}
            # chair controls go through to the SFU; a stale site id is named as such
            site_id = joined_site["me"]["id"]
            await chair.send(type="give_floor", site=site_id)
            assert (await site.next(lambda m: m["type"] == "floor")) == {"v": 1, "type": "floor", "participant": site_id}
            await chair.send(type="mute_site", site="nobody", id=7)
            err = await chair.next(lambda m: m["type"] == "error")
            assert err["code"] == "unknown_site" and err["id"] == 7
            await site.send(type="give_floor", site=site_id, id=8)
            assert (await site.next(lambda m: m["type"] == "error"))["code"] == "forbidden"
            await site.send(type="ice", candidate={"candidate": "candidate:1 1 udp 1 x.local 9 typ host", "sdpMid": "0"})
            await site.send(type="offer", sdp="v=0\r\n", id=9)
            err = await site.next(lambda m: m["type"] == "error")
            assert err["code"] == "bad_field" and err["ref"] == "offer"
            # leaving: the site is told, its socket closes 4006, the chair sees it go
            await site.send(type="leave")
            assert (await site.next(lambda m: m["type"] == "closed"))["reason"] == "left"
            assert (await ws_site.receive(timeout=10)).data == 4006
            await chair.next(lambda m: m["type"] == "participants" and site_id not in [p["id"] for p in m["participants"]])
            await site_rtc.until(lambda: not site_rtc.peer.connected)
        finally:
            for s in sites:
                await s.close()
    app = running.server.web.runner.app  # type: ignore[union-attr]
    from web.signalling import SESSIONS
    # the site's place is gone; the chair's socket merely dropped: its place is held (grace period)
    assert app[SESSIONS].find(joined_site["resume"]) is None
    assert app[SESSIONS].find(joined_chair["resume"]) is not None


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
