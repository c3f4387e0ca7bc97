"""Sites in a meeting, each in its own Chromium context, through the real server (issue 3).

Each page joins from its join link (real HTTP + WebSocket on 127.0.0.1, media over loopback ICE to
the SFU), and the test reads what the page publishes on ``window.lienthong`` (docs/signalling.md,
*Page state for tests*), polling with deadlines.  So that one picture can be told from another,
every context's camera is a canvas filled with the site's own colour and a shared screen is
yellow (the init script below replaces the video half of ``getUserMedia`` and ``getDisplayMedia``;
the microphone stays Chromium's fake device): the tests check the colour each ``<video>`` paints,
not only the page's own account.

- three sites (one chair, one on a 390x844 phone screen, one page in English): video and audio
  from each other site, slots paint the sites they name, the two published layers, active
  speaker, hand queue, mic/camera off, the chair's give-floor click switching every main view,
  a screen share on MID 3 without renegotiation, a site leaving; screenshots in tmp_path;
- a WebSocket drop (the place and the media are kept), an ICE restart, and an outage longer than
  the grace period (the others see the site go; the page joins afresh with a new peer connection);
- chair controls (mute, lock, remove, end) and an observer, without waiting for media.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.browser import launch_chromium, require_chromium
from tests.web.conftest import Running, config, running  # noqa: F401  (fixtures)
from tests.web.meeting_helpers import link_of, meeting_now
from web.signalling import SESSIONS

pytestmark = pytest.mark.browser
PlaywrightTimeout = pytest.importorskip("playwright.async_api").TimeoutError

CHAIR, HA_NOI, LAO_CAI = "bo-dttg", "so-dttg-ha-noi", "so-dttg-lao-cai"
OBSERVER = "so-dttg-son-la"
# Far apart in RGB: a decoded picture is told apart by the nearest of them (VP8's colour
# conversion moves a channel by up to ~40).
COLOURS = {CHAIR: (220, 40, 40), HA_NOI: (40, 190, 60), LAO_CAI: (40, 80, 220), OBSERVER: (128, 128, 128)}
SCREEN = "screen"  # a shared screen is yellow, whoever shares it
SCREEN_COLOUR = (230, 200, 40)
PAINTS = {**COLOURS, SCREEN: SCREEN_COLOUR}
# The phone-sized site checks the page's layout on a 390x844 screen at the same time.
VIEWPORTS = {CHAIR: (1280, 800), HA_NOI: (390, 844), LAO_CAI: (1280, 800), OBSERVER: (390, 844)}
# Lào Cai's page is in English (the others in Vietnamese, the default).
LANGS = {CHAIR: "vi", HA_NOI: "vi", LAO_CAI: "en", OBSERVER: "vi"}
# Deadlines, not expectations: a loaded 2-core machine can be slow to start three Chromium pages.
JOIN_MS = 60_000
MEDIA_MS = 60_000
# In, with the others listed, and the media path up.
JOINED_JS = ("(count) => window.lienthong.joined && window.lienthong.participants.length === count"
             " && ['connected', 'completed'].includes(window.lienthong.iceState)")

CAMERA_SCRIPT = """
(() => {
  const [r, g, b] = %s;
  const devices = navigator.mediaDevices;
  const fakeDevice = devices.getUserMedia.bind(devices);
  devices.getUserMedia = async (constraints) => {
    const out = new MediaStream();
    if (constraints && constraints.audio) {
      (await fakeDevice({ audio: constraints.audio })).getAudioTracks().forEach((t) => out.addTrack(t));
    }
    if (constraints && constraints.video) {
      const canvas = document.createElement("canvas");
      canvas.width = 640; canvas.height = 360;
      const ctx = canvas.getContext("2d");
      let n = 0;
      const draw = () => {
        ctx.fillStyle = `rgb(${r},${g},${b})`;
        ctx.fillRect(0, 0, 640, 360);
        ctx.fillStyle = "#fff";              // a moving square: every frame differs a little
        ctx.fillRect((n++ * 8) %% 600, 8, 24, 24);
      };
      draw();
      setInterval(draw, 66);
      canvas.captureStream(15).getVideoTracks().forEach((t) => out.addTrack(t));
    }
    return out;
  };
  devices.getDisplayMedia = async () => {
    const canvas = document.createElement("canvas");
    canvas.width = 640; canvas.height = 360;
    const ctx = canvas.getContext("2d");
    let n = 0;
    const draw = () => {
      ctx.fillStyle = "rgb(%s)";
      ctx.fillRect(0, 0, 640, 360);
      ctx.fillStyle = "#000";
      ctx.fillRect((n++ * 8) %% 600, 8, 24, 24);
    };
    draw();
    setInterval(draw, 66);
    return canvas.captureStream(15);
  };
})();
"""

# Which site's colour a <video> paints (below the moving square): the nearest of ``colours``.
PAINTED_FN = """
function painted(v, colours) {
  if (!v || !v.videoWidth) return null;
  const c = document.createElement("canvas");
  c.width = 64; c.height = 36;
  const g = c.getContext("2d");
  g.drawImage(v, 0, 0, 64, 36);
  const px = g.getImageData(32, 24, 1, 1).data;
  let best = null, bestDistance = Infinity;
  for (const [site, rgb] of Object.entries(colours)) {
    const d = rgb.reduce((sum, x, i) => sum + (x - px[i]) ** 2, 0);
    if (d < bestDistance) { best = site; bestDistance = d; }
  }
  return best;
}
"""
PAINTED_SITE_JS = f"([id, colours]) => {{ {PAINTED_FN}; return painted(document.getElementById(id), colours); }}"
# Every video slot paints the camera of the site the page says feeds it.
SLOTS_PAINT_THEIR_SITES_JS = f"""
(colours) => {{
  {PAINTED_FN};
  const s = window.lienthong;
  let shown = 0;
  for (const [slot, who] of Object.entries(s.slots)) {{
    if (slot.startsWith("audio-") || !who) continue;
    const el = ["main", "chair", "screen"].includes(slot) ? document.getElementById("video-" + slot)
      : document.querySelector(`#gallery [data-slot="${{slot}}"] video`);
    const p = s.participants.find((p) => p.id === who);
    if (!p || painted(el, colours) !== p.site_id) return false;
    shown += 1;
  }}
  return shown > 0;
}}
"""
# What a failed deadline reports about the page.
DIAGNOSIS_JS = """
() => { const s = window.lienthong; return {phase: s.phase, me: s.me && s.me.id, slots: s.slots, floor: s.floor,
  mainSite: s.mainSite, mainView: s.mainView, framesDecoded: s.framesDecoded, renderedFrames: s.renderedFrames,
  audio: s.audioPacketsBySlot, ice: s.iceState, errors: s.errors, participants: s.participants.map((p) => p.id),
  pausedLayers: s.pausedLayers, sending: s.sending}; }
