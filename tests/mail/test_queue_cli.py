"""``lienthong mail queue`` and friends, run as an operator runs them."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from tests.mail.conftest import mail_config, start_relay, stop_relay
from tests.mail.dnsserver import DnsServer
from tests.mail.test_delivery import ZONE, submit

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, state: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lienthong", *args, "--state-dir", str(state)], input=stdin,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)


async def test_queue_list_show_hold_release_flush_delete(tmp_path: Path) -> None:
    dns = DnsServer(dict(ZONE))
    await dns.start()
    relay = await start_relay(mail_config(tmp_path, dns, remote_smtp_port=9, retry_first=3600, retry_max=3600))
    try:
        await submit(relay, ["x@retry.example"], subject="Giữ lại")  # nothing listens: deferred
        await submit(relay, ["y@retry.example"], subject="Xóa đi")

        async def deferred() -> None:
            while sum(1 for e in relay.service.spool.envelopes() if e.attempts) < 2:
                await asyncio.sleep(0.05)

        await asyncio.wait_for(deferred(), 15)
    finally:
        await stop_relay(relay)
        dns.stop()
    state = tmp_path / "state"
    ids = sorted(p.stem for p in (state / "spool" / "queue").glob("*.env"))
    listing = await asyncio.to_thread(cli, "mail", "queue", state=state)
    assert listing.returncode == 0 and "2 message(s)" in listing.stdout
    assert all(i in listing.stdout for i in ids) and "connection to mx.retry.example" in listing.stdout
    shown = await asyncio.to_thread(cli, "mail", "queue", "show", ids[0], state=state)
    assert "x@retry.example: pending" in shown.stdout and "Subject: Giữ lại" in shown.stdout
    assert (await asyncio.to_thread(cli, "mail", "queue", "hold", ids[0], state=state)).returncode == 0
    assert " held " in (await asyncio.to_thread(cli, "mail", "queue", state=state)).stdout
    assert (await asyncio.to_thread(cli, "mail", "queue", "release", ids[0], state=state)).returncode == 0
    assert (await asyncio.to_thread(cli, "mail", "queue", "flush", state=state)).returncode == 0
    after = (await asyncio.to_thread(cli, "mail", "queue", state=state)).stdout
    assert " held " not in after and " now " in after
    assert (await asyncio.to_thread(cli, "mail", "queue", "delete", ids[1], state=state)).returncode == 0
    assert "1 message(s)" in (await asyncio.to_thread(cli, "mail", "queue", state=state)).stdout
    missing = await asyncio.to_thread(cli, "mail", "queue", "show", "nope", state=state)
    assert missing.returncode == 1 and "no message nope" in missing.stderr


def test_agency_account_and_dkim_cli(tmp_path: Path) -> None:
    state = tmp_path / "state"
    r = cli("mail", "agency", "add", "so-hue", "--domain", "hue.gov.vn", "--next-hop", "mail.hue.gov.vn:25", state=state)
    assert r.returncode == 0, r.stderr
    r = cli("mail", "agency", "add", "so-hue", "--domain", "hue.gov.vn", state=state)
    assert r.returncode == 1 and "exists" in r.stderr
    r = cli("mail", "account", "add", "so-hue", "vanthu", state=state, stdin="a long enough password\n")
    assert r.returncode == 0, r.stderr
    r = cli("mail", "account", "add", "nowhere", "x", state=state, stdin="a long enough password\n")
    assert r.returncode == 1 and "no agency" in r.stderr
    r = cli("mail", "agency", "list", state=state)
    assert "so-hue\thue.gov.vn\tmail.hue.gov.vn:25" in r.stdout
    r = cli("mail", "dkim-key", "hue.gov.vn", state=state)
    assert r.returncode == 0 and r.stdout.startswith('lienthong._domainkey.hue.gov.vn. IN TXT "v=DKIM1; k=rsa; p=')
    assert (state / "dkim" / "hue.gov.vn.key").stat().st_mode & 0o077 == 0
