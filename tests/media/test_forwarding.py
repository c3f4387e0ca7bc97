"""The SFU's forwarding path through media's public face, with real aiortc peers on 127.0.0.1:
each site offers the layout, publishes hand-built VP8/Opus RTP (no codec anywhere) and records
what arrives in each slot.  Deadlines, never timed assertions."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import media
from tests.media.sfu_client import Pump, Site, complete


class Inbox:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.changed = asyncio.Event()

    async def __call__(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self.changed.set()

    async def wait_for(self, predicate: Any, timeout: float = 10) -> dict[str, Any]:
        async def wait() -> dict[str, Any]:
            while True:
                for e in reversed(self.events):
                    if predicate(e):
                        return e
                self.changed.clear()
                await self.changed.wait()
        return await asyncio.wait_for(wait(), timeout)


class Member:
    site: Site

    def __init__(self, participant: media.Participant, inbox: Inbox, site: Site):
        self.p, self.inbox, self.site = participant, inbox, site

    @property
    def id(self) -> str:
        return self.p.id


async def join(service: media.MediaService, name: str, role: str = "site", fill: int = 0, room: str = "r",
               video_codec: str = "vp8") -> Member:
    inbox = Inbox()
    p = await service.join_room(room_id=room, site_id=name, site_name=name, role=role, on_event=inbox)  # type: ignore[arg-type]
    site = Site(p.layout(), fill=fill, video_codec=video_codec)
    await site.connect(p.answer)
    return Member(p, inbox, site)


def continuous(seqs: list[int]) -> bool:
    """No gap in a slot's sequence numbers (lost packets, if any, came back by NACK/RTX)."""
    return complete(seqs)


async def close_all(*members: Member) -> None:
    for m in members:
        await m.site.close()


async def test_slots_carry_other_sites_with_continuous_streams(send_path: str, service: media.MediaService) -> None:
    chair = await join(service, "hn", "chair", fill=1)
    a = await join(service, "hue", fill=2)
    b = await join(service, "dn", fill=3)
    try:
        slots = b.p.snapshot()["slots"]
        assert slots["chair"] == chair.id and slots["main"] == a.id
        async with Pump([chair.site, a.site, b.site]):
            await b.site.until(lambda: len(b.site.received["main"].packets) >= 40
                               and len(b.site.received["chair"].packets) >= 40
                               and len(b.site.received["audio-0"].packets) >= 20)
        main = b.site.received["main"].packets
        assert set(b.site.fills("main")) == {2} and set(b.site.fills("chair")) == {1}
        # the server's own SSRC for that m-line, continuous seq, the subscriber's payload type
        main_line = b.site.lines[1]
        assert {p[0] for p in main} == set(main_line.remote_ssrcs)
        assert continuous([p[1] for p in main])
        assert {p[3] for p in main} == {main_line.codec("vp8").payload_type}  # type: ignore[union-attr]
        # the first forwarded video packet is a keyframe's first packet
        assert main[0][4][4:7] == b"\x10\x02\x00"
        # each site hears the others, never itself
        heard = set(b.site.fills("audio-0")) | set(b.site.fills("audio-1"))
        assert heard == {1, 2}
        assert 1 not in set(chair.site.fills("audio-0")) | set(chair.site.fills("audio-1"))
        assert service._m_forwarded.labels(kind="video")._value.get() >= 0  # counters exist
        # the path under test carried the packets (the C sender, or none of it)
        peer = service._forwarders["r"].endpoint(b.id).peer  # type: ignore[union-attr]
        assert peer.tx_packets >= len(main)
        if send_path == "compiled":
            assert peer._compiled is not None and peer._compiled.sent >= len(main)
        else:
            assert peer._compiled is None and peer.send_rewritten is None
    finally:
        await close_all(chair, a, b)


async def test_floor_switch_moves_main_slot_and_asks_the_new_source_for_a_keyframe(send_path: str, service: media.MediaService) -> None:
    chair = await join(service, "hn", "chair", fill=1)
    a = await join(service, "hue", fill=2)
    b = await join(service, "dn", fill=3)
    c = await join(service, "ct", fill=4)
    try:
        async with Pump([chair.site, a.site, b.site, c.site]):
            await chair.p.set_floor(b.id)
            await c.inbox.wait_for(lambda e: e["type"] == "slots" and e["slots"]["main"] == b.id)
            await c.site.until(lambda: 3 in c.site.fills("main"))
            plis_before = a.site.plis.get("camera", 0)
            await chair.p.set_floor(a.id)
            await c.inbox.wait_for(lambda e: e["type"] == "slots" and e["slots"]["main"] == a.id)
            await a.site.until(lambda: a.site.plis.get("camera", 0) > plis_before)
            await c.site.until(lambda: c.site.fills("main")[-1:] == [2])
            await c.site.until(lambda: c.site.fills("main").count(2) >= 10)
        fills = c.site.fills("main")
        switch = fills.index(2, fills.index(3))
        after = c.site.received["main"].packets[switch]
        assert after[4][4:7] == b"\x10\x02\x00", "the switch did not happen on a keyframe"
        seqs = c.site.received["main"].seqs()
        assert continuous(seqs), "sequence numbers jump across the switch"
        ts = [p[2] for p in c.site.received["main"].packets]
        assert all(((t2 - t1) & 0xFFFFFFFF) < 0x80000000 for t1, t2 in zip(ts, ts[1:]))
        assert len({p[0] for p in c.site.received["main"].packets}) == 1
        # VP8 PictureID continuous in the slot (15-bit, +1 per frame) across the switch
        first = seqs[0]
        in_order = sorted(c.site.received["main"].packets, key=lambda p: (p[1] - first) & 0xFFFF)
        pids = [((p[4][2] & 0x7F) << 8) | p[4][3] for p in in_order if p[4][0] & 0x10]
        assert all((y - x) & 0x7FFF == 1 for x, y in zip(pids, pids[1:]))
    finally:
        await close_all(chair, a, b, c)


