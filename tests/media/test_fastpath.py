"""media._fastpath.Sender on its own: real UDP sockets on 127.0.0.1 and libsrtp sessions with a
fixed test key, its output compared byte for byte with pylibsrtp's own ``Session.protect``."""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from pylibsrtp import Policy, Session

fastpath = pytest.importorskip("media._fastpath", reason="media._fastpath is not built (no C compiler)")

KEY = bytes(range(30))  # AES_CM_128_HMAC_SHA1_80 master key + salt; loopback test traffic only


def session(direction: int) -> Session:
    return Session(policy=Policy(key=KEY, ssrc_type=direction))


def pointers(s: Session) -> tuple[int, int]:
    from pylibsrtp._binding import ffi, lib

    return int(ffi.cast("uintptr_t", ffi.addressof(lib, "srtp_protect"))), int(ffi.cast("uintptr_t", s._srtp[0]))


@pytest.fixture
def sockets() -> Iterator[tuple[socket.socket, socket.socket]]:
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.bind(("127.0.0.1", 0))
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(5)
    yield tx, rx
    tx.close()
    rx.close()


def make_sender(tx: socket.socket, rx: socket.socket, nominated: dict[int, Any] | None = None,
                slow: Any = None) -> tuple[Any, dict[int, Any]]:
    out = session(Policy.SSRC_ANY_OUTBOUND)
    protect, ctx = pointers(out)
    nominated = {1: "pair"} if nominated is None else nominated
    sender = fastpath.Sender(protect, ctx, out, tx.fileno(), rx.getsockname(), nominated, "pair",
                             slow or (lambda head, rest: pytest.fail("handed to the slow path")))
    return sender, nominated


def test_protects_like_pylibsrtp_and_writes_the_header(sockets: tuple[socket.socket, socket.socket]) -> None:
    tx, rx = sockets
    sender, _ = make_sender(tx, rx)
    reference = session(Policy.SSRC_ANY_OUTBOUND)   # the same key: the same ciphertext, packet for packet
    head = struct.pack("!BBHII", 0x80, 96, 1, 2, 3) + bytes([0x90, 0x80, 0x80, 0x01])
    rest = b"v" * 1000
    for seq in range(3):
        assert sender.send_rewritten(head, memoryview(rest), 0x80 | 100, 50 + seq, 9000 + seq, 0xCAFE, 14, 0x7FFF)
        expected = struct.pack("!BBHII", 0x80, 0x80 | 100, 50 + seq, 9000 + seq, 0xCAFE) + \
            bytes([0x90, 0x80, 0xFF, 0xFF]) + rest
        assert rx.recv(2048) == reference.protect(expected)
    plain = struct.pack("!BBHII", 0x80, 111, 60, 1, 0xBEEF) + b"opus"
    assert sender.send_parts(bytearray(plain[:12]), plain[12:])
    assert rx.recv(2048) == reference.protect(plain)
    assert (sender.sent, sender.dropped) == (4, 0)


def test_refuses_what_does_not_fit_and_counts_it(sockets: tuple[socket.socket, socket.socket]) -> None:
    tx, rx = sockets
    sender, _ = make_sender(tx, rx)
    head = struct.pack("!BBHII", 0x80, 96, 1, 2, 3)
    assert not sender.send_parts(head, b"x" * (fastpath.BUFFER_SIZE - 11))    # one byte too many
    assert sender.send_parts(head, b"x" * (fastpath.BUFFER_SIZE - 12))        # exactly the buffer
    assert len(rx.recv(4096)) > fastpath.BUFFER_SIZE                          # + the SRTP tag
    assert not sender.send_parts(head[:11], b"")                              # shorter than a header
    assert not sender.send_rewritten(head, b"", 96, 1, 2, 3, 11, 1)           # PictureID past the end
    assert sender.send_rewritten(head, b"", 96, 2, 2, 3, -1, 0)               # a header alone
    assert not sender.send_rewritten(head, b"", 96, 2, 2, 3, -1, 0)           # libsrtp: seq 2 again
    with pytest.raises(TypeError):
        sender.send_parts(head)
    with pytest.raises(TypeError):
        sender.send_parts("text", b"")
    with pytest.raises(TypeError):
        sender.send_rewritten(head, b"", "96", 1, 2, 3, -1, 0)
    assert (sender.sent, sender.dropped) == (2, 4)


