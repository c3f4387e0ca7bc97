"""The meeting room page in Debian's Chromium, against the real server on 127.0.0.1.

The three-site call of issue 3 (video decoded on every page, floor switching the main view, a site
leaving) is tests/media/test_meeting_browser_3sites.py; this file checks the page itself: it loads,
connects and reports the server's answer on a desktop screen, and shows a refused link on a phone."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser import launch_chromium, require_chromium
from tests.web.conftest import Running, api, config, running  # noqa: F401  (fixtures)
from tests.web.meeting_helpers import admin_session, link_of, meeting_now

pytestmark = pytest.mark.browser


def room_url(running: Running, join_url: str) -> str:
    return running.url + "/m/" + join_url.rsplit("/j/", 1)[1]


async def test_room_page_runs_in_chromium_and_shows_refusals(running: Running, tmp_path: Path) -> None:
    require_chromium()
    from playwright.async_api import async_playwright

    created = await meeting_now(running)
    s = await admin_session(running)
    async with s:
        status, _ = await api(s, "POST", f"/api/meetings/{created['id']}/links/so-dttg-lao-cai/revoke")
        assert status == 200
    async with async_playwright() as pw:
        browser = await launch_chromium(pw)
        try:
            # A chair on a desktop screen: the page loads, connects and reports the server's answer.
            chair = await browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 800})
            page = await chair.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            await page.goto(room_url(running, link_of(created, "bo-dttg")))
            await page.wait_for_function("window.lienthong && window.lienthong.joined", timeout=15_000)
            assert await page.evaluate("window.lienthong.version") == 1
            assert await page.inner_text("#btn-leave") == "Rời cuộc họp"
            # The SFU took the chair: one transceiver per layout entry, chair controls shown, and
            # the chair's own camera in the self view (Chromium's fake device).
            assert await page.evaluate("window.lienthong.me.role") == "chair"
            assert await page.is_visible("#chair-panel")
            await page.wait_for_function("window.lienthong.pcCreated && window.lienthong.localTracks.thumb"
                                         " && window.lienthong.mids"
                                         " && document.getElementById('video-self').videoWidth > 0", timeout=15_000)
            layout = await page.evaluate("window.lienthong.layout")
            assert layout[:4] == [{"kind": "audio", "send": "audio", "slot": "audio-0"},
                                  {"kind": "video", "send": "camera", "slot": "main"},
                                  {"kind": "video", "send": "thumb", "slot": "chair"},
                                  {"kind": "video", "send": "screen", "slot": "screen"}]
            assert await page.evaluate("window.lienthong.transceiverKinds") == [e["kind"] for e in layout]
            assert await page.evaluate("window.lienthong.mids") == [str(i) for i in range(len(layout))]
            # Device pickers list Chromium's fake devices; choosing another microphone swaps the
            # track on the audio sender (no new offer) and is remembered for the next join.
            await page.click("details.devices summary")
            await page.wait_for_function("document.querySelectorAll('#select-camera option').length > 0"
                                         " && document.querySelectorAll('#select-mic option').length > 1",
                                         timeout=15_000)
            other_mic = await page.evaluate("""() => { const s = document.getElementById("select-mic");
                return Array.from(s.options).find((o) => !o.selected).value; }""")
            await page.select_option("#select-mic", other_mic)
            await page.wait_for_function("(id) => sessionStorage.getItem('lienthong.micId') === id"
                                         " && window.lienthong.localDevices.audio === id", arg=other_mic,
                                         timeout=15_000)
            assert await page.evaluate("window.lienthong.offersSent") == 1
            await page.screenshot(path=str(tmp_path / "chair.png"), full_page=True)
            assert errors == []
            # A revoked link on a phone-sized screen: a clear message, no room, no WebSocket.
            phone = await browser.new_context(ignore_https_errors=True, viewport={"width": 375, "height": 740})
            page = await phone.new_page()
            await page.goto(room_url(running, link_of(created, "so-dttg-lao-cai")) + "?lang=en")
            assert await page.is_visible("#notice") and not await page.is_visible("#room")
            assert await page.evaluate("window.lienthong.refused.code") == "revoked"
            assert await page.evaluate("window.lienthong.connects") == 0
            await page.screenshot(path=str(tmp_path / "refused-phone.png"))
        finally:
            await browser.close()
