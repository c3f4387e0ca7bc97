"""Limits and throttles over SMTP, and the pure policy functions."""

from __future__ import annotations

import asyncio
import smtplib
from pathlib import Path

import pytest

from mail.policy import RateLimiter, check_recipient_syntax, dsn_problem, from_header_domains, split_params
from tests.mail.conftest import PASSWORD, client_tls, mail_config, start_relay, stop_relay


def test_split_params_keeps_case_and_order() -> None:
    assert split_params("<a@b> SIZE=10 RET=hdrs ENVID=AbC", ("RET", "ENVID")) == ("<a@b> SIZE=10", {"RET": "hdrs", "ENVID": "AbC"})
    assert split_params('<"x y"@b> NOTIFY=NEVER', ("NOTIFY",)) == ('<"x y"@b>', {"NOTIFY": "NEVER"})
    assert split_params("no brackets", ("RET",)) == ("no brackets", {})


@pytest.mark.parametrize("params, bad", [({"RET": "ALL"}, True), ({"RET": "hdrs"}, False), ({"ENVID": "x" * 101}, True)])
def test_dsn_mail_params(params: dict[str, str], bad: bool) -> None:
    assert (dsn_problem(mail=params) is not None) == bad


def test_recipient_syntax_accepts_plain_and_international() -> None:
    for ok in ("a.b+tag@x.gov.vn", "người.nhận@ví-dụ.vn", "O'Brien@x.org"):
        assert check_recipient_syntax(ok) is None, ok


def test_from_header_domains() -> None:
    assert from_header_domains('"Bộ, Văn phòng" <vt@Bo.Gov.Vn.>') == ["bo.gov.vn"]
    assert from_header_domains("not an address") is None


def test_rate_limiter_window() -> None:
    now = [0.0]
    r = RateLimiter(2, 60, clock=lambda: now[0])
    r.record("a")
    r.record("a")
    assert not r.allowed("a") and r.allowed("b")
    now[0] = 60.0
    assert r.allowed("a")


async def test_rate_limit_size_and_recipient_limits(tmp_path: Path) -> None:
    relay = await start_relay(mail_config(tmp_path, rate_messages_per_minute=2, max_recipients=3,
                                          max_message_size=2048))
    try:
        def run() -> list[object]:
            out: list[object] = []
            s = smtplib.SMTP("127.0.0.1", relay.port("submission"), timeout=10)
            s.starttls(context=client_tls())
            s.login("vanthu", PASSWORD)
            body = b"From: vanthu@dttg.gov.vn\r\nSubject: x\r\n\r\nhi\r\n"
            for _ in range(2):
                s.sendmail("vanthu@dttg.gov.vn", ["a@example.org"], body)
            try:
                s.sendmail("vanthu@dttg.gov.vn", ["a@example.org"], body)
            except smtplib.SMTPSenderRefused as e:
                out.append((e.smtp_code, e.smtp_error))
            s.close()
            return out

        (rate,) = await asyncio.to_thread(run)
        assert rate[0] == 451 and rate[1].startswith(b"4.7.1")  # type: ignore[index]
        relay.service.directory._verified.clear()
    finally:
        await stop_relay(relay)
    relay = await start_relay(mail_config(tmp_path, max_recipients=3, max_message_size=2048))
    try:
        def limits() -> tuple[object, object]:
            s = smtplib.SMTP("127.0.0.1", relay.port("submission"), timeout=10)
            s.starttls(context=client_tls())
            s.login("vanthu", PASSWORD)
            s.mail("vanthu@dttg.gov.vn")
            codes = [s.rcpt(f"r{i}@example.org")[0] for i in range(4)]
            s.rset()
            s.mail("vanthu@dttg.gov.vn")
            s.rcpt("a@example.org")
            big = s.data(b"From: vanthu@dttg.gov.vn\r\n\r\n" + b"x" * 60 + b"\r\n" + (b"y" * 70 + b"\r\n") * 40)
            s.close()
            return codes, big

        codes, big = await asyncio.to_thread(limits)
        assert codes == [250, 250, 250, 452]
        assert big[0] == 552  # type: ignore[index]
    finally:
        await stop_relay(relay)


async def test_failed_auth_is_throttled_per_address(tmp_path: Path) -> None:
    relay = await start_relay(mail_config(tmp_path, auth_fail_limit=3))
    try:
        def attempts() -> list[int]:
            codes = []
            s = smtplib.SMTP("127.0.0.1", relay.port("submission"), timeout=10)
            s.starttls(context=client_tls())
            s.ehlo("x")
            for pw in ("wrong-1", "wrong-2", "wrong-3", PASSWORD):
                codes.append(s.docmd("AUTH", "PLAIN " + __import__("base64").b64encode(
                    f"\0vanthu\0{pw}".encode()).decode())[0])
            s.close()
            return codes

        assert await asyncio.to_thread(attempts) == [535, 535, 535, 454]
    finally:
        await stop_relay(relay)
