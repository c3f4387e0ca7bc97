"""The panel in a real browser: Debian's Chromium through Playwright (flags: tests/browser.py)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from lienthong.store.web import now_utc
from tests.browser import launch_chromium, require_chromium
from tests.web.conftest import PASSWORD, Running
from tests.web.meeting_helpers import HCM

pytestmark = pytest.mark.browser


async def test_admin_schedules_meeting_and_site_previews_camera(running: Running, tmp_path: Path) -> None:
    require_chromium()
    from playwright.async_api import async_playwright

    await running.add_account("quantri", "system_admin")
    start = (now_utc() + dt.timedelta(minutes=10)).astimezone(HCM)
    end = start + dt.timedelta(hours=1)  # late in the evening, this one crosses midnight
    async with async_playwright() as pw:
        browser = await launch_chromium(pw)
        try:
            admin = await browser.new_context(ignore_https_errors=True, accept_downloads=True)
            page = await admin.new_page()
            page.set_default_timeout(15_000)
            await page.goto(running.url + "/")
            await page.fill("input[name=username]", "quantri")
            await page.fill("input[name=password]", PASSWORD)
            await page.click("button[type=submit]")
            await page.wait_for_selector("text=Xin chào, quantri.")

            # Create a meeting: the ministry chairs, three provincial departments take part.
            await page.goto(running.url + "/meetings/new")
            await page.fill("input[name=title]", "Họp giao ban công tác dân tộc quý IV")
            await page.fill("textarea[name=agenda]", "Tổng kết, phương hướng năm 2027")
            await page.fill("input[name=start_date]", start.strftime("%Y-%m-%d"))
            await page.fill("input[name=start_time]", start.strftime("%H:%M"))
            # The end date follows the start date (the form's script)...
            assert await page.input_value("input[name=end_date]") == start.strftime("%Y-%m-%d")
            await page.fill("input[name=end_date]", end.strftime("%Y-%m-%d"))
            await page.fill("input[name=end_time]", end.strftime("%H:%M"))
            await page.select_option("select[name=chair]", "bo-dttg")
            for site in ("so-dttg-ha-noi", "so-dttg-lao-cai", "so-dttg-can-tho"):
                await page.check(f"input[name=sites][value={site}]")
            await page.click("#save-meeting")
            await page.wait_for_selector("input.joinlink")
            meeting_url = page.url
            links = await page.eval_on_selector_all(
                "tr[data-site]", "rows => rows.map(r => [r.dataset.site, r.querySelector('input.joinlink').value])")
            links = dict(links)
            assert set(links) == {"bo-dttg", "so-dttg-ha-noi", "so-dttg-lao-cai", "so-dttg-can-tho"}

            # It shows in the week calendar on its day.
            await page.goto(f"{running.url}/calendar?view=week&date={start:%Y-%m-%d}")
            cell = page.locator(f'td[data-date="{start:%Y-%m-%d}"] a.event')
            assert "Họp giao ban công tác dân tộc quý IV" in await cell.inner_text()

            # The .ics downloads and is a calendar.
            await page.goto(meeting_url)
            async with page.expect_download() as info:
                await page.click("#download-ics")
            download = await info.value
            ics_path = tmp_path / download.suggested_filename
            await download.save_as(ics_path)
            text = ics_path.read_text(encoding="utf-8")
            assert "BEGIN:VCALENDAR" in text and "DTSTART;TZID=Asia/Ho_Chi_Minh" in text

            # Switch the language.
            await page.click("#lang-en")
            await page.wait_for_selector("text=Join links of the sites")
            await page.goto(running.url + "/")
            await page.wait_for_selector("text=Hello, quantri.")

            # A site opens its link in its own browser context: the preview runs the fake camera.
            site = await browser.new_context(ignore_https_errors=True)
            spage = await site.new_page()
            spage.set_default_timeout(15_000)
            await spage.goto(links["so-dttg-lao-cai"])
            assert await spage.inner_text("#site-name") == "Sở Dân tộc và Tôn giáo tỉnh Lào Cai"
            assert await spage.inner_text("#meeting-title") == "Họp giao ban công tác dân tộc quý IV"
            await spage.wait_for_function(
                "() => window.lienthongJoin && window.lienthongJoin.previewPlaying"
                " && document.getElementById('preview').videoWidth > 0")
            assert await spage.locator("#camera option").count() >= 1
            assert await spage.locator("#microphone option").count() >= 1
            await spage.screenshot(path=str(tmp_path / "join-preview.png"))
            assert (tmp_path / "join-preview.png").stat().st_size > 1000
            await site.close()
            await admin.close()
        finally:
            await browser.close()
