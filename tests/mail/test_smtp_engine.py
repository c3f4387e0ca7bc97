"""RelaySMTP's changes to aiosmtpd's engine: the bulk DATA reader and its strict checks (pure
cores on bytes, and over loopback), the per-connection constructor and the address fast path.
The last tests fail loudly when an aiosmtpd upgrade changes what these overrides copy."""

from __future__ import annotations

import asyncio
import smtplib
from importlib.metadata import version
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP

from mail.smtp_server import (LINE_LIMIT, REPLY_BARE_CR_LF, REPLY_LINE_TOO_LONG, RelaySMTP, data_problem,
                              read_data, unstuff)
from tests.mail.conftest import Relay
from tests.mail.test_smuggling import HEAD, converse


def stuffed(lines: list[bytes]) -> bytes:
    """What a client sends for these lines (dot-stuffed, CRLF, the terminator)."""
    return b"".join((b"." + x if x.startswith(b".") else x) + b"\r\n" for x in lines) + b".\r\n"


async def read_all(chunks: list[bytes], max_size: int | None = None, eof: bool = False) -> tuple[Any, int, bytes]:
    reader = asyncio.StreamReader(limit=SMTP.line_length_limit)
    reader.set_transport(_Transport())  # type: ignore[arg-type]

    async def feed() -> None:
        for c in chunks:
            reader.feed_data(c)
            await asyncio.sleep(0)
        if eof:
            reader.feed_eof()

    feeder = asyncio.create_task(feed())
    try:
        raw, size = await read_data(reader, max_size)
    finally:
        await feeder
    rest = bytes(reader._buffer)  # type: ignore[attr-defined]
    return raw, size, rest


class _Transport(asyncio.ReadTransport):
    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


@pytest.mark.parametrize("split", [1, 2, 3, 5, 7, 64, 10_000])
async def test_read_data_any_chunking(split: int) -> None:
    lines = [b"Subject: x", b"", b".leading dot", b"..two", b"end."]
    wire = stuffed(lines) + b"QUIT\r\n"
    chunks = [wire[i:i + split] for i in range(0, len(wire), split)]
    raw, size, rest = await read_all(chunks)
    assert raw == b"Subject: x\r\n\r\n..leading dot\r\n...two\r\nend.\r\n" and size == len(raw)
    assert unstuff(raw) == b"".join(x + b"\r\n" for x in lines)
    assert rest == b"QUIT\r\n"  # pipelined command stays for the command loop


async def test_read_data_empty_message_and_empty_first_line() -> None:
    assert (await read_all([b".\r\nQUIT\r\n"]))[0::2] == (b"", b"QUIT\r\n")
    assert (await read_all([b"\r\n.\r\n"]))[0] == b"\r\n"
    assert (await read_all([b"\r", b"\n", b".", b"\r", b"\n"]))[0] == b"\r\n"


async def test_read_data_over_limit_is_drained_not_kept() -> None:
    body = b"x" * 998 + b"\r\n"
    chunks = [body] * 300 + [b".\r\nMAIL FROM:<a@b.example>\r\n"]
    raw, size, rest = await read_all(chunks, max_size=10_000)
    assert raw is None and size == len(body) * 300 and rest == b"MAIL FROM:<a@b.example>\r\n"


async def test_read_data_exactly_at_limit_is_kept() -> None:
    raw, size, _ = await read_all([b"abc\r\n.\r\n"], max_size=5)
    assert raw == b"abc\r\n" and size == 5
    raw, size, _ = await read_all([b"abcd\r\n.\r\n"], max_size=5)
    assert raw is None and size == 6


async def test_read_data_connection_closed() -> None:
    with pytest.raises(ConnectionResetError):
        await read_all([b"Subject: x\r\n\r\nno end"], eof=True)


@pytest.mark.parametrize("raw", [
    b"a\nb\r\n", b"a\rb\r\n", b"a\r\n\n.\n\r\n", b"hello\n.\nMAIL FROM:<x@y>\r\n", b"\r\r\n", b"x\n",
])
def test_bare_cr_or_lf_refused(raw: bytes) -> None:
    assert data_problem(raw) == ("bare_cr_lf", REPLY_BARE_CR_LF)


