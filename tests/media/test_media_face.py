"""The media public face: joining, events, chair controls, leave (no media path yet)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import media
from lienthong.config import Config
from media.room import Member, Room


class Inbox:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.changed = asyncio.Event()

    async def __call__(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self.changed.set()

    async def wait_for(self, predicate: Any) -> dict[str, Any]:
        while True:
            for e in self.events:
                if predicate(e):
                    return e
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 5)


@pytest.fixture
async def service():
    s = media.MediaService(Config(), CollectorRegistry())
    await s.start()
    yield s
    await s.stop(1.0)


async def test_layout_and_chair_controls(service: media.MediaService) -> None:
    chair_box, site_box = Inbox(), Inbox()
    chair = await service.join_room(room_id="r1", site_id="hn", site_name="Hà Nội", role="chair", on_event=chair_box)
    site = await service.join_room(room_id="r1", site_id="hue", site_name="Huế", role="site", on_event=site_box)
    layout = site.layout()
    assert [e["slot"] for e in layout[:4]] == ["audio-0", "main", "chair", "screen"]
    assert len(layout) == 4 + 6 + 2
    assert all(e["send"] is None for e in (await service.join_room(
        room_id="r1", site_id="obs", site_name="Obs", role="observer", on_event=Inbox())).layout())
    await chair.set_floor(site.id)
    await site_box.wait_for(lambda e: e == {"type": "floor", "participant": site.id})
    assert site.snapshot()["floor"] == site.id
    with pytest.raises(media.MediaError) as err:
        await site.set_floor(None)
    assert err.value.code == "not_chair"
    await chair.mute_site(site.id)
    await site_box.wait_for(lambda e: e["type"] == "muted" and e["muted"])
    await chair.lock(True)
    with pytest.raises(media.MediaError) as err:
        await service.join_room(room_id="r1", site_id="dn", site_name="Đà Nẵng", role="site", on_event=Inbox())
    assert err.value.code == "locked"
    await chair.remove_site(site.id)
    assert {"type": "closed", "reason": "removed", "participant": site.id} in site_box.events
    await chair_box.wait_for(lambda e: e["type"] == "participants"
                             and site.id not in [p["id"] for p in e["participants"]])
    await chair.end()
    assert {"type": "closed", "reason": "ended"} in chair_box.events
    assert service.room_state("r1") is None


async def test_hands_and_leave(service: media.MediaService) -> None:
    chair_box = Inbox()
    chair = await service.join_room(room_id="r2", site_id="hn", site_name="HN", role="chair", on_event=chair_box)
    site = await service.join_room(room_id="r2", site_id="hue", site_name="Huế", role="site", on_event=Inbox())
    await site.raise_hand(True)
    await chair_box.wait_for(lambda e: e == {"type": "hands", "queue": [site.id]})
    await chair.set_floor(site.id)  # answers the hand
    await chair_box.wait_for(lambda e: e == {"type": "hands", "queue": []})
    await site.leave()
    await site.leave()
    await chair_box.wait_for(lambda e: e == {"type": "floor", "participant": None})
    with pytest.raises(media.MediaError):
        await site.raise_hand(True)
    await chair.leave()
    assert service.room_state("r2") is None


async def test_a_malformed_offer_is_reported(service: media.MediaService) -> None:
    p = await service.join_room(room_id="r3", site_id="a", site_name="A", role="site", on_event=Inbox())
    with pytest.raises(media.MediaError) as err:
        await p.answer("v=0")
    assert err.value.code == "bad_sdp"


def test_room_state_round_trips() -> None:
    room = Room("r")
    room.add(Member("c", "hn", "HN", "chair"))
    room.add(Member("s", "hue", "Huế", "site"))
    room.raise_hand("s", True)
    room.set_floor("c", "s")
    room.lock("c", True)
    assert Room.from_dict(room.to_dict()) == room


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "python"])
async def test_the_start_says_which_packet_path_runs(compiled: bool, monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """An operator must see in the log whether the SFU runs its packet path in C or in Python."""
    from media import native

    if compiled and native.fastpath is None:
        pytest.skip("media._fastpath is not built")
    if not compiled:
        monkeypatch.setattr(native, "fastpath", None)
    s = media.MediaService(Config(), CollectorRegistry())
    with caplog.at_level("INFO", logger="media"):
        await s.start()
    await s.stop(1.0)
    records = [r for r in caplog.records if r.name == "media"]
    assert [getattr(r, "packet_path", None) for r in records] == ["compiled" if compiled else "python"]
    if not compiled:
        assert "LIENTHONG_PURE_PYTHON" in records[0].getMessage() and records[0].levelname == "WARNING"
