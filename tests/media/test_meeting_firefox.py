"""The meeting page in Firefox ESR (issue 3: "current Chromium and Firefox"), with Chromium peers.

A chair and Hà Nội join in Debian's Chromium (canvas cameras in their site colours, as in
test_meeting_browser_3sites.py), Lào Cai in Debian's Firefox ESR driven over Marionette
(tests/firefox.py: Firefox's own fake camera and microphone).  Everything goes through the real
server on 127.0.0.1: join links, signalling WebSocket, media over loopback ICE to the SFU.  The
test reads what each page publishes on ``window.lienthong``, polling with deadlines.

Covered in Firefox: joining, video decoded and painted from both other sites (each slot shows the
site it names) and their audio received and played without a click; the two published layers;
the quality line; the main view following the floor; this site holding the floor, and pausing
the thumbnail nobody receives then; a WebSocket
drop and an ICE restart; leaving.  Not here: screen sharing (headless Firefox has no screen to
capture: getDisplayMedia answers NotFoundError) and phone-sized windows (headless Firefox keeps
windows at least 500 px wide).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.browser import launch_chromium, require_chromium
from tests.firefox import FirefoxPage, launch_firefox, require_firefox
from tests.media.test_meeting_browser_3sites import (
    CHAIR, COLOURS, DIAGNOSIS_JS, HA_NOI, LAO_CAI, MEDIA_MS, PAINTED_SITE_JS, PAINTS,
    SLOTS_PAINT_THEIR_SITES_JS, Site, all_joined, encoder_stopped, open_site, room_url)
from tests.web.conftest import Running, config, running  # noqa: F401  (fixtures)
from tests.web.meeting_helpers import link_of, meeting_now

pytestmark = pytest.mark.browser


class FirefoxSite(Site):
    """A site whose page is in Firefox: the same checks as the Chromium sites (``Site``)."""

    page: FirefoxPage

    async def until(self, js: str, arg: Any = None, timeout: float = MEDIA_MS) -> None:
        try:
            await self.page.wait_for_function(js, arg=arg, polling=250, timeout=timeout)
        except TimeoutError:
            state = await self.page.evaluate(DIAGNOSIS_JS)
            raise AssertionError(f"{self.unit} (Firefox): still not {js} ({arg!r}); page state {state}") from None


async def test_a_firefox_site_sees_and_hears_chromium_sites_takes_the_floor_and_leaves(
        running: Running, tmp_path: Path) -> None:
    require_chromium()
    require_firefox()
    from playwright.async_api import async_playwright

    created = await meeting_now(running, chair=CHAIR, sites=[HA_NOI, LAO_CAI])
    async with async_playwright() as pw, launch_firefox(tmp_path / "firefox") as firefox:
        browser = await launch_chromium(pw)
        try:
            chair = await open_site(browser, running, created, CHAIR)
            ha_noi = await open_site(browser, running, created, HA_NOI)
            await firefox.goto(room_url(running, link_of(created, LAO_CAI)) + "?lang=en")
            lao_cai = FirefoxSite(LAO_CAI, firefox, [])
            sites = (chair, ha_noi, lao_cai)

            # Everyone is in, sees the three sites, and the media path is up (Firefox's ICE
            # included: loopback candidates with plain addresses).
            await all_joined(sites)
            assert await lao_cai.state("me.role") == "site"
            assert await lao_cai.state("me.site_id") == LAO_CAI
            # Firefox took the page's transceiver layout and MIDs as they are (no renegotiation).
            layout = await lao_cai.state("layout")
            assert await lao_cai.state("mids") == [str(i) for i in range(len(layout))]

            # The Firefox page decodes video from both other sites and receives their audio;
            # every slot it shows paints the site it names (their canvases' colours).
            for other in (chair, ha_noi):
                await lao_cai.video_from(other.id)
                await lao_cai.audio_from(other.id)
            await lao_cai.until(SLOTS_PAINT_THEIR_SITES_JS, COLOURS)
            # Its main <video> paints frames (requestVideoFrameCallback), and autoplay let the
            # audio slots play without a click.
            await lao_cai.until("() => (window.lienthong.renderedFrames.main || 0) > 10")
            assert await lao_cai.state("audioBlocked") is False
            assert not await firefox.is_visible("#btn-sound")
            # Both Chromium pages decode Firefox's video and receive its audio; Firefox sends
            # both layers (the full camera and the ≤320x180 thumbnail).
            for site in (chair, ha_noi):
                await site.video_from(lao_cai.id)
                await site.audio_from(lao_cai.id)
            await lao_cai.until("() => { const s = window.lienthong.sending; return s.camera && s.thumb"
                                " && s.camera.framesEncoded > 0 && s.thumb.framesEncoded > 0; }")
            thumb = (await lao_cai.state("sending"))["thumb"]
            assert 0 < thumb["width"] <= 320 and 0 < thumb["height"] <= 180, thumb
            assert await lao_cai.state("sendLimits.thumb") == 150_000
            # The connection-quality line shows getStats figures in Firefox too.
            await lao_cai.until("() => { const q = window.lienthong.quality; return q.level !== 'unknown'"
                                " && q.bitrateKbps > 0 && q.sendKbps > 0 && q.loss !== null; }")
            assert "kbit/s" in await firefox.inner_text("#quality-detail")

            # The chair gives the floor to Hà Nội: the Firefox page's main view switches to it.
            def give_floor(site: Site) -> Any:
                return chair.page.locator(
                    f'#participants li[data-participant="{site.id}"] button[data-action="give_floor"]').click()

            await give_floor(ha_noi)
            await lao_cai.until("(id) => window.lienthong.floor === id && window.lienthong.mainSite === id", ha_noi.id)
            await lao_cai.frames_grow("main")
            await lao_cai.until(f"(arg) => ({PAINTED_SITE_JS})(arg) === {json.dumps(HA_NOI)}", ["video-main", PAINTS])
            assert await firefox.inner_text("#tile-main .name") == await ha_noi.state("me.site_name")
            await chair.until("(id) => window.lienthong.mainSite === id", ha_noi.id)
            await chair.until(f"(arg) => ({PAINTED_SITE_JS})(arg) === {json.dumps(HA_NOI)}", ["video-main", PAINTS])

            # Then to Lào Cai: the Chromium pages' main views switch to Firefox's camera, and the
            # Firefox page says that this site has the floor.
            await give_floor(lao_cai)
            lao_cai_name = await lao_cai.state("me.site_name")
            for site in (chair, ha_noi):
                await site.until("(id) => window.lienthong.floor === id && window.lienthong.mainSite === id", lao_cai.id)
                await site.frames_grow("main")
                assert await site.page.inner_text("#tile-main .name") == lao_cai_name
            # The picture itself switched: Firefox's fake camera is a solid colour that sweeps
            # the colour wheel, so it is told apart by elimination: neither Hà Nội's green
            # canvas (before) nor the chair's red one (never sent back to the chair).
            await chair.until(f"(arg) => !{json.dumps([HA_NOI, CHAIR])}.includes(({PAINTED_SITE_JS})(arg))",
                              ["video-main", PAINTS])
            await lao_cai.until("(id) => window.lienthong.floor === id && window.lienthong.mainSite !== id", lao_cai.id)
            assert await firefox.inner_text("#floor-line") == "This site has the floor"
            # Holding the floor, its camera is in every main slot and its thumbnail in no gallery
            # (the chair's shows Hà Nội; Hà Nội's main and chair slots hold the other two): the
            # server asks Firefox to pause the thumbnail, and its encoder stops.
            await encoder_stopped(lao_cai, "thumb")
            await firefox.screenshot(tmp_path / "firefox-lao-cai.png")
            await chair.page.screenshot(path=str(tmp_path / "chair-firefox-floor.png"), full_page=True)
            assert (tmp_path / "firefox-lao-cai.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

            # Firefox's WebSocket drops: the page resumes its place (media kept); then an ICE
            # restart renegotiates on the same peer connection and media flows both ways again.
            await firefox.evaluate("() => window.lienthong.dropConnection()")
            await lao_cai.until("() => window.lienthong.connects === 2 && window.lienthong.phase === 'joined'")
            assert await lao_cai.state("me.id") == lao_cai.id
            await firefox.evaluate("() => window.lienthong.restartIce()")
            await lao_cai.until("() => window.lienthong.iceRestarts === 1 && window.lienthong.errors.length === 0"
                                " && ['connected', 'completed'].includes(window.lienthong.iceState)")
            assert await lao_cai.state("offersSent") == 2  # join, ICE restart
            await lao_cai.frames_grow("main")
            await chair.frames_grow("main")  # Lào Cai's camera, the floor holder

            # Headless Firefox has no screen to capture (getDisplayMedia: NotFoundError): the
            # page says so instead of a button that seems dead, and sends no screen.
            await firefox.click("#btn-share")
            await lao_cai.until("() => (window.lienthong.notice || '').startsWith('Cannot share the screen: ')")
            assert await firefox.is_visible("#notice")
            assert await lao_cai.state("localTracks.screen") is not True

            # Lào Cai leaves from its page: the chair and Hà Nội see it go.
            await firefox.click("#btn-leave")
            await lao_cai.until("() => window.lienthong.phase === 'closed' && window.lienthong.closedReason === 'left'")
            for site in (chair, ha_noi):
                await site.until("(id) => window.lienthong.participants.length === 2 && "
                                 "!window.lienthong.participants.some((p) => p.id === id)", lao_cai.id)
                assert await site.page.locator(f'#participants li[data-participant="{lao_cai.id}"]').count() == 0

            for site in (chair, ha_noi):
                assert site.errors == [], (site.unit, site.errors)
            assert firefox.page_errors(running.url) == []
        finally:
            await browser.close()
