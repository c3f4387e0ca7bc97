"""Discarding SMTP sink in its own process: the stand-in remote MX for bench.mail.

Run as ``python -m bench._mail_sink``: prints ``READY PORT`` once listening on 127.0.0.1
(port 0).  Each ``EXPECT N`` line on stdin resets the counter; ``DONE FIRST LAST COUNT``
(wall-clock times of the first and last message) is printed once N messages have arrived.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session


class CountingHandler:
    def __init__(self, expected: int, done: asyncio.Event) -> None:
        self.expected = expected
        self.count = 0
        self.first = 0.0
        self.last = 0.0
        self.done = done

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        now = time.time()
        if self.count == 0:
            self.first = now
        self.count += len(envelope.rcpt_tos) or 1
        self.last = now
        if self.expected and self.count >= self.expected:
            self.done.set()
        return "250 2.0.0 discarded"


async def run(expected: int) -> None:
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    handler = CountingHandler(expected, done)

    def factory() -> Any:
        return SMTP(handler, hostname="sink.bench", data_size_limit=None)

    server = await loop.create_server(factory, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(f"READY {port}", flush=True)
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        handler.expected, handler.count = int(line.split()[1]), 0
        done.clear()
        print("ARMED", flush=True)
        await done.wait()
        print(f"DONE {handler.first} {handler.last} {handler.count}", flush=True)


if __name__ == "__main__":
    asyncio.run(run(0))