def test_line_length_limit_is_aiosmtpds() -> None:
    # aiosmtpd refuses a line over 1001 bytes with its CRLF (999 + CRLF passes, 1000 + CRLF not).
    ok = b"a" * (LINE_LIMIT - 2) + b"\r\n"
    assert data_problem(b"x\r\n" + ok + b"y\r\n") is None
    assert data_problem(b"x\r\n" + b"a" * (LINE_LIMIT - 1) + b"\r\n") == ("line_too_long", REPLY_LINE_TOO_LONG)
    assert data_problem(b"short\r\n" * 2000) is None
    assert data_problem(b"") is None


def _random_data(rng: Any) -> bytes:
    """A DATA block ending with CRLF: lines of random lengths around the limit, sometimes with a
    bare CR or LF somewhere."""
    lines = []
    for _ in range(rng.randrange(1, 40)):
        n = rng.choice([0, 1, 70, LINE_LIMIT - 3, LINE_LIMIT - 2, LINE_LIMIT - 1, LINE_LIMIT])
        lines.append(bytes(rng.choice(b"abc .") for _ in range(n)))
    raw = bytearray(b"\r\n".join(lines) + b"\r\n")
    if rng.random() < 0.3:
        raw.insert(rng.randrange(len(raw) + 1), rng.choice(b"\r\n"))
    if raw.endswith(b"\r\n"):
        return bytes(raw)
    return bytes(raw) + b"\r\n"


def test_small_and_large_data_checks_agree() -> None:
    """Small messages are checked with bytes methods, large ones with numpy: same verdicts."""
    import random

    from mail.smtp_server import _large_data_problem, _small_data_problem

    rng = random.Random(4)
    verdicts = set()
    for _ in range(600):
        raw = _random_data(rng)
        verdict = _small_data_problem(raw)
        assert verdict == _large_data_problem(raw), raw
        verdicts.add(verdict and verdict[0])
    assert verdicts == {None, "bare_cr_lf", "line_too_long"}  # every outcome was exercised
    for raw in (b"a\nb\r\n", b"\r\r\n", b"x\n", b"\nx\r\n", b"x\r\n\r"):
        assert _small_data_problem(raw) == _large_data_problem(raw) == ("bare_cr_lf", REPLY_BARE_CR_LF)


def test_unstuff() -> None:
    assert unstuff(b"..a\r\n.b\r\nc.\r\n") == b".a\r\nb\r\nc.\r\n"
    assert unstuff(b"no dots\r\n") == b"no dots\r\n"


async def test_size_limit_gets_552_and_session_goes_on(tmp_path: Any) -> None:
    from tests.mail.conftest import mail_config, start_relay, stop_relay

    relay = await start_relay(mail_config(tmp_path, max_message_size=4096))
    try:
        replies = await converse(relay.port("mx"), [*HEAD, b"Subject: big\r\n\r\n" + b"y" * 900 + b"\r\n" * 10
                                                    + (b"z" * 900 + b"\r\n") * 5 + b".\r\n",
                                                    b"MAIL FROM:<a@example.net>\r\n", b"RCPT TO:<vanthu@dttg.gov.vn>\r\n",
                                                    b"DATA\r\n", b"Subject: small\r\n\r\nok\r\n.\r\n"])
        assert any(r.startswith(b"552 5.3.4") for r in replies), replies
        assert any(r.startswith(b"250 2.0.0 Queued as") for r in replies), replies
        assert relay.service.spool.count() == 1
    finally:
        await stop_relay(relay)


async def test_declared_size_over_limit_gets_552_5_3_4(tmp_path: Any) -> None:
    from tests.mail.conftest import mail_config, start_relay, stop_relay

    relay = await start_relay(mail_config(tmp_path, max_message_size=4096))
    try:
        replies = await converse(relay.port("mx"), [b"EHLO c.example\r\n", b"MAIL FROM:<a@example.net> SIZE=5000\r\n",
                                                    b"MAIL FROM:<a@example.net> SIZE=4000\r\n"])
        assert replies[-2].startswith(b"552 5.3.4 Message size exceeds"), replies
        assert replies[-1].startswith(b"250"), replies
    finally:
        await stop_relay(relay)


