"""Launching Debian's Chromium for real-browser tests, as ../shared/BROWSER.md prescribes.

Use ``launch_chromium(playwright)`` in every browser test; never ``playwright install``.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"

CHROMIUM_ARGS = [
    # media
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
    # headless, root, no GPU
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--no-default-browser-check",
    "--disable-breakpad",
    "--disable-dev-shm-usage",
    # never reach out to the internet (Chromium looks up Google hosts at start-up)
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE localhost",
    "--proxy-server=127.0.0.1:9",
    # Note: no --disable-features here; Chromium keeps only the last one and Playwright sets its own.
]


def require_chromium() -> None:
    """Skip (saying why) when Chromium or Playwright is missing; CI installs both via make test."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} not installed (make test installs it when run as root)")
    if shutil.which("chromium") is None and not os.path.exists(CHROMIUM):
        pytest.skip("chromium not found")
    pytest.importorskip("playwright.async_api")


async def launch_chromium(playwright: Any) -> Any:
    require_chromium()
    return await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
