"""Launching Debian's Firefox ESR for real-browser tests, driven over Marionette.

Playwright cannot drive Debian's Firefox (it needs its own patched build, which cannot be
downloaded here), so these tests talk to Firefox's own remote protocol: ``firefox-esr --marionette
--headless`` with a fresh profile, and Mozilla's ``marionette_driver`` client (PyPI) connected to
the port Firefox picked itself (``marionette.port`` 0, read back from the profile's
``MarionetteActivePort``): no geckodriver, no fixed port.  The client is blocking; every call runs
in a worker thread so the server under test keeps its event loop.

``PREFS`` is ../shared/BROWSER.md's Chromium rules carried over to Firefox:

- fake media without prompts (Firefox's fake camera and a 1 kHz tone), autoplay allowed;
- WebRTC on loopback with plain IP candidates (no mDNS ``.local`` names), no default STUN server;
- MANDATORY, no traffic to the internet: updates, telemetry and data reporting, remote settings,
  Normandy/Nimbus, safe browsing, captive-portal and connectivity checks, push, DoH/TRR, DNS and
  link prefetch, speculative connections, GMP (OpenH264) downloads, new-tab and region look-ups
  all off, and every protocol through a proxy on 127.0.0.1:9 (nothing listens there) except
  127.0.0.1/localhost, with no fall-back to a direct connection when the proxy fails.
  The test server's self-signed certificate is accepted through the WebDriver
  ``acceptInsecureCerts`` capability (as Playwright's ``ignore_https_errors`` for Chromium).

How the isolation was verified (Firefox 153.7.0esr, Debian 12, 2026-11-25):

- tests/media/test_meeting_firefox.py ran under ``strace -f -Y --seccomp-bpf -e
  trace=connect,sendto,sendmsg,sendmmsg`` (server, Chromium, Firefox and all their threads).
  Firefox connected only to 127.0.0.1: the test server, and the refusing proxy 127.0.0.1:9
  (13 attempts, e.g. remote settings; none retried directly); no DNS query, no other address.
  The only other addresses in the trace: the SFU's ICE checks to the browsers' host candidates on
  this machine's own eth0 address (delivered locally), Chromium's UDP connect() route probes to
  8.8.8.8 / 2001:4860:4860::8888 (no datagram sent) and a netlink route query of Firefox's link
  monitor (to the kernel).  Before ``network.proxy.allow_bypass`` was off, the same trace showed
  Firefox resolving firefox.settings.services.mozilla.com through the system DNS server after
  the proxy refused: that is what the check is for.
- a Firefox left idle for 30 s on about:blank under the same strace: no connect() at all
  except to 127.0.0.1.
- the test also passes in a loopback-only network namespace
  (``unshare -n sh -c 'ip link set lo up && exec .venv/bin/python -m pytest
  tests/media/test_meeting_firefox.py'``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib.util
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

FIREFOX = "/usr/bin/firefox-esr"
NO_PROXY_PORT = 9  # discard: nothing listens on 127.0.0.1:9, so a proxied connection fails at once

PREFS: dict[str, bool | int | str] = {
    # --- Marionette on a port Firefox picks itself (written to <profile>/MarionetteActivePort) ---
    "marionette.port": 0,
    # --- fake media, no prompts, autoplay ---
    "media.navigator.streams.fake": True,
    "media.navigator.permission.disabled": True,
    # Granted, not only unprompted: without a grant Firefox gathers ICE candidates on the default
    # route's interface only (eth0), never on loopback.
    "permissions.default.camera": 1,
    "permissions.default.microphone": 1,
    "media.autoplay.default": 0,  # 0 = allow audible autoplay
    "media.autoplay.blocking_policy": 0,
    "media.autoplay.block-webaudio": False,
    "media.block-autoplay-until-in-foreground": False,
    # --- WebRTC over loopback with plain addresses ---
    "media.peerconnection.ice.loopback": True,
    "media.peerconnection.ice.obfuscate_host_addresses": False,  # no mDNS .local names
    "media.peerconnection.ice.default_address_only": False,
    "media.peerconnection.ice.tcp": False,  # the SFU (aioice) speaks UDP
    "media.peerconnection.default_iceservers": "[]",  # no STUN server of Firefox's own
    "media.peerconnection.identity.enabled": False,
    # --- no traffic to the internet: every protocol through a proxy that refuses, loopback direct ---
    "network.proxy.type": 1,  # manual
    "network.proxy.http": "127.0.0.1",
    "network.proxy.http_port": NO_PROXY_PORT,
    "network.proxy.ssl": "127.0.0.1",
    "network.proxy.ssl_port": NO_PROXY_PORT,
    "network.proxy.socks": "127.0.0.1",
    "network.proxy.socks_port": NO_PROXY_PORT,
    "network.proxy.socks_remote_dns": True,  # names go to the (refusing) proxy, not to DNS
    "network.proxy.share_proxy_settings": True,
    "network.proxy.no_proxies_on": "localhost, 127.0.0.1",
    "network.proxy.allow_hijacking_localhost": False,  # loopback stays direct
    "network.proxy.failover_direct": False,  # a failing proxy must not mean "go direct"
    "network.proxy.allow_bypass": False,  # nor for Firefox's own requests (ServiceRequest retries without proxy)
    "network.trr.mode": 5,  # DNS over HTTPS off by choice
    "network.trr.uri": "",
    "doh-rollout.disable-heuristics": True,
    "network.dns.disablePrefetch": True,
    "network.dns.disablePrefetchFromHTTPS": True,
    "network.prefetch-next": False,
    "network.predictor.enabled": False,
    "network.predictor.enable-prefetch": False,
    "network.http.speculative-parallel-limit": 0,
    "network.http.http3.enable": False,
    "browser.urlbar.speculativeConnect.enabled": False,
    "browser.places.speculativeConnect.enabled": False,
    "network.captive-portal-service.enabled": False,
    "captivedetect.canonicalURL": "",
    "network.connectivity-service.enabled": False,
    "network.connectivity-service.IPv4.url": "",
    "network.connectivity-service.IPv6.url": "",
    # updates (application, add-ons, search engines, system add-ons, GMP plug-ins such as OpenH264)
    "app.update.disabledForTesting": True,
    "app.update.auto": False,
    "app.update.checkInstallTime": False,
    "app.update.url": "",
    "extensions.update.enabled": False,
    "extensions.update.autoUpdateDefault": False,
    "extensions.getAddons.cache.enabled": False,
    "extensions.blocklist.enabled": False,
    "extensions.systemAddon.update.enabled": False,
    "extensions.systemAddon.update.url": "",
    "extensions.webextensions.remote": True,
    "browser.search.update": False,
    "browser.search.geoSpecificDefaults": False,
    "media.gmp-manager.updateEnabled": False,
    "media.gmp-manager.url": "",
    "media.gmp-gmpopenh264.autoupdate": False,
    "media.gmp-gmpopenh264.enabled": False,
    "media.gmp-widevinecdm.enabled": False,
    "media.eme.enabled": False,
    # telemetry and data reporting
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.unified": False,
    "toolkit.telemetry.archive.enabled": False,
    "toolkit.telemetry.server": "",
    "toolkit.telemetry.reportingpolicy.firstRun": False,
    "toolkit.telemetry.shutdownPingSender.enabled": False,
    "toolkit.telemetry.firstShutdownPing.enabled": False,
    "toolkit.telemetry.newProfilePing.enabled": False,
    "toolkit.telemetry.updatePing.enabled": False,
    "toolkit.telemetry.bhrPing.enabled": False,
    "datareporting.healthreport.uploadEnabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "datareporting.policy.firstRunURL": "",
    "datareporting.usage.uploadEnabled": False,
    "browser.ping-centre.telemetry": False,
    "browser.crashReports.unsubmittedCheck.autoSubmit2": False,
    "breakpad.reportURL": "",
    # remote settings, experiments, studies, messaging
    "services.settings.server": "data:,#remote-settings-dummy/v1",
    "app.normandy.enabled": False,
    "app.normandy.api_url": "",
    "app.shield.optoutstudies.enabled": False,
    "messaging-system.rsexperimentloader.enabled": False,
    "nimbus.rollouts.enabled": False,
    "browser.newtabpage.activity-stream.asrouter.userprefs.cfr.addons": False,
    "browser.newtabpage.activity-stream.asrouter.userprefs.cfr.features": False,
    "security.remote_settings.crlite_filters.enabled": False,
    "security.remote_settings.intermediates.enabled": False,
    "security.OCSP.enabled": 0,
    "browser.translations.enable": False,
    "browser.ml.enable": False,
    # safe browsing
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "browser.safebrowsing.downloads.remote.enabled": False,
    "browser.safebrowsing.blockedURIs.enabled": False,
    "browser.safebrowsing.passwords.enabled": False,
    "browser.safebrowsing.provider.google4.updateURL": "",
    "browser.safebrowsing.provider.google4.gethashURL": "",
    "browser.safebrowsing.provider.mozilla.updateURL": "",
    "browser.safebrowsing.provider.mozilla.gethashURL": "",
    "signon.management.page.breach-alerts.enabled": False,
    # push, sync, accounts, geolocation, region
    "dom.push.enabled": False,
    "dom.push.connection.enabled": False,
    "dom.push.serverURL": "",
    "identity.fxaccounts.enabled": False,
    "services.sync.engine.addons": False,
    "geo.enabled": False,
    "geo.provider.network.url": "",
    "browser.region.network.url": "",
    "browser.region.update.enabled": False,
    # start-up and new-tab pages that fetch content
    "browser.startup.page": 0,
    "browser.startup.homepage": "about:blank",
    "browser.startup.homepage_override.mstone": "ignore",
    "startup.homepage_welcome_url": "about:blank",
    "startup.homepage_welcome_url.additional": "",
    "browser.aboutwelcome.enabled": False,
    "browser.newtabpage.enabled": False,
    "browser.newtabpage.activity-stream.feeds.section.topstories": False,
    "browser.newtabpage.activity-stream.feeds.topsites": False,
    "browser.newtabpage.activity-stream.feeds.telemetry": False,
    "browser.newtabpage.activity-stream.telemetry": False,
    "browser.newtabpage.activity-stream.default.sites": "",
    "browser.topsites.contile.enabled": False,
    "browser.urlbar.quicksuggest.enabled": False,
    "browser.urlbar.suggest.quicksuggest.sponsored": False,
    "browser.urlbar.suggest.quicksuggest.nonsponsored": False,
    "browser.discovery.enabled": False,
    "browser.shell.checkDefaultBrowser": False,
    "browser.tabs.warnOnClose": False,
    "browser.sessionstore.resume_from_crash": False,
    "toolkit.startup.max_resumed_crashes": -1,
    # page errors and console messages on Firefox's stdout, for the test to read
    "devtools.console.stdout.content": True,
}


def require_firefox() -> None:
    """Skip (saying why) when Firefox ESR or marionette_driver is missing; make test installs both as root."""
    if not os.access(FIREFOX, os.X_OK):
        pytest.skip(f"{FIREFOX} not installed (make browser-deps installs it when run as root)")
    if importlib.util.find_spec("marionette_driver") is None:
        pytest.skip("marionette_driver not installed (pip install -e '.[test]')")


def user_js(prefs: dict[str, bool | int | str]) -> str:
    """The profile's user.js: one user_pref() line per preference (JSON literals are valid there)."""
    return "".join(f"user_pref({json.dumps(name)}, {json.dumps(value)});\n" for name, value in prefs.items())


