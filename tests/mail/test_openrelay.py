"""No open relay: address and routing tricks on the MX listener (no AUTH) and on submission
without AUTH are all refused, and nothing reaches the spool."""

from __future__ import annotations

import asyncio
import smtplib

import pytest

from tests.mail.conftest import Relay, client_tls

TRICKS = [
    "victim@example.com",                     # plain foreign domain
    "victim%example.com@dttg.gov.vn",         # percent hack through a hosted domain
    "victim!example.com@dttg.gov.vn",         # bang path
    "example.com!victim@dttg.gov.vn",         # bang path, other order
    "@dttg.gov.vn:victim@example.com",        # source route
    "@dttg.gov.vn,@x.org:victim@example.com", # multi-hop source route
    '"victim@example.com"@dttg.gov.vn',       # quoted local part carrying an @
    '"victim%example.com"@dttg.gov.vn',       # quoted percent hack
    "victim@example.com@dttg.gov.vn",         # two @
    "victim@[203.0.113.7]",                   # IP literal
    "victim@[127.0.0.1]",                     # IP literal of ourselves
    "victim@[IPv6:::1]",                      # IPv6 literal
    "victim@dttg.gov.vn.example.com",         # hosted domain as a prefix
    "victim@xdttg.gov.vn",                    # hosted domain as a suffix
    "victim@example.com.",                    # foreign with trailing dot
    "victim@localhost",                       # local names are not hosted
    "victim@dttg.gov.vn\r\nRCPT TO:<x@example.com>",  # CRLF injection (sent as one line)
]


def mx_rcpt(port: int, address: str) -> tuple[int, bytes]:
    s = smtplib.SMTP("127.0.0.1", port, timeout=10)
    try:
        s.ehlo("attacker.example")
        s.mail("spammer@example.net")
        if "\r\n" in address:
            # Becomes two commands; the hosted first part may pass, the smuggled one must not.
            s.send(f"RCPT TO:<{address}>\r\n".encode())
            s.getreply()
            return s.getreply()
        return s.rcpt(address)
    finally:
        s.close()


@pytest.mark.parametrize("address", TRICKS)
async def test_mx_refuses_relay_tricks(relay: Relay, address: str) -> None:
    code, text = await asyncio.to_thread(mx_rcpt, relay.port("mx"), address)
    assert 500 <= code < 600, (address, code, text)
    assert relay.service.spool.count() == 0


@pytest.mark.parametrize("address", ["vanthu@dttg.gov.vn", "VanThu@DTTG.GOV.VN", "someone@vp.dttg.gov.vn", "người.nhận@dttg.gov.vn"])
async def test_mx_accepts_hosted_recipients(relay: Relay, address: str) -> None:
    def send() -> tuple[int, bytes]:
        s = smtplib.SMTP("127.0.0.1", relay.port("mx"), timeout=10)
        try:
            s.ehlo("sender.example")
            s.mail("someone@example.net", options=["SMTPUTF8"] if not address.isascii() else [])
            code = s.rcpt(address)
            s.data(b"From: someone@example.net\r\nSubject: hello\r\n\r\nhi\r\n")
            return code
        finally:
            s.close()

    code, _ = await asyncio.to_thread(send)
    assert code == 250
    (env,) = list(relay.service.spool.envelopes())
    assert env.inbound and env.agency == ""


async def test_mx_never_offers_auth_and_submission_needs_it(relay: Relay) -> None:
    def probe() -> tuple[bytes, int, int]:
        s = smtplib.SMTP("127.0.0.1", relay.port("mx"), timeout=10)
        s.starttls(context=client_tls())
        _, ehlo = s.ehlo("x")
        s.close()
        t = smtplib.SMTP("127.0.0.1", relay.port("submission"), timeout=10)
        t.starttls(context=client_tls())
        t.ehlo("x")
        code, _ = t.mail("vanthu@dttg.gov.vn")
        rcode, _ = t.rcpt("victim@example.com")
        t.close()
        return ehlo, code, rcode

    ehlo, mail_code, rcpt_code = await asyncio.to_thread(probe)
    assert b"AUTH" not in ehlo
    assert mail_code == 530 and rcpt_code in (503, 530)
    assert relay.service.spool.count() == 0


def submission_rcpt_without_auth(port: int, address: str) -> tuple[int, int]:
    s = smtplib.SMTP("127.0.0.1", port, timeout=10)
    try:
        s.starttls(context=client_tls())
        s.ehlo("attacker.example")
        mail_code, _ = s.mail("vanthu@dttg.gov.vn")
        s.send(f"RCPT TO:<{address}>\r\n".encode())
        rcpt_code, _ = s.getreply()
        return mail_code, rcpt_code
    finally:
        s.close()


@pytest.mark.parametrize("address", TRICKS + ["victim@dttg.gov.vn."])
async def test_submission_without_auth_refuses_relay_tricks(relay: Relay, address: str) -> None:
    mail_code, rcpt_code = await asyncio.to_thread(submission_rcpt_without_auth, relay.port("submission"), address)
    assert mail_code == 530 and 500 <= rcpt_code < 600, (address, mail_code, rcpt_code)
    assert relay.service.spool.count() == 0
