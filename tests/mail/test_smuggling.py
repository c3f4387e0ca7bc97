"""Strict input over raw sockets: smuggling sequences, bare CR/LF, long lines, header injection."""

from __future__ import annotations

import asyncio

import pytest

from tests.mail.conftest import Relay


async def converse(port: int, lines: list[bytes]) -> list[bytes]:
    """Send each chunk and read what the server answers until it goes quiet."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    replies = [await reader.readline()]
    for chunk in lines:
        writer.write(chunk)
        await writer.drain()
        while True:
            try:
                line = await asyncio.wait_for(reader.readline(), 0.5)
            except TimeoutError:
                break
            if not line:
                break
            replies.append(line)
    writer.close()
    return replies


HEAD = [b"EHLO attacker.example\r\n", b"MAIL FROM:<a@example.net>\r\n", b"RCPT TO:<vanthu@dttg.gov.vn>\r\n",
        b"DATA\r\n"]


@pytest.mark.parametrize("body", [
    # CVE-2023-51764 style: a second transaction hidden behind a non-CRLF end of data.
    b"Subject: one\r\n\r\nhello\n.\nMAIL FROM:<b@example.net>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nsmuggled\r\n.\r\n",
    b"Subject: one\r\n\r\nhello\r.\rMAIL FROM:<b@example.net>\r\n.\r\n",
    b"Subject: one\r\n\r\nhello\r\n.\nMAIL FROM:<b@example.net>\r\n.\r\n",
    b"Subject: one\r\n\r\nbare LF here\nand more\r\n.\r\n",
    b"Subject: one\r\n\r\nbare CR here\rand more\r\n.\r\n",
])
async def test_smuggling_and_bare_line_ends_are_refused(relay: Relay, body: bytes) -> None:
    replies = await converse(relay.port("mx"), [*HEAD, body])
    text = b"".join(replies)
    assert b"550 5.6.0" in text, text
    assert relay.service.spool.count() == 0
    assert b"victim@example.com" not in text


async def test_overlong_line_refused(relay: Relay) -> None:
    replies = await converse(relay.port("mx"), [*HEAD, b"Subject: x\r\n\r\n" + b"a" * 1200 + b"\r\n.\r\n"])
    assert any(r.startswith(b"500") for r in replies), replies
    assert relay.service.spool.count() == 0


async def test_crlf_in_ehlo_name_cannot_inject_headers(relay: Relay) -> None:
    replies = await converse(relay.port("mx"), [b"EHLO evil\nX-Injected: yes\r\n", *HEAD[1:],
                                                 b"Subject: x\r\n\r\nok\r\n.\r\n"])
    assert any(r.startswith(b"250 2.0.0 Queued") for r in replies), replies
    (env,) = list(relay.service.spool.envelopes())
    content = relay.service.spool.content(env.id)
    assert b"\nX-Injected" not in content and content.startswith(b"Received: from evil ")


async def test_clean_message_after_refused_one_still_works(relay: Relay) -> None:
    replies = await converse(relay.port("mx"), [*HEAD, b"Subject: x\r\n\r\nbad\nline\r\n.\r\n",
                                                 b"MAIL FROM:<a@example.net>\r\n", b"RCPT TO:<vanthu@dttg.gov.vn>\r\n",
                                                 b"DATA\r\n", b"Subject: ok\r\n\r\ngood\r\n.\r\n"])
    assert any(r.startswith(b"250 2.0.0 Queued as") for r in replies), replies
    assert relay.service.spool.count() == 1