class FirefoxPage:
    """The one tab of a headless Firefox, with Playwright-like ``evaluate``/``wait_for_function``.

    Scripts run in the page's own global scope (no Marionette sandbox), so they see what the
    page publishes on ``window``.  ``js`` is a JavaScript expression, or a function expression
    that is called with ``arg``.
    """

    def __init__(self, marionette: Any, process: asyncio.subprocess.Process, profile: Path, log: Path):
        self.marionette = marionette
        self.process = process
        self.profile = profile
        self.log = log

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(getattr(self.marionette, method), *args, **kwargs)

    async def goto(self, url: str) -> None:
        await self._call("navigate", url)

    async def evaluate(self, js: str, arg: Any = None) -> Any:
        script = ("const value = (" + js + ");\n"
                  "return typeof value === 'function' ? value(arguments[0]) : value;")
        return await self._call("execute_script", script, script_args=[arg], sandbox=None)

    async def wait_for_function(self, js: str, arg: Any = None, polling: int = 250, timeout: float = 30_000) -> None:
        """Poll the predicate until it is truthy; TimeoutError after ``timeout`` ms."""
        deadline = time.monotonic() + timeout / 1000
        while not await self.evaluate(js, arg):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"Firefox: {js} still false after {timeout} ms")
            if self.process.returncode is not None:
                raise RuntimeError(f"Firefox exited ({self.process.returncode}); see {self.log}")
            await asyncio.sleep(polling / 1000)

    async def click(self, selector: str) -> None:
        from marionette_driver.by import By

        element = await self._call("find_element", By.CSS_SELECTOR, selector)
        await asyncio.to_thread(element.click)

    async def inner_text(self, selector: str) -> str:
        return await self.evaluate("(s) => document.querySelector(s).innerText", selector)  # type: ignore[no-any-return]

    async def is_visible(self, selector: str) -> bool:
        return bool(await self.evaluate("(s) => { const e = document.querySelector(s);"
                                        " return Boolean(e && e.getClientRects().length); }", selector))

    async def screenshot(self, path: Path | str, full_page: bool = True) -> None:
        data = await self._call("screenshot", format="base64", full=full_page)
        Path(path).write_bytes(base64.b64decode(data))

    def page_errors(self, origin: str) -> list[str]:
        """Uncaught errors in scripts from ``origin`` (what Playwright's "pageerror" reports), from Firefox's log."""
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return [line for line in lines if line.startswith("JavaScript error: " + origin)]


