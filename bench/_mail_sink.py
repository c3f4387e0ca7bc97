"""Discarding SMTP sink in its own process: the stand-in remote MX for bench.mail.

Run as ``python -m bench._mail_sink``: prints ``READY PORT`` once listening on 127.0.0.1
(port 0).  Each ``EXPECT N`` line on stdin resets the counter; ``DONE FIRST LAST COUNT``
(wall-clock times of the first and last message) is printed once N messages have arrived.

A minimal SMTP server on a bare asyncio protocol (PIPELINING, 8BITMIME, SMTPUTF8), which
throws DATA away chunk by chunk while looking for CRLF.CRLF.  Both relays under test send to
it, and it shares the machine's cores with them: aiosmtpd, which reads DATA line by line in
Python, spent more CPU per 100 KB message than the relays did, so it capped both delivery
rates.  Postfix's ``smtp-sink`` cannot say when the last message arrived.
"""

from __future__ import annotations

import asyncio
import sys
import time

EHLO = (b"250-sink.bench\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-SIZE 0\r\n"
        b"250 ENHANCEDSTATUSCODES\r\n")


class Counter:
    def __init__(self) -> None:
        self.expected = 0
        self.count = 0
        self.first = 0.0
        self.last = 0.0
        self.done = asyncio.Event()

    def arrived(self, messages: int) -> None:
        now = time.time()
        if self.count == 0:
            self.first = now
        self.count += messages
        self.last = now
        if self.expected and self.count >= self.expected:
            self.done.set()


class SinkProtocol(asyncio.Protocol):
    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self.buf = bytearray()
        self.in_data = False
        self.at_start = False
        self.rcpts = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(b"220 sink.bench ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buf += data
        out = []
        while self.buf:
            if self.in_data:
                if self.at_start and len(self.buf) >= 3 and self.buf[:3] == b".\r\n":
                    end, skip = 0, 3
                else:
                    i = self.buf.find(b"\r\n.\r\n")
                    end, skip = (i, i + 5) if i >= 0 else (-1, 0)
                if end < 0:
                    if len(self.buf) >= 3:
                        self.at_start = False
                    del self.buf[:-4]  # keep what could begin the terminator
                    break
                del self.buf[:skip]
                self.in_data = False
                self.counter.arrived(self.rcpts or 1)
                out.append(b"250 2.0.0 discarded\r\n")
                continue
            nl = self.buf.find(b"\r\n")
            if nl < 0:
                break
            verb = bytes(self.buf[:4]).upper()
            del self.buf[:nl + 2]
            if verb == b"EHLO":
                out.append(EHLO)
            elif verb == b"MAIL":
                self.rcpts = 0
                out.append(b"250 2.1.0 Ok\r\n")
            elif verb == b"RCPT":
                self.rcpts += 1
                out.append(b"250 2.1.5 Ok\r\n")
            elif verb == b"DATA":
                self.in_data, self.at_start = True, True
                out.append(b"354 End data with <CR><LF>.<CR><LF>\r\n")
            elif verb == b"QUIT":
                out.append(b"221 2.0.0 Bye\r\n")
                self.transport.write(b"".join(out))
                self.transport.close()
                return
            elif verb in (b"HELO", b"RSET", b"NOOP"):
                out.append(b"250 2.0.0 Ok\r\n")
            else:
                out.append(b"502 5.5.2 Command not recognised\r\n")
        if out:
            self.transport.write(b"".join(out))


async def run() -> None:
    loop = asyncio.get_running_loop()
    counter = Counter()
    server = await loop.create_server(lambda: SinkProtocol(counter), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(f"READY {port}", flush=True)
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        counter.expected, counter.count = int(line.split()[1]), 0
        counter.done.clear()
        print("ARMED", flush=True)
        await counter.done.wait()
        print(f"DONE {counter.first} {counter.last} {counter.count}", flush=True)


if __name__ == "__main__":
    asyncio.run(run())