async def test_a_muted_site_is_not_heard(service: media.MediaService) -> None:
    chair = await join(service, "hn", "chair", fill=1)
    a = await join(service, "hue", fill=2)
    b = await join(service, "dn", fill=3)
    try:
        def heard_by_b() -> list[int]:
            return b.site.fills("audio-0") + b.site.fills("audio-1")

        async with Pump([chair.site, a.site, b.site], video=False):
            await b.site.until(lambda: 2 in heard_by_b() and 1 in heard_by_b())
            await chair.p.mute_site(a.id)
            await a.inbox.wait_for(lambda e: e["type"] == "muted" and e["muted"])
            before_a = heard_by_b().count(2)
            before_chair = heard_by_b().count(1)
            await b.site.until(lambda: heard_by_b().count(1) >= before_chair + 30)
            assert heard_by_b().count(2) == before_a, "a muted site's audio was forwarded"
            await chair.p.mute_site(a.id, False)
            await b.site.until(lambda: heard_by_b().count(2) > before_a)
    finally:
        await close_all(chair, a, b)


async def test_a_subscriber_that_stops_reading_does_not_stop_the_others(send_path: str, service: media.MediaService) -> None:
    chair = await join(service, "hn", "chair", fill=1)
    a = await join(service, "hue", fill=2)
    b = await join(service, "dn", fill=3)
    try:
        async with Pump([chair.site, a.site]):
            await b.site.until(lambda: len(b.site.received["main"].packets) >= 10)
            # b's socket stops reading: its kernel buffer fills, the SFU keeps sending
            pair = b.site.pc.getTransceivers()[0].receiver.transport.transport._connection._nominated[1]
            pair.protocol.transport.pause_reading()
            got = len(chair.site.received["main"].packets)
            await chair.site.until(lambda: len(chair.site.received["main"].packets) >= got + 200)
            pair.protocol.transport.resume_reading()
    finally:
        await close_all(chair, a, b)


async def test_leave_removes_the_site_and_its_media(service: media.MediaService) -> None:
    chair = await join(service, "hn", "chair", fill=1)
    a = await join(service, "hue", fill=2)
    b = await join(service, "dn", fill=3)
    try:
        async with Pump([chair.site, a.site, b.site]):
            await b.site.until(lambda: 2 in b.site.fills("main"))
            await a.p.leave()
            await b.inbox.wait_for(lambda e: e["type"] == "participants" and a.id not in [p["id"] for p in e["participants"]])
            slots = await b.inbox.wait_for(lambda e: e["type"] == "slots")
            assert a.id not in slots["slots"].values()
            forwarder = service._forwarders["r"]
            assert forwarder.endpoint(a.id) is None
            assert a.id not in b.p.snapshot()["slots"].values()
        # the SFU closed a's connection (DTLS close_notify reaches the client)
        await a.site.until(lambda: not a.site.peer.connected)
    finally:
        await close_all(chair, a, b)


async def test_removal_and_the_end_of_the_meeting_close_the_connections(service: media.MediaService) -> None:
    chair = await join(service, "hn", "chair", fill=1)
    a = await join(service, "hue", fill=2)
    b = await join(service, "dn", fill=3)
    try:
        async with Pump([chair.site, a.site, b.site]):
            await b.site.until(lambda: 1 in b.site.fills("chair"))
            await chair.p.remove_site(a.id)
            await a.site.until(lambda: not a.site.peer.connected)
            assert {"type": "closed", "reason": "removed", "participant": a.id} in a.inbox.events
            await chair.p.end()
            await b.site.until(lambda: not b.site.peer.connected)
            await chair.site.until(lambda: not chair.site.peer.connected)
        assert service.room_state("r") is None and "r" not in service._forwarders
    finally:
        await close_all(chair, a, b)