async def _stop(process: asyncio.subprocess.Process, timeout: float = 10) -> None:
    """Stop the Firefox we started: SIGTERM to its own process group (content processes too), then SIGKILL."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    with contextlib.suppress(ProcessLookupError):  # children that outlived the parent
        os.killpg(process.pid, signal.SIGKILL)


@contextlib.asynccontextmanager
async def launch_firefox(workdir: Path, width: int = 1280, height: int = 800,
                         start_timeout: float = 60) -> AsyncIterator[FirefoxPage]:
    """A headless Firefox ESR with a fresh profile under ``workdir``, connected over Marionette.

    Firefox's stdout/stderr (console messages included) go to ``workdir/firefox.log``.
    """
    require_firefox()
    from marionette_driver.marionette import Marionette

    profile = workdir / "profile"
    profile.mkdir(parents=True)
    (profile / "user.js").write_text(user_js(PREFS))
    log = workdir / "firefox.log"
    env = {**os.environ, "MOZ_HEADLESS": "1", "MOZ_CRASHREPORTER_DISABLE": "1"}
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            FIREFOX, "--marionette", "--headless", "--no-remote", "--new-instance",
            "--profile", str(profile), "--width", str(width), "--height", str(height), "about:blank",
            stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out, env=env, start_new_session=True)
    marionette: Any = None
    try:
        # Firefox writes the port it listens on once Marionette is up: wait for it (deadline).
        port_file = profile / "MarionetteActivePort"
        deadline = time.monotonic() + start_timeout
        while not (port_file.exists() and port_file.read_text().strip()):
            if process.returncode is not None:
                raise RuntimeError(f"Firefox exited ({process.returncode}) before Marionette started: "
                                   f"{log.read_text(errors='replace')[-2000:]}")
            if time.monotonic() >= deadline:
                raise RuntimeError(f"Firefox's Marionette did not start within {start_timeout} s; see {log}")
            await asyncio.sleep(0.1)
        marionette = Marionette(host="127.0.0.1", port=int(port_file.read_text().strip()), socket_timeout=120)
        await asyncio.to_thread(marionette.start_session, {"acceptInsecureCerts": True})
        yield FirefoxPage(marionette, process, profile, log)
    finally:
        if marionette is not None:
            if marionette.session is not None:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(marionette.delete_session)
            marionette.cleanup_ran = True  # nothing left for its __del__ to do
        await _stop(process)
