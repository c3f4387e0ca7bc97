"""The durable spool: nothing accepted is lost.

Layout under the spool folder:
  tmp/<id>.*        being written; removed at start (never accepted)
  queue/<id>.msg    the message as accepted (our Received: header first)
  queue/<id>.env    its envelope and delivery state (JSON), rewritten atomically
A message exists once its ``.env`` is in ``queue/``.  ``commit`` writes both files to tmp/,
fsyncs them, renames the content then the envelope into queue/, and fsyncs queue/; only then
does the SMTP handler answer 250.  Concurrent commits share one directory fsync (group
commit: whoever arrives while one is running waits for the next, which covers it), and their
file fsyncs run in parallel threads, which the filesystem journal batches.  A crash between
the two renames leaves a ``.msg`` without ``.env``: not accepted, removed at start.

State updates (``save``) use the same write-fsync-rename.  ``Spool`` is safe for one process;
the queue CLI edits a stopped server's spool, or a running one's through the same atomic
renames (the server rereads envelopes before each attempt).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


class SpoolError(Exception):
    """The spool could not take the message (disk full, I/O error): answer 452 4.3.1."""


@dataclass
class Recipient:
    address: str
    notify: list[str] = field(default_factory=list)  # RFC 3461 NOTIFY: SUCCESS, FAILURE, DELAY, NEVER
    orcpt: str = ""
    status: str = "pending"  # pending | delivered | failed
    last_error: str = ""
    remote_mta: str = ""
    delay_warned: bool = False


@dataclass
class Envelope:
    id: str
    mail_from: str
    recipients: list[Recipient]
    received_at: float
    ret: str = ""  # RFC 3461 RET: FULL | HDRS
    envid: str = ""
    smtputf8: bool = False
    body_8bit: bool = False
    agency: str = ""  # the authenticated account's agency ("" for inbound MX mail)
    account: str = ""
    client: str = ""
    inbound: bool = False  # accepted on the MX listener for a hosted domain
    is_bounce: bool = False
    attempts: int = 0
    next_try: float = 0.0
    hold: bool = False
    last_error: str = ""

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Envelope:
        raw = json.loads(data)
        raw["recipients"] = [Recipient(**r) for r in raw["recipients"]]
        return cls(**raw)

    @property
    def pending(self) -> list[Recipient]:
        return [r for r in self.recipients if r.status == "pending"]


def new_id() -> str:
    """Sortable by time: 16 hex digits of nanoseconds, then 6 random."""
    return f"{time.time_ns():016x}{secrets.token_hex(3)}"


def _write_fsync(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.tmp = self.path / "tmp"
        self.queue = self.path / "queue"
        self._dir_sync_running: asyncio.Future[None] | None = None
        self._dir_sync_next: asyncio.Future[None] | None = None

    def open(self) -> list[str]:
        """Create the folders, clean up what a crash left half-written; returns what was removed."""
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.queue.mkdir(parents=True, exist_ok=True)
        removed = []
        for p in self.tmp.iterdir():
            p.unlink(missing_ok=True)
            removed.append(p.name)
        for p in self.queue.glob("*.msg"):
            if not p.with_suffix(".env").exists():
                p.unlink(missing_ok=True)
                removed.append(p.name)
        return removed

    # -- writing ---------------------------------------------------------------------------

    async def commit(self, envelope: Envelope, content: bytes) -> str:
        """Durably queue a message; returns its id.  Raises SpoolError."""
        loop = asyncio.get_running_loop()
        tmp_msg = self.tmp / f"{envelope.id}.msg"
        tmp_env = self.tmp / f"{envelope.id}.env"
        try:
            await loop.run_in_executor(None, self._write_pair, tmp_msg, content, tmp_env, envelope.to_json())
            os.rename(tmp_msg, self.queue / tmp_msg.name)
            os.rename(tmp_env, self.queue / tmp_env.name)
            await self._sync_queue_dir()
        except OSError as e:
            for p in (tmp_msg, tmp_env, self.queue / tmp_env.name, self.queue / tmp_msg.name):
                try:
                    p.unlink(missing_ok=True)
                except OSError:
                    pass
            raise SpoolError(f"{e.strerror or e}") from e
        return envelope.id

    @staticmethod
    def _write_pair(msg: Path, content: bytes, env: Path, data: bytes) -> None:
        _write_fsync(msg, content)
        _write_fsync(env, data)

    async def save(self, envelope: Envelope) -> None:
        """Durably replace a queued message's envelope (delivery state)."""
        loop = asyncio.get_running_loop()
        tmp = self.tmp / f"{envelope.id}.{secrets.token_hex(3)}.env"
        try:
            await loop.run_in_executor(None, _write_fsync, tmp, envelope.to_json())
            os.replace(tmp, self.queue / f"{envelope.id}.env")
            await self._sync_queue_dir()
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise SpoolError(f"{e.strerror or e}") from e

    async def remove(self, queue_id: str) -> None:
        """Forget a message (delivered, bounced or deleted): envelope first, then content."""
        (self.queue / f"{queue_id}.env").unlink(missing_ok=True)
        (self.queue / f"{queue_id}.msg").unlink(missing_ok=True)
        await self._sync_queue_dir()

    async def _sync_queue_dir(self) -> None:
        """fsync queue/ once for every rename made before the sync began (group commit)."""
        loop = asyncio.get_running_loop()
        if self._dir_sync_running is None:
            self._dir_sync_running = loop.create_future()
            await self._run_dir_sync(self._dir_sync_running)
            return
        # One is running: it may have started before our rename, so wait for the next one.
        if self._dir_sync_next is None:
            self._dir_sync_next = loop.create_future()
        mine = self._dir_sync_next
        await asyncio.shield(self._dir_sync_running)
        if self._dir_sync_next is mine:
            self._dir_sync_next = None
            self._dir_sync_running = mine
            await self._run_dir_sync(mine)
        else:
            await mine

    async def _run_dir_sync(self, done: asyncio.Future[None]) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, self._fsync_dir)
        except OSError as e:
            if not done.done():
                done.set_exception(SpoolError(f"{e.strerror or e}"))
                done.exception()  # waiters re-raise it; do not log as never retrieved
            raise SpoolError(f"{e.strerror or e}") from e
        finally:
            if self._dir_sync_running is done:
                self._dir_sync_running = None
            if not done.done():
                done.set_result(None)

    def _fsync_dir(self) -> None:
        fd = os.open(self.queue, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- reading ---------------------------------------------------------------------------

    def ids(self) -> list[str]:
        return sorted(p.stem for p in self.queue.glob("*.env"))

    def load(self, queue_id: str) -> Envelope:
        return Envelope.from_json((self.queue / f"{queue_id}.env").read_bytes())

    def content(self, queue_id: str) -> bytes:
        return (self.queue / f"{queue_id}.msg").read_bytes()

    def envelopes(self) -> Iterator[Envelope]:
        for queue_id in self.ids():
            try:
                yield self.load(queue_id)
            except (FileNotFoundError, ValueError, TypeError, KeyError):
                continue  # removed meanwhile, or being replaced

    def count(self) -> int:
        return sum(1 for _ in self.queue.glob("*.env"))


def envelope_stub(**kw: Any) -> Envelope:
    """A new envelope with a fresh id (handlers fill the rest)."""
    return Envelope(id=new_id(), received_at=time.time(), **kw)
