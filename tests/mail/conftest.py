"""A running MailService on loopback (ports 0), a real Store, one agency with an account."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from lienthong import tls
from lienthong.config import Config
from lienthong.store import Store
from mail import MailService
from mail.directory import hash_password
from tests.mail.dnsserver import DnsServer

PASSWORD = "mat-khau-du-dai-2026"
AGENCY = "bo-dttg"
DOMAIN = "dttg.gov.vn"


def mail_config(tmp_path: Path, dns: DnsServer | None = None, **mail: Any) -> Config:
    cfg = Config()
    cfg.general.state_dir = str(tmp_path / "state")
    cfg.mail.hostname = "relay.lienthong.test"
    cfg.mail.postmaster = "postmaster@relay.lienthong.test"
    cfg.mail.submission_listen = "127.0.0.1:0"
    cfg.mail.smtps_listen = "127.0.0.1:0"
    cfg.mail.mx_listen = "127.0.0.1:0"
    cfg.mail.scan_interval = 0.2
    cfg.mail.connect_timeout = 2.0
    cfg.mail.command_timeout = 2.0
    # Without a test DNS server, lookups go to a loopback port where nothing answers: delivery
    # defers (never a bounce from whatever the machine's resolver says), so the spool keeps
    # exactly what was accepted for tests that look at it.
    cfg.mail.dns_servers = [dns.address] if dns is not None else ["127.0.0.1:9"]
    for k, v in mail.items():
        setattr(cfg.mail, k, v)
    return cfg


@dataclass
class Relay:
    service: MailService
    store: Store
    config: Config

    def port(self, name: str) -> int:
        return self.service.ports[name]


def client_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def start_relay(cfg: Config, next_hop: str = "127.0.0.9:25") -> Relay:
    cfg.state_path.mkdir(parents=True, exist_ok=True)
    store = Store(cfg.state_file(cfg.store.path))
    await store.open()
    if AGENCY not in await store.mail.agencies():
        await store.mail.add_agency(AGENCY)
        await store.mail.add_domain(AGENCY, DOMAIN, next_hop)
        await store.mail.add_domain(AGENCY, "vp.dttg.gov.vn", next_hop)
        await store.mail.add_account(AGENCY, "vanthu", hash_password(PASSWORD))
        await store.mail.add_agency("so-laocai")
        await store.mail.add_domain("so-laocai", "laocai.gov.vn", next_hop)
    service = MailService(cfg, store, tls.server_context(cfg), CollectorRegistry())
    await service.start()
    return Relay(service, store, cfg)


async def stop_relay(relay: Relay) -> None:
    await relay.service.stop(2)
    await relay.store.close()


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    r = await start_relay(mail_config(tmp_path))
    try:
        yield r
    finally:
        await stop_relay(r)
