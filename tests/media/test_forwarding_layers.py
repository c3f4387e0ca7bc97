"""Paused layers: a publisher's camera or thumbnail layer that feeds nobody's slot is reported
paused after a hold (the page stops encoding it) and resumed at once when a slot needs it.
The hold itself on plain values; the events over real aiortc peers through media's public face."""

from __future__ import annotations

from typing import Any

import pytest

import media
from media import forwarder
from media.forwarder import PAUSE_HOLD, Source
from media.rtc_adapter import MLine
from tests.media.test_forwarding import close_all, join
from tests.media.sfu_client import Pump


def video_source() -> Source:
    line = MLine(index=1, mid="1", kind="video", direction="sendrecv", local_ssrc=1, local_rtx_ssrc=2,
                 remote_ssrcs=(5,), remote_rtx={}, codecs=(), extensions={})
    return Source(None, "camera", line)  # type: ignore[arg-type]  # the endpoint is not used here


def test_a_layer_is_paused_after_the_hold_and_resumed_at_once() -> None:
    source = video_source()
    receiver: Any = object()
    source.outs.append(receiver)
    assert source.update_pause(0.0) is False and not source.paused
    source.outs.clear()                                   # the last receiver switched away at t=10
    assert source.update_pause(10.0) is False
    assert source.update_pause(10.0 + PAUSE_HOLD / 2) is False and not source.paused
    assert source.update_pause(10.0 + PAUSE_HOLD) is True and source.paused
    assert source.update_pause(99.0) is False and source.paused   # reported once
    source.outs.append(receiver)
    assert source.update_pause(99.1) is True and not source.paused


def test_a_receiver_back_within_the_hold_restarts_it() -> None:
    source = video_source()
    receiver: Any = object()
    assert source.update_pause(0.0) is False                  # idle from t=0
    source.outs.append(receiver)
    assert source.update_pause(PAUSE_HOLD * 0.9) is False     # back before the hold ran out
    source.outs.clear()
    assert source.update_pause(PAUSE_HOLD * 1.1) is False     # idle again: the hold starts over
    assert not source.paused
    assert source.update_pause(PAUSE_HOLD * 2.2) is True and source.paused


def test_a_paused_layer_keeps_its_last_bitrate() -> None:
    source = video_source()
    source.octets = 125_000
    source.report(1.0, 1.0)
    assert source.bitrate == 1_000_000
    source.paused = True
    source.report(2.0, 1.0)                  # nothing arrived: the layer is paused, not free
    assert source.bitrate == 1_000_000
    source.paused = False
    source.report(3.0, 1.0)
    assert source.bitrate == 0


@pytest.fixture
def short_hold(monkeypatch: pytest.MonkeyPatch) -> float:
    hold = 0.3
    monkeypatch.setattr(forwarder, "PAUSE_HOLD", hold)
    return hold


async def test_unwatched_layers_are_paused_and_come_back_when_a_slot_needs_them(
        service: media.MediaService, short_hold: float) -> None:
    # Two gallery slots, three participants, everyone silent (no speaker moves slots).  The
    # chair's main slot shows a (the first site), its gallery b's thumbnail; a keeps the chair in
    # its main slot (it was there before b came), b shows a.  So nobody receives a's or the
    # chair's thumbnail, nor b's camera.
    chair = await join(service, "hn", "chair", fill=1)
    a = await join(service, "hue", fill=2)
    b = await join(service, "dn", fill=3)
    silent = {m.site: 127 for m in (chair, a, b)}
    try:
        async with Pump([chair.site, a.site, b.site], audio_levels=silent):
            await a.inbox.wait_for(lambda e: e == {"type": "layers", "paused": ["thumb"]})
            await chair.inbox.wait_for(lambda e: e == {"type": "layers", "paused": ["thumb"]})
            await b.inbox.wait_for(lambda e: e == {"type": "layers", "paused": ["camera"]})
            assert [m.p.snapshot()["paused"] for m in (chair, a, b)] == [["thumb"], ["thumb"], ["camera"]]
            # The floor to b: every main slot shows b's camera (resumed), the chair's gallery a's
            # thumbnail (resumed, and it arrives); b's thumbnail now feeds nobody.
            await chair.p.set_floor(b.id)
            await b.inbox.wait_for(lambda e: e == {"type": "layers", "paused": []})
            await a.inbox.wait_for(lambda e: e == {"type": "layers", "paused": []})
            await chair.site.until(lambda: 2 in chair.site.fills("gallery-0") + chair.site.fills("gallery-1"))
            await chair.site.until(lambda: 3 in chair.site.fills("main"))
            await b.inbox.wait_for(lambda e: e == {"type": "layers", "paused": ["thumb"]})
            assert [m.p.snapshot()["paused"] for m in (chair, a, b)] == [["thumb"], [], ["thumb"]]
    finally:
        await close_all(chair, a, b)


async def test_a_site_alone_pauses_both_layers_and_resumes_them_for_a_newcomer(
        service: media.MediaService, short_hold: float) -> None:
    chair = await join(service, "hn", "chair", fill=1)
    try:
        async with Pump([chair.site]):
            await chair.inbox.wait_for(lambda e: e == {"type": "layers", "paused": ["camera", "thumb"]})
            a = await join(service, "hue", fill=2)   # its chair slot shows the chair's camera
            try:
                await chair.inbox.wait_for(lambda e: e == {"type": "layers", "paused": ["thumb"]})
                async with Pump([a.site]):
                    await a.site.until(lambda: 1 in a.site.fills("chair"))
            finally:
                await close_all(a)
    finally:
        await close_all(chair)