"""


def room_url(running: Running, join_url: str) -> str:
    return running.url + "/m/" + join_url.rsplit("/j/", 1)[1]


class Site:
    def __init__(self, unit: str, page: Any, errors: list[str]):
        self.unit, self.page, self.errors = unit, page, errors
        self.id = ""

    async def state(self, expr: str) -> Any:
        return await self.page.evaluate(f"window.lienthong.{expr}")

    async def until(self, js: str, arg: Any = None, timeout: float = MEDIA_MS) -> None:
        """Poll a predicate on the page (``js`` is a function of ``arg``) until it holds or the deadline passes."""
        try:
            await self.page.wait_for_function(js, arg=arg, polling=250, timeout=timeout)
        except PlaywrightTimeout:
            state = await self.page.evaluate(DIAGNOSIS_JS)
            painted = await self.painted("video-main")
            raise AssertionError(f"{self.unit}: still not {js} ({arg!r}); page state {state}, "
                                 f"main view paints {painted}") from None

    async def painted(self, video_id: str) -> str | None:
        """Whose camera (unit id, by colour) the <video> currently shows."""
        return await self.page.evaluate(PAINTED_SITE_JS, [video_id, PAINTS])  # type: ignore[no-any-return]

    async def frames_grow(self, slot: str, by: int = 10) -> None:
        """The slot's video decoder keeps producing frames (getStats framesDecoded)."""
        target = int((await self.state("framesDecoded")).get(slot, 0)) + by
        await self.until("([slot, target]) => (window.lienthong.framesDecoded[slot] || 0) >= target", [slot, target])

    async def audio_from(self, participant: str, by: int = 25) -> None:
        """Audio packets keep arriving on an audio slot that the given participant feeds."""
        await self.until("""([who, by]) => {
            const s = window.lienthong;
            window.__audioBase = window.__audioBase || {};
            for (const [slot, feeder] of Object.entries(s.slots)) {
              if (!slot.startsWith("audio-") || feeder !== who) continue;
              const now = s.audioPacketsBySlot[slot] || 0;
              const key = who + "/" + slot;
              if (!(key in window.__audioBase)) window.__audioBase[key] = now;
              if (now - window.__audioBase[key] >= by) return true;
            }
            return false;
        }""", [participant, by])

    async def video_from(self, participant: str, by: int = 10) -> None:
        """Frames keep being decoded on some video slot that the given participant feeds."""
        await self.until("""([who, by]) => {
            const s = window.lienthong;
            window.__videoBase = window.__videoBase || {};
            for (const [slot, feeder] of Object.entries(s.slots)) {
              if (slot.startsWith("audio-") || feeder !== who) continue;
              const now = s.framesDecoded[slot] || 0;
              const key = who + "/" + slot;
              if (!(key in window.__videoBase)) window.__videoBase[key] = now;
              if (now - window.__videoBase[key] >= by) return true;
            }
            return false;
        }""", [participant, by])