async def test_reconnect_with_a_new_offer_keeps_the_place(service: media.MediaService) -> None:
    chair = await join(service, "hn", "chair", fill=1)
    a = await join(service, "hue", fill=2)
    try:
        await chair.p.set_floor(a.id)
        async with Pump([chair.site, a.site]):
            await chair.site.until(lambda: 2 in chair.site.fills("main"))
        await a.site.close()                      # the network dropped
        new_site = Site(a.p.layout(), fill=2)
        await new_site.connect(a.p.answer)        # same Participant: same place
        a.site = new_site
        assert a.p.snapshot()["floor"] == a.id and service.room_state("r")["floor"] == a.id  # type: ignore[index]
        got = len(chair.site.received["main"].packets)
        async with Pump([chair.site, a.site]):
            await chair.site.until(lambda: len(chair.site.received["main"].packets) >= got + 20)
            await a.site.until(lambda: 1 in a.site.fills("chair"))
        assert continuous(chair.site.received["main"].seqs()), "the chair's main slot jumped on reconnect"
    finally:
        await close_all(chair, a)


async def test_ice_restart_on_the_same_connection_keeps_streams_continuous(send_path: str, service: media.MediaService) -> None:
    chair = await join(service, "hn", "chair", fill=1)
    a = await join(service, "hue", fill=2)
    try:
        endpoint = service._forwarders["r"].endpoint(a.id)
        async with Pump([chair.site, a.site]):
            await a.site.until(lambda: 1 in a.site.fills("chair"))
            await a.site.restart_ice(a.p.answer)
            assert service._forwarders["r"].endpoint(a.id) is endpoint  # same connection, same streams
            got_a, got_chair = len(a.site.received["chair"].packets), len(chair.site.received["main"].packets)
            await a.site.until(lambda: len(a.site.received["chair"].packets) >= got_a + 20)
            await chair.site.until(lambda: len(chair.site.received["main"].packets) >= got_chair + 20)
        assert continuous(a.site.received["chair"].seqs()) and continuous(chair.site.received["main"].seqs())
    finally:
        await close_all(chair, a)


async def test_h264_from_a_site_that_insists_reaches_the_others_in_their_payload_type(service: media.MediaService) -> None:
    chair = await join(service, "hn", "chair", fill=1)
    a = await join(service, "hue", fill=2, video_codec="h264")
    b = await join(service, "dn", fill=3)
    try:
        assert [c.name for c in a.site.line("camera").codecs if c.name != "rtx"] == ["h264"] * len(
            [c for c in a.site.line("camera").codecs if c.name != "rtx"])
        await chair.p.set_floor(a.id)
        async with Pump([chair.site, a.site, b.site]):
            await b.site.until(lambda: b.site.fills("main").count(2) >= 10)
        main = b.site.received["main"].packets
        h264_pts = {c.payload_type for c in b.site.slot_line("main").codecs if c.name == "h264"}
        assert {p[3] for p in main} <= h264_pts
        assert main[0][4][0] & 0x1F == 24 and main[0][4][3] & 0x1F == 7, "the slot did not start on SPS/PPS/IDR"
        assert continuous(b.site.received["main"].seqs())
    finally:
        await close_all(chair, a, b)


async def poll(predicate: Any, timeout: float = 10.0) -> None:
    """Poll internal state that has no event of its own, with a deadline."""
    async def wait() -> None:
        while not predicate():
            await asyncio.sleep(0.05)
    await asyncio.wait_for(wait(), timeout)


async def test_a_dead_connection_is_dropped_and_the_place_kept(service: media.MediaService) -> None:
    chair = await join(service, "hn", "chair", fill=1)
    a = await join(service, "hue", fill=2)
    try:
        forwarder = service._forwarders["r"]
        async with Pump([chair.site, a.site]):
            await chair.site.until(lambda: 2 in chair.site.fills("main"))
            await a.site.close()                  # the page closed its peer connection
            await poll(lambda: forwarder.endpoint(a.id) is None)
            assert a.id in [m["id"] for m in service.room_state("r")["members"]]  # type: ignore[index]
        a.site = Site(a.p.layout(), fill=2)       # the page comes back with a new connection
        await a.site.connect(a.p.answer)
        chair_got = len(chair.site.received["main"].packets)
        async with Pump([chair.site, a.site]):
            await a.site.until(lambda: 1 in a.site.fills("chair"))
            await chair.site.until(lambda: len(chair.site.received["main"].packets) >= chair_got + 10)
    finally:
        await close_all(chair, a)


async def test_bad_offers_are_refused_and_nothing_leaks(service: media.MediaService) -> None:
    p = await service.join_room(room_id="x", site_id="a", site_name="A", role="site", on_event=Inbox())
    with pytest.raises(media.MediaError) as err:
        await p.answer("v=0")
    assert err.value.code == "bad_sdp"
    wrong = Site([{"kind": "video", "send": None, "slot": "main"}])
    try:
        with pytest.raises(media.MediaError) as err:
            await wrong.connect(p.answer)
        assert err.value.code == "bad_sdp"
    finally:
        await wrong.close()
    with pytest.raises(media.MediaError) as err:
        await p.add_ice_candidate({"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "sdpMid": "0"})
    assert err.value.code == "bad_candidate"
    assert service._forwarders["x"].endpoint(p.id) is None