async def test_pipelined_transactions_and_dot_stuffing_round_trip(relay: Relay) -> None:
    msg = b"Subject: dots\r\n\r\n.one\r\n..two\r\nthree.\r\n"
    wire = b"".join([b"EHLO c.example\r\n", b"MAIL FROM:<a@example.net>\r\n", b"RCPT TO:<vanthu@dttg.gov.vn>\r\n",
                     b"DATA\r\n"])
    body = b"Subject: dots\r\n\r\n..one\r\n...two\r\nthree.\r\n.\r\n"
    second = b"MAIL FROM:<b@example.net>\r\nRCPT TO:<vanthu@dttg.gov.vn>\r\nDATA\r\n"
    replies = await converse(relay.port("mx"), [wire, body + second, b".\r\nQUIT\r\n"])
    queued = [r for r in replies if r.startswith(b"250 2.0.0 Queued as")]
    assert len(queued) == 2 and replies[-1].startswith(b"221"), replies
    contents = sorted(relay.service.spool.content(i) for i in relay.service.spool.ids())
    assert any(c.endswith(b"\r\n\r\n" + msg.split(b"\r\n\r\n", 1)[1]) for c in contents), contents
    assert all(c.startswith(b"Received: from c.example ([127.0.0.1])\r\n\tby relay.lienthong.test") for c in contents)


async def test_smtplib_send_round_trip(relay: Relay) -> None:
    body = "Subject: t\r\n\r\n" + "".join(f".line {i}\r\n" for i in range(3000))

    def send() -> None:
        with smtplib.SMTP("127.0.0.1", relay.port("mx"), timeout=10) as s:
            s.sendmail("a@example.net", ["vanthu@dttg.gov.vn"], body.encode())

    await asyncio.to_thread(send)
    (qid,) = relay.service.spool.ids()
    assert relay.service.spool.content(qid).endswith(body.encode())


async def test_idle_session_is_closed_and_commands_keep_it_open() -> None:
    from mail import policy
    from mail.metrics import MailMetrics
    from prometheus_client import CollectorRegistry

    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: RelaySMTP(_Handler(), hostname="h", timeout=1.0,
                                                        throttle=policy.FailureThrottle(1),
                                                        metrics=MailMetrics(CollectorRegistry())), "127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
        assert (await reader.readline()).startswith(b"220")
        for _ in range(5):  # each NOOP moves the deadline: open for longer than the timeout
            writer.write(b"NOOP\r\n")
            assert (await reader.readline()).startswith(b"250")
            await asyncio.sleep(0.3)
        assert await reader.read() == b""  # then, idle, it is closed by the timer
        writer.close()
    finally:
        server.close()


async def test_ehlo_reply_is_one_write_with_every_extension() -> None:
    from mail.handler import RelayHandler

    handler = RelayHandler.__new__(RelayHandler)
    handler.mode = "mx"

    class _Session:
        host_name = ""

    stock = ["250-relay", "250-SIZE 1000", "250-8BITMIME", "250-STARTTLS", "250-AUTH LOGIN PLAIN", "250 HELP"]
    (reply,) = await handler.handle_EHLO(None, _Session(), None, "client.example", list(stock))  # type: ignore[arg-type]
    lines = reply.split("\r\n")
    assert [x for x in lines if not x.startswith("250-")] == ["250 HELP"] == lines[-1:]
    assert {"250-PIPELINING", "250-DSN", "250-ENHANCEDSTATUSCODES", "250-STARTTLS"} <= set(lines)
    assert not any("AUTH" in x for x in lines)  # none on the MX listener