async def open_site(browser: Any, running: Running, created: dict[str, Any], unit: str) -> Site:
    width, height = VIEWPORTS[unit]
    context = await browser.new_context(ignore_https_errors=True, viewport={"width": width, "height": height})
    await context.add_init_script(CAMERA_SCRIPT % (json.dumps(list(COLOURS[unit])),
                                                   ",".join(map(str, SCREEN_COLOUR))))
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.goto(room_url(running, link_of(created, unit)) + f"?lang={LANGS[unit]}")
    return Site(unit, page, errors)


async def all_joined(sites: Any) -> None:
    sites = list(sites)
    for site in sites:
        await site.until(JOINED_JS, len(sites), timeout=JOIN_MS)
        site.id = await site.state("me.id")


async def test_three_sites_see_and_hear_each_other_follow_the_floor_and_see_a_site_leave(
        running: Running, tmp_path: Path) -> None:
    require_chromium()
    from playwright.async_api import async_playwright

    created = await meeting_now(running, chair=CHAIR, sites=[HA_NOI, LAO_CAI])
    async with async_playwright() as pw:
        browser = await launch_chromium(pw)
        try:
            sites = {unit: await open_site(browser, running, created, unit) for unit in (CHAIR, HA_NOI, LAO_CAI)}
            chair, ha_noi, lao_cai = sites[CHAIR], sites[HA_NOI], sites[LAO_CAI]

            # Everyone is in, sees the three sites, and the media path is up.
            await all_joined(sites.values())
            assert await chair.state("me.role") == "chair"
            assert await ha_noi.state("me.role") == "site"

            # Each page decodes video from each other site and receives its audio, and every
            # video slot shows the site its label names.
            for site in sites.values():
                for other in sites.values():
                    if other is not site:
                        await site.video_from(other.id)
                        await site.audio_from(other.id)
                await site.until(SLOTS_PAINT_THEIR_SITES_JS, COLOURS)
            # The camera goes out as two layers: the full one (the camera track itself, up to
            # 1280x720; what the encoder makes of it follows the bandwidth estimate, so it is not
            # checked here), and a thumbnail of at most 320x180 capped at 150 kbps.
            await chair.until("() => { const s = window.lienthong.sending; return s.camera && s.thumb"
                              " && s.camera.framesEncoded > 0 && s.thumb.framesEncoded > 0; }")
            captured, sending = await chair.state("captured"), await chair.state("sending")
            assert captured["camera"] == {"width": 640, "height": 360}, captured  # the canvas camera
            assert 0 < sending["thumb"]["width"] <= 320 and 0 < sending["thumb"]["height"] <= 180, sending
            assert await chair.state("sendLimits.thumb") == 150_000

            # The SFU names an active speaker (from audio levels; Chromium's fake microphones all
            # beep): the pages highlight it in their participant lists.
            for site in sites.values():
                await site.until("() => { const id = window.lienthong.speaker; return id && document.querySelector("
                                 "`#participants li.speaking[data-participant=\"${id}\"]`) !== null; }")

            # Lào Cai asks to speak: the chair sees it in its queue.  Hà Nội mutes its microphone:
            # the others see it.
            await lao_cai.page.click("#btn-hand")
            await chair.until("(id) => window.lienthong.hands.length === 1 && window.lienthong.hands[0] === id",
                              lao_cai.id)
            lao_cai_name = await lao_cai.state("me.site_name")
            assert lao_cai_name in await chair.page.inner_text("#hand-queue")
            await ha_noi.page.click("#btn-mic")
            for site in (chair, lao_cai):
                await site.until("(id) => window.lienthong.participants.some((p) => p.id === id && p.audio === false)",
                                 ha_noi.id)
            assert "đã tắt micrô" in await chair.page.inner_text(f'#participants li[data-participant="{ha_noi.id}"] .flags')
            await ha_noi.page.click("#btn-cam")
            await chair.until("(id) => window.lienthong.participants.some((p) => p.id === id && p.video === false)",
                              ha_noi.id)
            assert "đã tắt camera" in await chair.page.inner_text(f'#participants li[data-participant="{ha_noi.id}"] .flags')
            await ha_noi.page.click("#btn-cam")

            # The chair gives the floor to Lào Cai by clicking the control in its participant list.
            await chair.page.locator(
                f'#participants li[data-participant="{lao_cai.id}"] button[data-action="give_floor"]').click()
            for site in (chair, ha_noi):
                await site.until("(id) => window.lienthong.floor === id && window.lienthong.mainSite === id", lao_cai.id)
                await site.frames_grow("main")
                # The picture itself switched (after the SFU's keyframe wait), not just the labels.
                await site.until(f"(arg) => ({PAINTED_SITE_JS})(arg) === {json.dumps(LAO_CAI)}", ["video-main", PAINTS])
                assert await site.page.inner_text("#tile-main .name") == lao_cai_name
            # The site holding the floor is told so (the SFU never sends a site its own picture).
            await lao_cai.until("(id) => window.lienthong.floor === id && window.lienthong.mainSite !== id", lao_cai.id)
            assert await lao_cai.page.inner_text("#floor-line") == "This site has the floor"
            # Giving the floor answered the raised hand.
            await chair.until("() => window.lienthong.hands.length === 0")

            # The chair shares its screen: the track goes onto the screen transceiver (no new
            # offer) and the other sites' screen view shows it.
            await chair.page.click("#btn-share")
            for site in (ha_noi, lao_cai):
                await site.until("(id) => window.lienthong.slots.screen === id", chair.id)
                await site.frames_grow("screen")
                await site.until(f"(arg) => ({PAINTED_SITE_JS})(arg) === {json.dumps(SCREEN)}", ["video-screen", PAINTS])
                assert await site.page.is_visible("#tile-screen")
            assert await chair.state("offersSent") == 1
            # The connection-quality line shows figures from getStats; the phone's page fits its width.
            await chair.until("() => { const q = window.lienthong.quality; return q.level !== 'unknown'"
                              " && q.bitrateKbps > 0 && q.sendKbps > 0 && q.loss !== null; }")
            assert "kbit/s" in await chair.page.inner_text("#quality-detail")
            assert await ha_noi.page.evaluate("document.documentElement.scrollWidth") <= 390
            await chair.page.screenshot(path=str(tmp_path / "chair.png"), full_page=True)
            await ha_noi.page.screenshot(path=str(tmp_path / "ha-noi-phone.png"), full_page=True)

            # Hà Nội leaves; the others see it go from their participant lists.
            await ha_noi.page.click("#btn-leave")
            await ha_noi.until("() => window.lienthong.phase === 'closed' && window.lienthong.closedReason === 'left'")
            for site in (chair, lao_cai):
                await site.until("(id) => window.lienthong.participants.length === 2 && "
                                 "!window.lienthong.participants.some((p) => p.id === id)", ha_noi.id)
                assert await site.page.locator(f'#participants li[data-participant="{ha_noi.id}"]').count() == 0
                assert await site.page.inner_text("#participant-count") == "2"
            await chair.page.screenshot(path=str(tmp_path / "chair-after-leave.png"), full_page=True)

            for site in sites.values():
                assert site.errors == [], (site.unit, site.errors)
        finally:
            await browser.close()


