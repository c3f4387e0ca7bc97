"""Fixtures of the media tests that run real aiortc peers through the SFU on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry

import media
from lienthong.config import Config


@pytest.fixture
async def service() -> AsyncIterator[media.MediaService]:
    """A started MediaService with loopback ICE candidates and small slot counts (2 gallery, 2
    audio), so a few sites exercise every slot kind."""
    config = Config()
    config.media.candidate_addresses = ["127.0.0.1"]
    config.media.gallery_slots = 2
    config.media.audio_slots = 2
    s = media.MediaService(config, CollectorRegistry())
    await s.start()
    yield s
    await s.stop(1.0)


@pytest.fixture(params=["compiled", "python"])
def send_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test on both forwarding paths: media._fastpath's (the fan-out, the rewriters and the
    sender in C), and the Python one that machines without a C compiler use (only the slots'
    storage, fixed at import, stays media._fastpath.Lane)."""
    from media import rtc_adapter

    if request.param == "python":
        from media import forwarder, vp8
        from media.rtp_rewrite import PySlotRewriter

        monkeypatch.setattr(rtc_adapter, "_fastpath", None)
        monkeypatch.setattr(forwarder, "_fanout_video", None)
        monkeypatch.setattr(forwarder, "_fanout_audio", None)
        monkeypatch.setattr(forwarder, "SlotRewriter", PySlotRewriter)
        monkeypatch.setattr(vp8, "Vp8Rewriter", vp8.PyVp8Rewriter)
    elif rtc_adapter._fastpath is None:
        pytest.skip("media._fastpath is not built")
    return str(request.param)
