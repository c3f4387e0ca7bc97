"""Submission as agencies' mail clients do it: smtplib/aiosmtplib over loopback."""

from __future__ import annotations

import asyncio
import smtplib
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY

import aiosmtplib
import pytest

from tests.mail.conftest import DOMAIN, PASSWORD, Relay, client_tls


def message(sender: str = f"vanthu@{DOMAIN}", to: str = "nguoinhan@example.org", subject: str = "Giấy mời họp") -> EmailMessage:
    m = EmailMessage()
    m["From"] = sender
    m["To"] = to
    m["Subject"] = subject
    m.set_content("Kính gửi các đơn vị,\nTrân trọng kính mời.\n")
    return m


def submit(port: int, msg: EmailMessage, *, login: bool = True, tls: bool = True, mail_from: str | None = None,
           rcpts: list[str] | None = None) -> None:
    """Submit and QUIT (blocking: run it in a thread, never on the event loop)."""
    s = smtplib.SMTP("127.0.0.1", port, timeout=10)
    s.ehlo("client.example")
    if tls:
        s.starttls(context=client_tls())
        s.ehlo("client.example")
    if login:
        s.login("vanthu", PASSWORD)
    try:
        s.send_message(msg, from_addr=mail_from, to_addrs=rcpts)
    finally:
        s.close()


def queued(relay: Relay) -> list:  # type: ignore[type-arg]
    return list(relay.service.spool.envelopes())


async def test_submission_with_starttls_and_auth_is_queued(relay: Relay) -> None:
    await asyncio.to_thread(submit, relay.port("submission"), message())
    (env,) = [e for e in queued(relay) if not e.is_bounce]
    assert env.mail_from == f"vanthu@{DOMAIN}" and env.agency == "bo-dttg" and env.account == "vanthu"
    content = relay.service.spool.content(env.id)
    assert content.startswith(b"Received: from client.example ([127.0.0.1])\r\n\tby relay.lienthong.test")
    assert b"with ESMTPSA id " + env.id.encode() in content


async def test_ehlo_advertises_extensions(relay: Relay) -> None:
    def ehlo() -> tuple[str, str]:
        s = smtplib.SMTP("127.0.0.1", relay.port("submission"), timeout=10)
        code, before = s.ehlo("c")
        s.starttls(context=client_tls())
        code, after = s.ehlo("c")
        s.quit()
        return before.decode(), after.decode()

    before, after = await asyncio.to_thread(ehlo)
    for ext in ("PIPELINING", "SIZE", "8BITMIME", "SMTPUTF8", "STARTTLS", "DSN", "ENHANCEDSTATUSCODES"):
        assert ext in before, ext
    assert "AUTH" not in before, "AUTH is offered only after TLS"
    assert "AUTH LOGIN PLAIN" in after or "AUTH PLAIN LOGIN" in after


async def test_without_tls_or_auth_nothing_is_accepted(relay: Relay) -> None:
    with pytest.raises(smtplib.SMTPException):
        await asyncio.to_thread(submit, relay.port("submission"), message(), tls=False)
    with pytest.raises(smtplib.SMTPSenderRefused) as info:
        await asyncio.to_thread(submit, relay.port("submission"), message(), login=False)
    assert info.value.smtp_code == 530
    with pytest.raises(smtplib.SMTPAuthenticationError):
        def wrong() -> None:
            s = smtplib.SMTP("127.0.0.1", relay.port("submission"), timeout=10)
            s.starttls(context=client_tls())
            try:
                s.login("vanthu", "wrong password")
            finally:
                s.close()
        await asyncio.to_thread(wrong)
    assert queued(relay) == []


async def test_implicit_tls_submission(relay: Relay) -> None:
    c = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.port("smtps"), use_tls=True, tls_context=client_tls())
    await c.connect()
    await c.login("vanthu", PASSWORD)
    await c.send_message(message())
    await c.quit()
    assert len(queued(relay)) == 1


@pytest.mark.parametrize("mail_from, header_from, code_text", [
    ("vanthu@other.gov.vn", f"vanthu@{DOMAIN}", "550 5.7.1"),
    (f"vanthu@{DOMAIN}", "ke.gia.mao@other.gov.vn", "550 5.7.1"),
    (f"vanthu@{DOMAIN}", f"Văn thư <vanthu@{DOMAIN}>, x@laocai.gov.vn", "550 5.7.1"),  # another agency's domain
])
async def test_sender_must_be_in_agency_domains(relay: Relay, mail_from: str, header_from: str, code_text: str) -> None:
    with pytest.raises((smtplib.SMTPSenderRefused, smtplib.SMTPDataError)) as info:
        await asyncio.to_thread(submit, relay.port("submission"), message(sender=header_from), mail_from=mail_from)
    assert f"{info.value.smtp_code} {info.value.smtp_error.decode()}".startswith(code_text)
    assert queued(relay) == []