async def test_a_site_that_loses_its_websocket_keeps_its_place_and_media_and_survives_an_ice_restart_or_rejoins_after_grace(
        running: Running, tmp_path: Path) -> None:
    require_chromium()
    from playwright.async_api import async_playwright

    created = await meeting_now(running, chair=CHAIR, sites=[HA_NOI])
    async with async_playwright() as pw:
        browser = await launch_chromium(pw)
        try:
            chair = await open_site(browser, running, created, CHAIR)
            site = await open_site(browser, running, created, HA_NOI)
            await all_joined([chair, site])
            await site.video_from(chair.id)

            # The WebSocket drops (the page closes it itself); media travels over UDP and goes on,
            # and the page resumes its place: same participant, the chair never saw it leave.
            await site.page.evaluate("window.lienthong.dropConnection()")
            await site.until("() => window.lienthong.connects === 2 && window.lienthong.phase === 'joined'")
            assert await site.state("me.id") == site.id
            assert site.id in [p["id"] for p in await chair.state("participants")]
            await site.frames_grow("main")
            await site.audio_from(chair.id)

            # An ICE restart (what the page does when ICE fails) renegotiates on the same socket.
            await site.page.evaluate("window.lienthong.restartIce()")
            await site.until("() => window.lienthong.iceRestarts === 1 && window.lienthong.errors.length === 0"
                             " && ['connected', 'completed'].includes(window.lienthong.iceState)")
            await site.frames_grow("main")
            await chair.video_from(site.id)

            # Offline for longer than the grace period (shortened here, a protocol timer): the
            # server lets the place go and the chair sees the site leave; back online, the page
            # joins afresh (new participant, new peer connection) and media flows again.
            running.server.web.runner.app[SESSIONS].grace_seconds = 0.2  # type: ignore[union-attr]
            await site.page.context.set_offline(True)
            await site.page.evaluate("window.lienthong.dropConnection()")
            await chair.until("(id) => !window.lienthong.participants.some((p) => p.id === id)", site.id)
            await site.page.context.set_offline(False)
            old_id = site.id
            await site.until("(old) => window.lienthong.phase === 'joined' && window.lienthong.me.id !== old"
                             " && ['connected', 'completed'].includes(window.lienthong.iceState)", old_id)
            site.id = await site.state("me.id")
            assert await site.state("offersSent") == 3  # join, ICE restart, the fresh peer connection
            await chair.until("(id) => window.lienthong.participants.some((p) => p.id === id)", site.id)
            await chair.video_from(site.id)
            await site.video_from(chair.id)
            for page in (chair, site):
                assert page.errors == [], (page.unit, page.errors)
        finally:
            await browser.close()