def test_sanitized_log_still_logs_when_enabled(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    import aiosmtpd.smtp

    from mail.smtp_server import _sanitized_log_if_enabled

    assert aiosmtpd.smtp.sanitized_log is _sanitized_log_if_enabled
    logger = logging.getLogger("mail.log")
    with caplog.at_level(logging.DEBUG, logger="mail.log"):
        aiosmtpd.smtp.sanitized_log(logger.debug, "line %r", b"MAIL FROM:<a@b>\r\n")
    assert [r.getMessage() for r in caplog.records] == ["line b'MAIL FROM:<a@b>\\r\\n'"]
    caplog.clear()
    aiosmtpd.smtp.sanitized_log(logger.info, "line %r", b"x")  # mail.log is at WARNING
    assert caplog.records == []


async def test_open_sessions_are_counted_once_each_even_after_starttls(tmp_path: Any) -> None:
    from prometheus_client import CollectorRegistry

    from lienthong import tls
    from mail import policy
    from mail.metrics import MailMetrics
    from mail.smtp_server import OpenSessions
    from tests.mail.conftest import client_tls, mail_config
    from tests.mail.test_delivery_schedule import until

    sessions = OpenSessions()
    ctx = tls.server_context(mail_config(tmp_path))
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: RelaySMTP(_Handler(), hostname="h", tls_context=ctx, sessions=sessions,
                                                        throttle=policy.FailureThrottle(1),
                                                        metrics=MailMetrics(CollectorRegistry())), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        def two_sessions() -> tuple[int, int]:
            with smtplib.SMTP("127.0.0.1", port) as first, smtplib.SMTP("127.0.0.1", port) as second:
                first.starttls(context=client_tls())
                first.ehlo()
                second.noop()
                both = sessions.count
            with smtplib.SMTP("127.0.0.1", port) as third:
                third.noop()
                return both, sessions.count

        both, then = await asyncio.to_thread(two_sessions)
        assert both == 2 and then >= 1
        await until(lambda: sessions.count == 0)
    finally:
        server.close()


# --- guards on what the overrides copy from aiosmtpd ------------------------------------------

def test_aiosmtpd_version_is_the_one_the_overrides_copy() -> None:
    assert version("aiosmtpd") == "1.4.6", "RelaySMTP copies parts of aiosmtpd 1.4.6: review mail/smtp_server.py"


class _Handler:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 OK"

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]) -> list[str]:
        return responses


async def test_constructor_matches_aiosmtpds() -> None:
    from mail import policy
    from mail.metrics import MailMetrics
    from prometheus_client import CollectorRegistry

    handler = _Handler()
    stock = SMTP(handler, hostname="h", enable_SMTPUTF8=True, auth_exclude_mechanism=["LOGIN"])
    ours = RelaySMTP(handler, hostname="h", enable_SMTPUTF8=True, auth_exclude_mechanism=["LOGIN"],
                     throttle=policy.FailureThrottle(1), metrics=MailMetrics(CollectorRegistry()))
    extra = {"pending_dsn", "_throttle", "_metrics", "_implicit_tls", "_deadline", "_sessions", "_counted"}
    assert set(vars(stock)) == set(vars(ours)) - extra
    assert set(stock._smtp_methods) == set(ours._smtp_methods)
    assert all(m.__self__ is ours for m in ours._smtp_methods.values())
    assert ours._smtp_methods["DATA"].__func__ is RelaySMTP.smtp_DATA
    assert {k: v.is_builtin for k, v in stock._auth_methods.items()} == {
        k: v.is_builtin for k, v in ours._auth_methods.items()}
    assert stock._handle_hooks == ours._handle_hooks and stock._ehlo_hook_ver == ours._ehlo_hook_ver
    for name in ("data_size_limit", "enable_SMTPUTF8", "hostname", "require_starttls", "_timeout_duration",
                 "_auth_require_tls", "_auth_required", "_tls_handshake_okay", "_enforce_call_limit"):
        assert getattr(stock, name) == getattr(ours, name), name


@pytest.mark.parametrize("arg", [
    "<a@b.example>", "<a.b+c@x-y.example> SIZE=10", "<A_B@EX.COM>", "<a@b.c>SIZE=1", " <a@b.c>", "<a..b@c>",
    "<.a@c>", "<a@[1.2.3.4]>", "<a@b.c.>", "<>", "<a@b>  BODY=8BITMIME", "<a@b> (comment) SIZE=1",
    '<"x y"@b.example>', "<@r.example:a@b.example>", "<a%c@b.example>", "<người@ví-dụ.vn>", "a@b.example",
    "<a@b.example", "<a@b.example>\tSIZE=5", "<a@b@c.example>", "<a!b@c.example>",
])
async def test_address_fast_path_agrees_with_aiosmtpd(arg: str) -> None:
    from mail import policy
    from mail.metrics import MailMetrics
    from prometheus_client import CollectorRegistry

    stock = SMTP(_Handler())
    ours = RelaySMTP(_Handler(), throttle=policy.FailureThrottle(1), metrics=MailMetrics(CollectorRegistry()))
    assert ours._getaddr(arg) == stock._getaddr(arg)
