"""mail.smtp_client: dot-stuffing and command building (pure), and real transactions over
loopback against stand-in remote hosts with and without PIPELINING (RFC 2920)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiosmtplib.protocol
import pytest

from mail.smtp_client import (ConnectFailed, ConnectionPool, OutboundConnection, StaleConnection, TlsContexts,
                              _command, dot_stuff)
from tests.mail.sinks import Sink, free_port

# -- pure -----------------------------------------------------------------------------------


def test_dot_stuff_doubles_leading_dots_and_ends_with_the_terminator() -> None:
    assert dot_stuff(b"a\r\n.b\r\n..c\r\n") == b"a\r\n..b\r\n...c\r\n.\r\n"
    assert dot_stuff(b".first\r\n") == b"..first\r\n.\r\n"
    assert dot_stuff(b"") == b".\r\n"


def test_dot_stuff_adds_a_missing_final_crlf() -> None:
    assert dot_stuff(b"x") == b"x\r\n.\r\n"
    assert dot_stuff(b"x\r\n.") == b"x\r\n..\r\n.\r\n"


def test_dot_stuff_normalises_bare_cr_and_lf() -> None:
    assert dot_stuff(b"a\nb\rc\r\n.d\n") == b"a\r\nb\r\nc\r\n..d\r\n.\r\n"


def test_dot_stuff_leaves_clean_content_alone() -> None:
    body = b"Subject: x\r\n\r\n" + b"line . with dots.\r\n" * 1000
    assert dot_stuff(body) == body + b".\r\n"


def test_command_drops_options_with_control_characters_and_refuses_such_addresses() -> None:
    assert _command(b"RCPT TO:<a@b>", [b"NOTIFY=FAILURE", b"ORCPT=rfc822;x\r\nRSET"]) == \
        b"RCPT TO:<a@b> NOTIFY=FAILURE\r\n"
    with pytest.raises(ValueError):
        _command(b"MAIL FROM:<a@b>\r\nRSET", [])


def test_aiosmtplib_protocol_still_has_what_exchange_uses() -> None:
    # OutboundConnection._exchange reads replies left in the protocol's buffer (module docstring).
    proto = aiosmtplib.protocol.SMTPProtocol
    assert callable(getattr(proto, "_read_response_from_buffer", None))
    p = proto(loop=asyncio.new_event_loop())
    assert isinstance(p._buffer, bytearray)
    p._buffer.extend(b"250 one\r\n250-two\r\n250 two b\r\n354 go\r\n")
    assert [(r.code, r.message) for r in iter(p._read_response_from_buffer, None)] == \
        [(250, "one"), (250, "two\ntwo b"), (354, "go")]
    p._loop.close()


# -- a pipelining stand-in remote host ---------------------------------------------------------


@dataclass
class PipeSink:
    """Advertises PIPELINING; answers every command of a segment in one write (as Postfix
    does), refuses RCPT to addresses starting with "bad" (550) or "later" (451)."""

    pipelining: bool = True
    close_after: int = 0  # close the connection after this many messages (0: never)
    messages: list[tuple[bytes, list[bytes], bytes]] = field(default_factory=list)
    connections: int = 0
    segments: list[bytes] = field(default_factory=list)
    port: int = 0
    server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.get_running_loop().create_server(lambda: _PipeProtocol(self), "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()


class _PipeProtocol(asyncio.Protocol):
    def __init__(self, sink: PipeSink) -> None:
        self.sink, self.buf, self.data = sink, bytearray(), None
        self.mail: bytes | None = None
        self.rcpts: list[bytes] = []
        self.done = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.sink.connections += 1
        transport.write(b"220 pipe.sink ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        self.sink.segments.append(data)
        self.buf += data
        out: list[bytes] = []
        while True:
            if self.data is not None:
                end = self.buf.find(b"\r\n.\r\n")
                if end < 0:
                    break
                assert self.mail is not None
                self.sink.messages.append((self.mail, self.rcpts, bytes(self.buf[:end + 2])))
                del self.buf[:end + 5]
                self.data, self.mail, self.rcpts = None, None, []
                self.done += 1
                out.append(b"250 2.0.0 queued\r\n")
                if self.sink.close_after and self.done >= self.sink.close_after:
                    self.transport.write(b"".join(out))
                    self.transport.close()
                    return
                continue
            nl = self.buf.find(b"\r\n")
            if nl < 0:
                break
            line = bytes(self.buf[:nl])
            del self.buf[:nl + 2]
            verb = line[:4].upper()
            if verb == b"EHLO":
                out.append(b"250-pipe.sink\r\n" + (b"250-PIPELINING\r\n" if self.sink.pipelining else b"") +
                           b"250 8BITMIME\r\n")
            elif verb == b"MAIL":
                self.mail = line[10:].strip(b"<>")
                out.append(b"250 2.1.0 ok\r\n")
            elif verb == b"RCPT":
                address = line[8:].split(b">")[0].lstrip(b"<")
                if address.startswith(b"bad"):
                    out.append(b"550 5.1.1 no such user\r\n")
                elif address.startswith(b"later"):
                    out.append(b"451 4.2.0 try later\r\n")
                else:
                    self.rcpts.append(address)
                    out.append(b"250 2.1.5 ok\r\n")
            elif verb == b"DATA":
                if self.mail is None or not self.rcpts:
                    out.append(b"554 5.5.1 no valid recipients\r\n")
                else:
                    self.data = b""
                    out.append(b"354 go ahead\r\n")
            elif verb == b"RSET":
                self.mail, self.rcpts = None, []
                out.append(b"250 2.0.0 ok\r\n")
            elif verb == b"QUIT":
                self.transport.write(b"".join(out) + b"221 bye\r\n")
                self.transport.close()
                return
            else:
                out.append(b"502 5.5.2 what\r\n")
        if out:
            self.transport.write(b"".join(out))


@pytest.fixture
async def pipe_sink() -> AsyncIterator[PipeSink]:
    s = PipeSink()
    await s.start()
    yield s
    await s.stop()


async def _open(port: int, address: str = "127.0.0.1") -> OutboundConnection:
    return await OutboundConnection.open("mx.test", address, port, local_hostname="relay.test", connect_timeout=2,
                                         command_timeout=2, tls_required=False, tls=TlsContexts(),
                                         verify_required=True)


# -- real transactions ----------------------------------------------------------------------------


async def test_pipelined_transaction_sends_commands_in_one_segment(pipe_sink: PipeSink) -> None:
    conn = await _open(pipe_sink.port)
    assert conn.pipelining
    result = await conn.transaction(b"a@x.test", [], [(b"r1@y.test", []), (b"r2@y.test", [])],
                                    dot_stuff(b"Subject: 1\r\n\r\n.dot\r\n"))
    assert result.mail.code == 250 and [r.code for r in result.rcpts if r] == [250, 250]
    assert result.data is not None and result.data.code == 250
    assert b"MAIL FROM:<a@x.test>\r\nRCPT TO:<r1@y.test>\r\nRCPT TO:<r2@y.test>\r\nDATA\r\n" in pipe_sink.segments
    assert pipe_sink.messages == [(b"a@x.test", [b"r1@y.test", b"r2@y.test"], b"Subject: 1\r\n\r\n..dot\r\n")]
    await conn.quit()


async def test_several_messages_on_one_connection_without_rset(pipe_sink: PipeSink) -> None:
    conn = await _open(pipe_sink.port)
    for i in range(5):
        result = await conn.transaction(b"a@x.test", [], [(f"r{i}@y.test".encode(), [])], dot_stuff(b"x\r\n"))
        assert result.data is not None and result.data.code == 250
    assert len(pipe_sink.messages) == 5 and pipe_sink.connections == 1
    assert not any(b"RSET" in s for s in pipe_sink.segments)
    await conn.quit()


async def test_pipelined_mixed_recipient_replies_then_the_connection_stays_usable(pipe_sink: PipeSink) -> None:
    conn = await _open(pipe_sink.port)
    result = await conn.transaction(b"a@x.test", [], [(b"bad@y.test", []), (b"ok@y.test", []),
                                                      (b"later@y.test", [])], dot_stuff(b"x\r\n"))
    assert [r.code for r in result.rcpts if r] == [550, 250, 451] and result.data and result.data.code == 250
    # No valid recipient: DATA refused (554), the transaction reset, the next one still works.
    result = await conn.transaction(b"a@x.test", [], [(b"bad@y.test", [])], dot_stuff(b"x\r\n"))
    assert result.data is None and [r.code for r in result.rcpts if r] == [550]
    result = await conn.transaction(b"a@x.test", [], [(b"ok2@y.test", [])], dot_stuff(b"y\r\n"))
    assert result.data is not None and result.data.code == 250
    assert [m[1] for m in pipe_sink.messages] == [[b"ok@y.test"], [b"ok2@y.test"]]
    await conn.quit()


async def test_without_pipelining_one_command_per_round_trip() -> None:
    sink = PipeSink(pipelining=False)
    await sink.start()
    try:
        conn = await _open(sink.port)
        assert not conn.pipelining
        result = await conn.transaction(b"a@x.test", [], [(b"r@y.test", []), (b"bad@y.test", [])], dot_stuff(b"x\r\n"))
        assert [r.code for r in result.rcpts if r] == [250, 550] and result.data and result.data.code == 250
        assert not any(b"MAIL" in s and b"RCPT" in s for s in sink.segments)
        await conn.quit()
    finally:
        await sink.stop()


async def test_against_aiosmtpd_without_pipelining() -> None:
    port = free_port()
    sink = Sink("127.0.0.2", port)
    await sink.start()
    try:
        conn = await _open(port, "127.0.0.2")
        for i in range(2):
            result = await conn.transaction(b"a@x.test", [], [(b"r@y.test", [])], dot_stuff(b"Subject: t\r\n\r\n.x\r\n"))
            assert result.data is not None and result.data.code == 250
        got = await sink.wait_messages(2)
        assert got[0].content == b"Subject: t\r\n\r\n.x\r\n" and sink.handler.connections == 1
        await conn.quit()
    finally:
        await sink.stop()


async def test_a_reused_connection_closed_by_the_host_is_reported_stale() -> None:
    sink = PipeSink(close_after=1)
    await sink.start()
    try:
        conn = await _open(sink.port)
        await conn.transaction(b"a@x.test", [], [(b"r@y.test", [])], dot_stuff(b"x\r\n"))
        with pytest.raises(StaleConnection):
            for _ in range(3):  # the close may be seen at the first command or the write
                await conn.transaction(b"a@x.test", [], [(b"r@y.test", [])], dot_stuff(b"x\r\n"))
    finally:
        await sink.stop()


async def test_connect_refused_is_a_temporary_failure() -> None:
    with pytest.raises(ConnectFailed, match=r"^451 4\.4\.1 connection to mx.test"):
        await _open(free_port())


async def test_pool_limits_connections_per_destination_and_reuses_idle_ones(pipe_sink: PipeSink) -> None:
    pool = ConnectionPool(per_destination=2, idle_timeout=60)
    key = ("127.0.0.1", pipe_sink.port, False)
    first = await pool.acquire(key)
    second = await pool.acquire(key)
    assert first is None and second is None  # nothing idle yet: the caller connects
    third = asyncio.ensure_future(pool.acquire(key))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not third.done()  # the limit holds
    conn = await _open(pipe_sink.port)
    pool.release(key, conn)
    assert await third is conn  # handed over with the slot
    pool.release(key, None)
    pool.release(key, conn)
    await pool.close_idle(now=conn.last_used + 61)
    assert not conn.is_connected and pool.idle == {}
    await pool.close()
