"""Baseline peer for ``bench.sfu``: aiortc's stock ``MediaRelay`` doing the SFU's job.

Runs in its own process (so its CPU is measured alone): an aiohttp signalling endpoint on
127.0.0.1 port 0; publishers POST an offer to /publish, subscribers POST one to /subscribe/<n>
and get the n-th publisher's video relayed (decoded once, re-encoded per subscriber).
"""

from __future__ import annotations

import asyncio
import multiprocessing.connection
import os

from aiohttp import web
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay

PUBLISHERS: web.AppKey[list[MediaStreamTrack]] = web.AppKey("publishers", list)
PEERS: web.AppKey[list[RTCPeerConnection]] = web.AppKey("peers", list)
RELAY: web.AppKey[MediaRelay] = web.AppKey("relay", MediaRelay)


async def _answer(pc: RTCPeerConnection, body: dict[str, str]) -> web.Response:
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type=body["type"]))
    await pc.setLocalDescription(await pc.createAnswer())
    return web.json_response({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type})


async def publish(request: web.Request) -> web.Response:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    request.app[PEERS].append(pc)
    got = asyncio.get_running_loop().create_future()

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        if track.kind == "video" and not got.done():
            got.set_result(track)

    response = await _answer(pc, await request.json())
    request.app[PUBLISHERS].append(await got)
    return response


async def subscribe(request: web.Request) -> web.Response:
    source = request.app[PUBLISHERS][int(request.match_info["n"])]
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    request.app[PEERS].append(pc)
    pc.addTrack(request.app[RELAY].subscribe(source, buffered=False))
    return await _answer(pc, await request.json())


async def _serve(conn: multiprocessing.connection.Connection) -> None:
    app = web.Application()
    app[PUBLISHERS] = []
    app[PEERS] = []
    app[RELAY] = MediaRelay()
    app.router.add_post("/publish", publish)
    app.router.add_post("/subscribe/{n}", subscribe)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    conn.send(port)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, conn.recv)  # parent says stop
    for pc in app[PEERS]:
        await pc.close()
    await runner.cleanup()


def run(conn: multiprocessing.connection.Connection, cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    asyncio.run(_serve(conn))
