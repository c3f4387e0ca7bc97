"""The durable spool: nothing accepted is lost.

Layout under the spool folder:
  queue/<id>.msg    one file per accepted message: a header line
                    ``LTSPOOL1 <content length> <envelope JSON>``, then the message as
                    accepted (our Received: header first)
  queue/<id>.env    its envelope with later delivery state (JSON), once ``save`` has run;
                    it supersedes the envelope in the ``.msg`` header
  tmp/              ``save``'s envelopes being written; emptied at start
A message exists once its ``.msg`` is complete in ``queue/``.  ``commit`` creates it there
under its final name, writes it, fdatasyncs it and fsyncs queue/; only then does the SMTP
handler answer 250.  A ``.msg`` shorter than its header says (a crash before that sync) was
never acknowledged and is removed at start; so is one without a header line at all.
Writing in place rather than renaming from tmp/ saves a second journal commit per message:
on ext4 the file's sync also commits its directory entry, and the queue/ fsync that POSIX
asks for then finds nothing left to write.  That fsync is shared (group commit: a thread
syncs the folder unless a sync that began after its file was synced has already finished),
and the data syncs of concurrent sessions run in parallel threads (IoThreads), which the
filesystem journal batches; a process that only accepts mail may commit a lone session's
message on its event loop instead (``commit_parts(inline=True)``), the same writes and syncs.
``remove`` unlinks the ``.msg`` first: a crash between the two unlinks leaves an ``.env``
without ``.msg``, removed at start.  Readers that list the queue while
sessions are committing may see a ``.msg`` being written: ``load`` then fails (no complete
header), or the delivery side's scan leaves young never-tried messages alone.

Spools written before the one-file layout (``.msg`` content only, ``.env`` beside it) are
still read; there a ``.msg`` without ``.env`` was a half-done commit, removed at start.

State updates (``save``) use the same write-fsync-rename.  ``Spool`` is safe for one process;
the queue CLI edits a stopped server's spool, or a running one's through the same atomic
renames (the server rereads envelopes before each attempt).
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
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
        # Fields are flat (recipients aside), so vars() gives what asdict() would, without
        # its recursive deep copy.
        raw = dict(vars(self))
        raw["recipients"] = [vars(r) for r in self.recipients]
        return json.dumps(raw, ensure_ascii=False, separators=(",", ":")).encode()

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


MAGIC = b"LTSPOOL1 "
MAX_HEADER = 1 << 20  # an envelope line is a few KB even with hundreds of recipients


def _parse_header(line: bytes) -> tuple[int, bytes] | None:
    """``LTSPOOL1 <length> <json>\\n`` → (content length, JSON); -1 when the length is absent
    (files from before it was recorded); None for no complete header line."""
    if not line.startswith(MAGIC) or not line.endswith(b"\n"):
        return None
    rest = line[len(MAGIC):]
    if rest[:1] == b"{":
        return -1, rest
    length, _, data = rest.partition(b" ")
    return (int(length), data) if length.isdigit() else None


def _write_all(fd: int, parts: Sequence[bytes]) -> None:
    views = [memoryview(p) for p in parts if p]
    while views:
        n = os.writev(fd, views)
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if views and n:
            views[0] = views[0][n:]


def _write_fsync(path: Path | str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        _write_all(fd, (data,))
        os.fsync(fd)
    finally:
        os.close(fd)


class IoThreads:
    """Threads for the spool's blocking file work (writes and fsyncs).

    Lighter than ``loop.run_in_executor``, which builds a concurrent Future (with its
    Condition) per call and chains it to an asyncio one: here a call is one queue put, and
    its result comes back with one ``call_soon_threadsafe``.  On a one-message SMTP session
    the hop is on the path to the 250, so its cost is latency.  Threads start on demand,
    up to ``max_threads``: every call gets a thread while fewer are in flight (concurrent
    sessions' fsyncs overlap and the journal batches them)."""

    def __init__(self, max_threads: int, name: str):
        self.max_threads, self.name = max_threads, name
        self._queue: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._in_flight = 0  # calls submitted and not finished; only touched on event loops' threads
        self._lock = threading.Lock()  # for _in_flight when several loops share the spool (tests)

    def call(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._lock:
            self._in_flight += 1
            if self._in_flight > len(self._threads) and len(self._threads) < self.max_threads:
                thread = threading.Thread(target=self._work, name=f"{self.name}_{len(self._threads)}", daemon=True)
                self._threads.append(thread)
                thread.start()
        self._queue.put((loop, future, fn, args))
        return future

    def _work(self) -> None:
        get = self._queue.get
        while (item := get()) is not None:
            loop, future, fn, args = item
            try:
                result, error = fn(*args), None
            except BaseException as e:
                result, error = None, e
            try:
                loop.call_soon_threadsafe(self._done, future, result, error)
            except RuntimeError:  # the loop is closed: nobody waits for the result any more
                self._done(None, None, None)

    def _done(self, future: asyncio.Future[Any] | None, result: Any, error: BaseException | None) -> None:
        with self._lock:
            self._in_flight -= 1
        if future is None or future.cancelled():
            return
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)

    def shutdown(self) -> None:
        """Let the threads finish what was queued, then end them."""
        with self._lock:
            threads, self._threads = self._threads, []
        for _ in threads:
            self._queue.put(None)
        for thread in threads:
            thread.join()


class Spool:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.tmp = self.path / "tmp"
        self.queue = self.path / "queue"
        # Group commit of queue/ fsyncs across threads: renames are numbered; a sync covers
        # every rename numbered before it started.
        self._sync_lock = threading.Lock()
        self._renames = 0
        self._synced = 0
        self._counter_lock = threading.Lock()
        self._threads: IoThreads | None = None

    def open(self, clean: bool = True) -> list[str]:
        """Create the folders, clean up what a crash left half-written; returns what was removed.

        ``clean=False`` in a process that shares the spool with a running one (mail.workers):
        there a tmp/ file may be another process's commit in progress."""
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.queue.mkdir(parents=True, exist_ok=True)
        removed: list[str] = []
        if not clean:
            return removed
        for p in self.tmp.iterdir():
            p.unlink(missing_ok=True)
            removed.append(p.name)
        names = set(os.listdir(self.queue))
        for name in sorted(names):
            stem, _, suffix = name.rpartition(".")
            if suffix == "msg" and f"{stem}.env" not in names and not self._complete(self.queue / name):
                (self.queue / name).unlink(missing_ok=True)  # a commit cut short: never acknowledged
                removed.append(name)
            elif suffix == "env" and f"{stem}.msg" not in names:
                (self.queue / name).unlink(missing_ok=True)  # remove cut between its unlinks
                removed.append(name)
        return removed

    def close(self) -> None:
        """Stop the spool's I/O threads (after the last commit/save/remove has returned)."""
        if self._threads is not None:
            self._threads.shutdown()
            self._threads = None

    @staticmethod
    def _complete(path: Path) -> bool:
        """A one-file message as long as its header says (old-layout files have no header)."""
        with open(path, "rb") as f:
            header = f.readline(MAX_HEADER)
            size = os.fstat(f.fileno()).st_size
        parsed = _parse_header(header)
        return parsed is not None and (parsed[0] < 0 or size == len(header) + parsed[0])

    def _run(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        if self._threads is None:
            # Threads mostly wait in fsync; enough of them that concurrent sessions overlap.
            self._threads = IoThreads(16, "spool")
        return self._threads.call(fn, *args)

    # -- writing ---------------------------------------------------------------------------

    async def commit(self, envelope: Envelope, content: bytes) -> str:
        """Durably queue a message; returns its id.  Raises SpoolError."""
        return await self.commit_parts(envelope, (content,))

    async def commit_parts(self, envelope: Envelope, parts: Sequence[bytes], inline: bool = False) -> str:
        """``commit`` of the concatenation of ``parts`` (written without joining them).

        ``inline``: write and fsync on the calling (event loop) thread, blocking it meanwhile;
        for a process with nothing else to do until this commit is done."""
        length = sum(len(p) for p in parts)
        header = b"%s%d %s\n" % (MAGIC, length, envelope.to_json())
        try:
            if inline:
                self._write_message(envelope.id, (header, *parts))
            else:
                await self._run(self._write_message, envelope.id, (header, *parts))
        except OSError as e:
            raise SpoolError(f"{e.strerror or e}") from e
        return envelope.id

    def _write_message(self, queue_id: str, parts: Sequence[bytes]) -> None:
        final = f"{self.queue}/{queue_id}.msg"
        created = False
        try:
            fd = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            created = True
            try:
                _write_all(fd, parts)
                os.fdatasync(fd)
            finally:
                os.close(fd)
            self._sync_queue_dir_now()
        except OSError:
            if created:
                try:
                    os.unlink(final)
                except OSError:
                    pass
            raise

    async def save(self, envelope: Envelope) -> None:
        """Durably replace a queued message's envelope (delivery state)."""
        try:
            await self._run(self._save_now, envelope.id, envelope.to_json())
        except OSError as e:
            raise SpoolError(f"{e.strerror or e}") from e

    def _save_now(self, queue_id: str, data: bytes) -> None:
        tmp = self.tmp / f"{queue_id}.{secrets.token_hex(3)}.env"
        try:
            _write_fsync(tmp, data)
            os.replace(tmp, self.queue / f"{queue_id}.env")
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        self._sync_queue_dir_now()

    async def remove(self, queue_id: str) -> None:
        """Forget a message (delivered, bounced or deleted): content first, then envelope."""
        try:
            await self._run(self._remove_now, queue_id)
        except OSError as e:
            raise SpoolError(f"{e.strerror or e}") from e

    async def remove_many(self, queue_ids: Sequence[str]) -> None:
        """``remove`` for a batch: one thread hop and one shared queue/ fsync for all."""
        if not queue_ids:
            return
        try:
            await self._run(self._remove_now, *queue_ids)
        except OSError as e:
            raise SpoolError(f"{e.strerror or e}") from e

    def _remove_now(self, *queue_ids: str) -> None:
        for queue_id in queue_ids:
            for suffix in (".msg", ".env"):
                try:
                    os.unlink(f"{self.queue}/{queue_id}{suffix}")
                except FileNotFoundError:
                    pass
        self._sync_queue_dir_now()

    def _sync_queue_dir_now(self) -> None:
        """fsync queue/ unless a sync that began after this thread's rename has finished."""
        with self._counter_lock:
            self._renames += 1
            mine = self._renames
        with self._sync_lock:
            if self._synced >= mine:
                return
            with self._counter_lock:
                covered = self._renames
            fd = os.open(self.queue, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            self._synced = covered

    # -- reading ---------------------------------------------------------------------------

    def ids(self) -> list[str]:
        return sorted(name[:-4] for name in os.listdir(self.queue) if name.endswith(".msg"))

    def load(self, queue_id: str) -> Envelope:
        try:
            return Envelope.from_json((self.queue / f"{queue_id}.env").read_bytes())
        except FileNotFoundError:
            pass
        with open(self.queue / f"{queue_id}.msg", "rb") as f:
            parsed = _parse_header(f.readline(MAX_HEADER))
        if parsed is None:
            raise FileNotFoundError(f"{queue_id}: no envelope (being written, or not a message)")
        return Envelope.from_json(parsed[1])

    def load_accepted(self, queue_id: str) -> tuple[Envelope, bytes]:
        """A message as it was accepted, envelope (from its header line) and content, in one
        read of one file: for the main process taking a message another process has just
        committed (no ``.env`` exists yet; delivery checks for one before its attempt)."""
        with open(f"{self.queue}/{queue_id}.msg", "rb") as f:
            data = f.read()
        end = data.find(b"\n", 0, MAX_HEADER)
        parsed = _parse_header(data[:end + 1]) if end >= 0 else None
        if parsed is None or (parsed[0] >= 0 and len(data) - end - 1 != parsed[0]):
            raise FileNotFoundError(f"{queue_id}: not a complete message")
        return Envelope.from_json(parsed[1]), data[end + 1:]

    def content(self, queue_id: str) -> bytes:
        data = (self.queue / f"{queue_id}.msg").read_bytes()
        if data.startswith(MAGIC):
            return data[data.index(b"\n") + 1:]
        return data

    def envelopes(self) -> Iterator[Envelope]:
        for queue_id in self.ids():
            try:
                yield self.load(queue_id)
            except (FileNotFoundError, ValueError, TypeError, KeyError):
                continue  # removed meanwhile, or being replaced

    def count(self) -> int:
        return sum(1 for name in os.listdir(self.queue) if name.endswith(".msg"))


def envelope_stub(**kw: Any) -> Envelope:
    """A new envelope with a fresh id (handlers fill the rest)."""
    return Envelope(id=new_id(), received_at=time.time(), **kw)