def test_a_changed_nomination_goes_to_the_slow_path_with_the_header_written(
        sockets: tuple[socket.socket, socket.socket]) -> None:
    tx, rx = sockets
    handed: list[tuple[bytes, bytes]] = []
    sender, nominated = make_sender(tx, rx, slow=lambda head, rest: handed.append((bytes(head), bytes(rest))) or True)
    head = struct.pack("!BBHII", 0x80, 96, 1, 2, 3) + bytes([0x90, 0x80, 0x80, 0x01])
    nominated[1] = "another pair"
    assert sender.send_parts(head, b"rest") is True
    assert sender.send_rewritten(head, b"rest", 97, 5, 6, 7, 14, 0x1234) is True
    assert handed == [(head, b"rest"),
                      (struct.pack("!BBHII", 0x80, 97, 5, 6, 7) + bytes([0x90, 0x80, 0x92, 0x34]), b"rest")]
    del nominated[1]                                # the agent was retired: no pair at all
    assert sender.send_parts(head, b"") is True and len(handed) == 3
    assert (sender.sent, sender.dropped) == (0, 0)  # what the slow path does is its own business


def test_owns_a_duplicate_descriptor_until_closed(sockets: tuple[socket.socket, socket.socket]) -> None:
    tx, rx = sockets
    def duplicates() -> list[int]:
        inode = os.fstat(tx.fileno()).st_ino
        fds = [int(fd) for fd in os.listdir("/proc/self/fd")]
        out = []
        for fd in fds:
            try:
                if fd != tx.fileno() and os.fstat(fd).st_ino == inode:
                    out.append(fd)
            except OSError:   # the listing's own descriptor, gone already
                pass
        return out

    assert duplicates() == []
    sender, _ = make_sender(tx, rx)
    (extra,) = duplicates()
    assert os.get_inheritable(extra) is False
    head = struct.pack("!BBHII", 0x80, 96, 1, 2, 3)
    assert sender.send_parts(head, b"a") and rx.recv(2048)
    sender.close()
    assert sender.closed and duplicates() == []
    assert not sender.send_parts(head, b"b")
    sender.close()                                  # idempotent
    assert (sender.sent, sender.dropped) == (1, 1)


def test_sending_into_a_full_receiver_never_blocks_or_raises(sockets: tuple[socket.socket, socket.socket]) -> None:
    tx, rx = sockets
    tx.setblocking(False)
    tx.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sender, _ = make_sender(tx, rx)
    head = struct.pack("!BBHII", 0x80, 96, 1, 2, 3)
    # nobody reads rx: its buffer fills, the kernel drops (loopback) or the send buffer fills
    # (EAGAIN); either way the call returns at once and never raises
    results = [sender.send_parts(head, b"x" * 1200) for _ in range(2000)]
    assert sender.sent + sender.dropped == 2000 and results.count(True) == sender.sent


def test_refuses_a_name_and_bad_arguments(sockets: tuple[socket.socket, socket.socket]) -> None:
    tx, _ = sockets
    out = session(Policy.SSRC_ANY_OUTBOUND)
    protect, ctx = pointers(out)
    with pytest.raises(ValueError, match="numeric"):
        fastpath.Sender(protect, ctx, out, tx.fileno(), ("localhost", 5000), {}, None, print)
    with pytest.raises(ValueError):
        fastpath.Sender(0, ctx, out, tx.fileno(), ("127.0.0.1", 5000), {}, None, print)
    with pytest.raises(TypeError):
        fastpath.Sender(protect, ctx, out, tx.fileno(), ("127.0.0.1", 5000), [], None, print)
    with pytest.raises(OSError):
        fastpath.Sender(protect, ctx, out, -1, ("127.0.0.1", 5000), {}, None, print)
    v6 = fastpath.Sender(protect, ctx, out, tx.fileno(), ("::1", 5000, 0, 0), {}, None, print)
    v6.close()