async def test_subdomain_and_case_of_own_domain_are_allowed(relay: Relay) -> None:
    await asyncio.to_thread(submit, relay.port("submission"), message(sender="VanThu@VP.DTTG.GOV.VN."),
                            mail_from="vanthu@vp.dttg.gov.vn")
    assert len(queued(relay)) == 1


async def test_smtputf8_vietnamese_address_and_subject(relay: Relay) -> None:
    msg = message(to="người.nhận@ví-dụ.vn", subject="Giấy mời: Hội nghị trực tuyến")
    await asyncio.to_thread(submit, relay.port("submission"), msg)
    (env,) = queued(relay)
    assert env.smtputf8 and env.recipients[0].address == "người.nhận@ví-dụ.vn"
    assert "Giấy mời: Hội nghị trực tuyến".encode() in relay.service.spool.content(env.id)


async def test_dsn_parameters_are_kept(relay: Relay) -> None:
    def send() -> None:
        s = smtplib.SMTP("127.0.0.1", relay.port("submission"), timeout=10)
        s.starttls(context=client_tls())
        s.login("vanthu", PASSWORD)
        s.sendmail(f"vanthu@{DOMAIN}", ["a@example.org"], message().as_bytes(policy=SMTP_POLICY),
                   mail_options=["RET=HDRS", "ENVID=Env-ID.42"], rcpt_options=["NOTIFY=SUCCESS,FAILURE",
                                                                              "ORCPT=rfc822;a@example.org"])
        s.quit()

    await asyncio.to_thread(send)
    (env,) = queued(relay)
    assert env.ret == "HDRS" and env.envid == "Env-ID.42"
    assert env.recipients[0].notify == ["SUCCESS", "FAILURE"] and env.recipients[0].orcpt == "rfc822;a@example.org"


async def test_bad_dsn_parameter_gets_501(relay: Relay) -> None:
    def send() -> None:
        s = smtplib.SMTP("127.0.0.1", relay.port("submission"), timeout=10)
        s.starttls(context=client_tls())
        s.login("vanthu", PASSWORD)
        try:
            s.sendmail(f"vanthu@{DOMAIN}", ["a@example.org"], message().as_bytes(policy=SMTP_POLICY), rcpt_options=["NOTIFY=NEVER,SUCCESS"])
        finally:
            s.close()

    with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
        await asyncio.to_thread(send)
    code, text = info.value.recipients["a@example.org"]
    assert code == 501 and text.startswith(b"5.5.4")


async def test_accepted_messages_are_logged_in_batches_naming_each(relay: Relay,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    import logging
    import re

    def send_three() -> list[str]:
        s = smtplib.SMTP("127.0.0.1", relay.port("mx"), timeout=10)
        s.ehlo("c.example")
        ids = []
        for i in range(3):
            s.mail("a@far.example")
            s.rcpt(f"vanthu@{DOMAIN}")
            code, reply = s.data(f"Subject: m{i}\r\n\r\nx\r\n".encode())
            ids.append(re.search(r"Queued as (\w+)", reply.decode()).group(1))  # type: ignore[union-attr]
        s.quit()
        return ids

    with caplog.at_level(logging.INFO, logger="mail.handler"):
        ids = await asyncio.to_thread(send_three)
        for handler in relay.service._handlers:  # what the 20 ms timer has not written yet
            handler.flush_accept_log()
    lines = [r for r in caplog.records if r.getMessage() == "messages accepted"]
    assert 1 <= len(lines) <= 3
    assert [q for r in lines for q in r.queue_ids.split(",")] == ids  # type: ignore[attr-defined]
    assert sum(r.messages for r in lines) == 3 and all(r.mode == "mx" for r in lines)  # type: ignore[attr-defined]


async def test_pending_accept_log_is_written_once_at_flush(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from prometheus_client import CollectorRegistry

    from mail.directory import Directory
    from mail.handler import RelayHandler
    from mail.metrics import MailMetrics
    from mail.policy import RateLimiter

    handler = RelayHandler("submission", Directory(), None, "h", MailMetrics(CollectorRegistry()),  # type: ignore[arg-type]
                           RateLimiter(10, 60.0), 10)
    with caplog.at_level(logging.INFO, logger="mail.handler"):
        handler._log_accepted("q1", "bo-dttg", 2, 100)
        handler._log_accepted("q2", "so-laocai", 1, 50)
        handler.flush_accept_log()  # as MailService.stop does
        await asyncio.sleep(0.05)  # past the batch window: the cancelled timer writes nothing more
    (line,) = [r for r in caplog.records if r.getMessage() == "messages accepted"]
    assert (line.queue_ids, line.agencies, line.recipients, line.bytes) == (  # type: ignore[attr-defined]
        "q1,q2", "bo-dttg,so-laocai", 3, 150)