async def test_chair_controls_mute_lock_remove_and_end_reach_every_page(running: Running, tmp_path: Path) -> None:
    require_chromium()
    from playwright.async_api import async_playwright

    created = await meeting_now(running, chair=CHAIR, sites=[HA_NOI, LAO_CAI],
                                observers=[OBSERVER])
    async with async_playwright() as pw:
        browser = await launch_chromium(pw)
        try:
            sites = {unit: await open_site(browser, running, created, unit)
                     for unit in (CHAIR, HA_NOI, LAO_CAI, OBSERVER)}
            chair, ha_noi, lao_cai, observer = sites[CHAIR], sites[HA_NOI], sites[LAO_CAI], sites[OBSERVER]
            for site in sites.values():
                await site.until("() => window.lienthong.joined && window.lienthong.participants.length === 4",
                                 timeout=JOIN_MS)
                site.id = await site.state("me.id")

            # The observer receives only: every transceiver receive-only, no publishing controls.
            assert await observer.state("me.role") == "observer"
            assert all(entry["send"] is None for entry in await observer.state("layout"))
            for control_id in ("#btn-mic", "#btn-cam", "#btn-share", "#btn-hand", "#chair-panel", "#tile-self"):
                assert not await observer.page.is_visible(control_id), control_id
            assert await observer.page.is_visible("#btn-leave")
            chair.page.on("dialog", lambda dialog: dialog.accept())  # "remove this site?", "end the meeting?"

            def control(site: Site, action: str) -> Any:
                return chair.page.locator(f'#participants li[data-participant="{site.id}"] button[data-action="{action}"]')

            # Mute a site: its page turns its microphone off and says why; the chair can undo it.
            await control(ha_noi, "mute_site").click()
            await ha_noi.until("() => window.lienthong.localTracks.audio === false"
                               " && window.lienthong.participants.some((p) => p.id === window.lienthong.me.id"
                               " && p.muted_by_chair)")
            assert await ha_noi.page.inner_text("#status") == "Chủ trì đã tắt micrô của điểm cầu"
            assert await ha_noi.page.inner_text("#btn-mic") == "Bật micrô"
            await chair.until("(id) => window.lienthong.participants.some((p) => p.id === id && p.muted_by_chair)",
                              ha_noi.id)
            assert await control(ha_noi, "mute_site").inner_text() == "Bật micrô điểm cầu"
            assert await ha_noi.page.is_disabled("#btn-mic")
            await control(ha_noi, "mute_site").click()  # the chair allows it to unmute again
            await ha_noi.until("() => !document.getElementById('btn-mic').disabled")
            assert await ha_noi.page.inner_text("#status") == "Chủ trì đã cho phép bật micrô"

            # Give the floor, then take it back: every page follows.
            await control(ha_noi, "give_floor").click()
            for site in sites.values():
                await site.until("(id) => window.lienthong.floor === id", ha_noi.id)
            await chair.page.click("#btn-take-floor")
            for site in sites.values():
                await site.until("() => window.lienthong.floor === null")
            assert await ha_noi.page.inner_text("#floor-line") == "Chưa mời điểm cầu nào phát biểu"

            # Lock: every page shows it.
            await chair.page.click("#btn-lock")
            for site in sites.values():
                await site.until("() => window.lienthong.locked === true")
                assert await site.page.is_visible("#locked-badge")

            # Remove Lào Cai: its page says so and stops; the others see it go.
            await control(lao_cai, "remove_site").click()
            await lao_cai.until("() => window.lienthong.phase === 'closed' && window.lienthong.closedReason === 'removed'")
            assert await lao_cai.page.inner_text("#notice-text") == "The chair removed this site from the meeting."
            for site in (chair, ha_noi, observer):
                await site.until("(id) => !window.lienthong.participants.some((p) => p.id === id)", lao_cai.id)

            # End: every remaining page closes with the reason, and does not try to reconnect.
            await chair.page.click("#btn-end")
            for site in (chair, ha_noi, observer):
                await site.until("() => window.lienthong.phase === 'closed' && window.lienthong.closedReason === 'ended'")
                assert await site.page.inner_text("#notice-text") == "Cuộc họp đã kết thúc."
            assert await ha_noi.state("connects") == 1
            for site in sites.values():
                assert site.errors == [], (site.unit, site.errors)
        finally:
            await browser.close()


