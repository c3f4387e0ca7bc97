"""Delivery end to end: agencies submit over SMTP; a DNS server on loopback answers MX/A/TXT;
aiosmtpd sinks on 127.0.0.N (one shared port) stand in for the remote hosts."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosmtplib
import dkim
import pytest

from lienthong import tls
from mail.dkim_sign import create_key
from tests.mail.conftest import DOMAIN, PASSWORD, Relay, client_tls, mail_config, start_relay, stop_relay
from tests.mail.dnsserver import DnsServer
from tests.mail.sinks import Sink, free_port


@dataclass
class World:
    relay: Relay
    dns: DnsServer
    port: int
    sinks: dict[str, Sink]
    tmp: Path

    async def sink(self, address: str, behaviour: str = "accept", starttls: bool = False) -> Sink:
        ctx = None
        if starttls:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            cert = self.tmp / f"sink-{address}.crt"
            key = self.tmp / f"sink-{address}.key"
            tls.generate_self_signed(cert, key, ["mx.example"])
            ctx.load_cert_chain(cert, key)
        s = Sink(address, self.port, behaviour, ctx)
        await s.start()
        self.sinks[address] = s
        return s


ZONE = {
    ("far.example.", "MX"): ["10 mx1.far.example."],
    ("mx1.far.example.", "A"): ["127.0.0.2"],
    ("fallback.example.", "MX"): ["10 dead.fallback.example.", "20 live.fallback.example."],
    ("dead.fallback.example.", "A"): ["127.0.0.3"],
    ("live.fallback.example.", "A"): ["127.0.0.4"],
    ("nomx.example.", "A"): ["127.0.0.5"],
    ("nullmx.example.", "MX"): ["0 ."],
    ("retry.example.", "MX"): ["10 mx.retry.example."],
    ("mx.retry.example.", "A"): ["127.0.0.6"],
    ("reject.example.", "MX"): ["10 mx.reject.example."],
    ("mx.reject.example.", "A"): ["127.0.0.7"],
    ("secure.example.", "MX"): ["10 mx.secure.example."],
    ("mx.secure.example.", "A"): ["127.0.0.8"],
    ("ví-dụ.vn.", "MX"): ["10 mx1.far.example."],
    ("xn--v-d-rma6749a.vn.", "MX"): ["10 mx1.far.example."],
}


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    dns = DnsServer(dict(ZONE))
    await dns.start()
    port = free_port()
    cfg = mail_config(tmp_path, dns, remote_smtp_port=port, retry_first=0.3, retry_max=0.6,
                      tls_policy_domains={"secure.example": "required"})
    relay = await start_relay(cfg, next_hop=f"127.0.0.9:{port}")
    w = World(relay, dns, port, {}, tmp_path)
    await w.sink("127.0.0.9")  # the agency's own server: inbound mail and bounces arrive here
    try:
        yield w
    finally:
        await stop_relay(relay)
        for s in w.sinks.values():
            await s.stop()
        dns.stop()


async def submit(relay: Relay, rcpts: list[str], subject: str = "Giấy mời họp", sender: str = f"vanthu@{DOMAIN}",
                 **kw: Any) -> None:
    msg = (f"From: Văn thư <{sender}>\r\nTo: {', '.join(rcpts)}\r\nSubject: {subject}\r\n"
           f"Message-ID: <{abs(hash(subject))}@{DOMAIN}>\r\nDate: Tue, 24 Nov 2026 09:00:00 +0700\r\n"
           f"Content-Type: text/plain; charset=utf-8\r\n\r\nKính gửi các đơn vị.\r\n").encode()
    c = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.port("submission"), start_tls=True, tls_context=client_tls())
    await c.connect()
    await c.login("vanthu", PASSWORD)
    await c.sendmail(sender, rcpts, msg, **kw)
    await c.quit()


async def wait_empty(relay: Relay, timeout: float = 20.0) -> None:
    async def poll() -> None:
        while relay.service.spool.count():
            relay.service.worker.wake()
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), timeout)


async def test_delivered_by_mx_and_dkim_signed(world: World) -> None:
    record = create_key(world.relay.config.state_path / "dkim", DOMAIN, "lienthong")
    world.dns.zone[(f"lienthong._domainkey.{DOMAIN}.", "TXT")] = [record.split(" IN TXT ", 1)[1]]
    sink = await world.sink("127.0.0.2")
    await submit(world.relay, ["nguoi.nhan@far.example"])
    (got,) = await sink.wait_messages(1)
    assert got.rcpt_tos == ["nguoi.nhan@far.example"] and got.mail_from == f"vanthu@{DOMAIN}"
    assert got.content.startswith(b"DKIM-Signature:")

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        txt = world.dns.zone.get((name.decode().lower(), "TXT"), [""])[0]
        return txt.strip('"').encode()

    assert dkim.verify(got.content, dnsfunc=dnsfunc)
    await wait_empty(world.relay)


async def test_mx_preference_fallback_and_implicit_mx(world: World) -> None:
    live = await world.sink("127.0.0.4")
    implicit = await world.sink("127.0.0.5")  # nomx.example has only an A record
    await submit(world.relay, ["a@fallback.example", "b@nomx.example"])
    assert (await live.wait_messages(1))[0].rcpt_tos == ["a@fallback.example"]
    assert (await implicit.wait_messages(1))[0].rcpt_tos == ["b@nomx.example"]
    await wait_empty(world.relay)


async def test_tempfail_is_retried(world: World) -> None:
    sink = await world.sink("127.0.0.6", "tempfail_once")
    await submit(world.relay, ["x@retry.example"])
    (got,) = await sink.wait_messages(1)
    assert got.rcpt_tos == ["x@retry.example"]
    await wait_empty(world.relay)
    assert "x@retry.example" in sink.handler.tempfailed


async def test_permanent_failure_bounces_in_rfc3464(world: World) -> None:
    await world.sink("127.0.0.7", "reject")
    home = world.sinks["127.0.0.9"]
    await submit(world.relay, ["ghost@reject.example"], subject="Thư sẽ bị trả lại")
    (bounce,) = await home.wait_messages(1)
    assert bounce.mail_from in ("", "<>") and bounce.rcpt_tos == [f"vanthu@{DOMAIN}"]
    report = email.message_from_bytes(bounce.content, policy=email.policy.default)
    assert report.get_content_type() == "multipart/report" and report.get_param("report-type") == "delivery-status"
    parts = list(report.iter_parts())
    # The original has raw UTF-8 headers ("Văn thư"), so it comes back as RFC 6533 message/global.
    assert [p.get_content_type() for p in parts] == ["text/plain", "message/delivery-status", "message/global"]
    status = parts[1].get_payload()
    assert status[0]["Reporting-MTA"] == "dns; relay.lienthong.test"
    assert status[1]["Final-Recipient"] == "rfc822; ghost@reject.example"
    assert status[1]["Action"] == "failed" and status[1]["Status"] == "5.1.1"
    assert "550 5.1.1 No such user here" in status[1]["Diagnostic-Code"]
    assert status[1]["Remote-MTA"] == "dns; mx.reject.example"
    assert parts[2]["Content-Transfer-Encoding"] == "base64"
    boundary = report.get_boundary().encode()
    third = bounce.content.split(b"--" + boundary)[3]  # preamble, text, status, returned
    returned = email.message_from_bytes(base64.b64decode(third.split(b"\r\n\r\n", 1)[1]), policy=email.policy.default)
    assert returned["Subject"] == "Thư sẽ bị trả lại" and "Kính gửi các đơn vị." in returned.get_content()
    await wait_empty(world.relay)


async def test_null_mx_bounces_at_once_and_never_a_bounce_of_a_bounce(world: World) -> None:
    home = world.sinks["127.0.0.9"]
    home.handler.behaviour = "reject"  # the sender's own server refuses the bounce too
    await submit(world.relay, ["x@nullmx.example"])
    await wait_empty(world.relay)
    assert home.handler.messages == []  # the bounce was refused, and no bounce of it was made
    assert world.relay.service.spool.count() == 0


async def test_starttls_required_but_not_offered_defers(world: World) -> None:
    plain = await world.sink("127.0.0.8")  # no STARTTLS
    await submit(world.relay, ["x@secure.example"])
    async def deferred() -> Any:
        while True:
            envs = [e for e in world.relay.service.spool.envelopes() if e.attempts]
            if envs:
                return envs[0]
            await asyncio.sleep(0.05)
    env = await asyncio.wait_for(deferred(), 10)
    assert "4.7.4 TLS is required" in env.recipients[0].last_error and env.recipients[0].status == "pending"
    assert plain.handler.messages == []


async def test_starttls_used_when_offered(world: World) -> None:
    sink = await world.sink("127.0.0.2", starttls=True)
    await submit(world.relay, ["a@far.example"])
    (got,) = await sink.wait_messages(1)
    assert got.tls


async def test_connection_reused_for_several_messages(world: World) -> None:
    sink = await world.sink("127.0.0.2")
    for i in range(3):
        await submit(world.relay, [f"r{i}@far.example"], subject=f"thư {i}")
        await sink.wait_messages(i + 1)
    assert sink.handler.connections == 1


async def test_smtputf8_round_trip(world: World) -> None:
    sink = await world.sink("127.0.0.2")
    await submit(world.relay, ["người.nhận@ví-dụ.vn"], subject="Giấy mời: Hội nghị trực tuyến",
                 mail_options=["SMTPUTF8"])
    (got,) = await sink.wait_messages(1)
    assert got.rcpt_tos == ["người.nhận@ví-dụ.vn"] and "SMTPUTF8" in got.mail_options
    assert "Subject: Giấy mời: Hội nghị trực tuyến".encode() in got.content


async def test_inbound_mail_forwarded_to_agency_next_hop(world: World) -> None:
    home = world.sinks["127.0.0.9"]
    c = aiosmtplib.SMTP(hostname="127.0.0.1", port=world.relay.port("mx"), start_tls=False)
    await c.connect()
    await c.sendmail("someone@far.example", [f"vanthu@{DOMAIN}"], b"From: someone@far.example\r\nSubject: hi\r\n\r\nx\r\n")
    await c.quit()
    (got,) = await home.wait_messages(1)
    assert got.rcpt_tos == [f"vanthu@{DOMAIN}"] and got.mail_from == "someone@far.example"


async def test_expired_message_bounces(tmp_path: Path) -> None:
    dns = DnsServer(dict(ZONE))
    await dns.start()
    port = free_port()
    relay = await start_relay(mail_config(tmp_path, dns, remote_smtp_port=port, retry_first=0.2, retry_max=0.2,
                                          max_queue_lifetime=1.0, delay_warning=0.3), next_hop=f"127.0.0.9:{port}")
    home = Sink("127.0.0.9", port)
    await home.start()
    try:
        await submit(relay, ["x@retry.example"])  # nobody listens on 127.0.0.6: connection refused
        msgs = await home.wait_messages(2)
        actions = sorted(email.message_from_bytes(m.content, policy=email.policy.default).iter_parts().__next__()
                         .get_content().split("\n")[0] for m in msgs)
        reports = [list(email.message_from_bytes(m.content, policy=email.policy.default).iter_parts())[1]
                   .get_payload()[1]["Action"] for m in msgs]
        assert sorted(reports) == ["delayed", "failed"], actions
        await wait_empty(relay)
    finally:
        await stop_relay(relay)
        await home.stop()
        dns.stop()