# The page's own layer: frames its encoder made (getStats outbound-rtp), 0 before the first.
ENCODED_JS = "(layer) => (window.lienthong.sending[layer] || {}).framesEncoded || 0"


async def encoder_stopped(site: Site, layer: str, running_layer: str = "camera") -> None:
    """``layer``'s encoder has made no frame while ``running_layer``'s made 30, and the page says
    it paused ``layer``.  (At the start a browser's bandwidth estimate is low, so the SFU may show
    thumbnails in main slots for a while: a thumbnail may run, pause, and run again.)"""
    await site.until("""([layer, running]) => {
        const s = window.lienthong, frames = (name) => (s.sending[name] || {}).framesEncoded || 0;
        const seen = window.__stopped = window.__stopped || {};
        const now = [frames(layer), frames(running)];
        if (!seen[layer] || seen[layer][0] !== now[0]) seen[layer] = now;   // it moved: count again
        return s.pausedLayers.includes(layer) && now[1] - seen[layer][1] >= 30;
    }""", [layer, running_layer])


async def test_a_layer_nobody_receives_stops_at_its_publisher_and_comes_back_when_a_slot_needs_it(
        running: Running, tmp_path: Path) -> None:
    """Pausing layers (docs/signalling.md, ``layers``): the server tells a page which of its own
    layers nobody receives, the page stops encoding them (its uplink carries only what is
    watched) and starts again, keyframe first, when a slot needs one."""
    require_chromium()
    from playwright.async_api import async_playwright

    created = await meeting_now(running, chair=CHAIR, sites=[HA_NOI, LAO_CAI])
    async with async_playwright() as pw:
        browser = await launch_chromium(pw)
        try:
            chair = await open_site(browser, running, created, CHAIR)
            ha_noi = await open_site(browser, running, created, HA_NOI)
            await all_joined([chair, ha_noi])

            def control(site: Site, action: str) -> Any:
                return chair.page.locator(f'#participants li[data-participant="{site.id}"] button[data-action="{action}"]')

            # The chair mutes the sites, so that no speaker moves the main slots: the chair's
            # main slot shows Hà Nội, Hà Nội's the chair.  Both cameras are watched; neither
            # thumbnail is (no gallery has anyone to show): both pages stop encoding them.
            await control(ha_noi, "mute_site").click()
            await ha_noi.until("() => window.lienthong.localTracks.audio === false")
            for site in (chair, ha_noi):
                await encoder_stopped(site, "thumb")
                assert await site.state("pausedLayers") == ["thumb"]
                await site.frames_grow("main")          # the cameras still flow

            # Lào Cai joins (the chair mutes it too) and the chair gives Hà Nội the floor: every
            # main slot but Hà Nội's own shows Hà Nội's camera, the chair's gallery Lào Cai, and
            # Lào Cai's gallery nobody (the chair and Hà Nội are in its chair and main slots).
            # Nobody receives Hà Nội's thumbnail.
            lao_cai = await open_site(browser, running, created, LAO_CAI)
            await all_joined([chair, ha_noi, lao_cai])
            await control(lao_cai, "mute_site").click()
            await control(ha_noi, "give_floor").click()
            await encoder_stopped(ha_noi, "thumb")
            await lao_cai.until("(id) => window.lienthong.mainSite === id", ha_noi.id)
            await lao_cai.frames_grow("main")

            # The floor to Lào Cai: the chair's main slot shows Lào Cai and its gallery Hà Nội's
            # thumbnail, which Hà Nội starts again; the chair's page decodes and paints it.
            await control(lao_cai, "give_floor").click()
            await ha_noi.until("() => !window.lienthong.pausedLayers.includes('thumb')")
            target = await ha_noi.page.evaluate(ENCODED_JS, "thumb") + 10
            await ha_noi.until(f"([layer, target]) => ({ENCODED_JS})(layer) >= target", ["thumb", target])
            await chair.video_from(ha_noi.id)
            await chair.until(SLOTS_PAINT_THEIR_SITES_JS, COLOURS)
            await chair.page.screenshot(path=str(tmp_path / "chair-layers.png"), full_page=True)
            for site in (chair, ha_noi, lao_cai):
                assert site.errors == [], (site.unit, site.errors)
        finally:
            await browser.close()
