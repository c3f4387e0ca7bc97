"""The meeting room's signalling messages: parsing and validation (pure, no I/O).

Every message is one JSON object in one WebSocket text frame, ``{"v": 1, "type": ..., ...}``;
an optional integer ``id`` on a client message is echoed in the ``ack`` or ``error`` that
answers it.  The full protocol is written down in docs/signalling.md.

``parse_client_message(text)`` returns a ``ClientMessage`` whose ``fields`` were checked
against the schema of its type, or raises ``ProtocolError`` with a stable ``code`` and a
message a developer can act on.  It never raises anything else, whatever the input.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

VERSION = 1

# Sizes well above anything a browser sends, small enough that a hostile client cannot make
# the server hold much.
MAX_MESSAGE_BYTES = 256 * 1024
MAX_SDP_CHARS = 200_000
MAX_TOKEN_CHARS = 2048
MAX_ID_CHARS = 128


class ProtocolError(Exception):
    """A message the server cannot act on.  ``code`` is stable (clients and tests match it)."""

    def __init__(self, code: str, message: str, *, msg_id: int | None = None, msg_type: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.msg_id = msg_id
        self.msg_type = msg_type


@dataclass(frozen=True)
class Field:
    check: Callable[[Any], str | None]  # returns what was expected, or None when the value is fine
    required: bool = True


def _string(max_chars: int, *, allow_empty: bool = False) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if not isinstance(value, str):
            return f"a string, got {type(value).__name__}"
        if not value and not allow_empty:
            return "a non-empty string"
        if len(value) > max_chars:
            return f"at most {max_chars} characters, got {len(value)}"
        return None
    return check


def _optional(check: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    def check_optional(value: Any) -> str | None:
        return None if value is None else check(value)
    return check_optional


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"true or false, got {type(value).__name__}"


def _one_of(*choices: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in choices else f"one of {', '.join(choices)}, got {value!r}"
    return check


def _small_int(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or not (0 <= value <= 65535):
        return "an integer 0-65535"
    return None


def _candidate(value: Any) -> str | None:
    """A browser RTCIceCandidateInit, or null for end-of-candidates."""
    if value is None:
        return None
    if not isinstance(value, dict):
        return "an object {candidate, sdpMid, sdpMLineIndex} or null"
    unknown = set(value) - {"candidate", "sdpMid", "sdpMLineIndex", "usernameFragment"}
    if unknown:
        return f"no other keys than candidate, sdpMid, sdpMLineIndex, usernameFragment (got {sorted(unknown)})"
    problem = _string(2048, allow_empty=True)(value.get("candidate"))
    if problem:
        return f"candidate.candidate: {problem}"
    if value.get("sdpMid") is None and value.get("sdpMLineIndex") is None:
        return "sdpMid or sdpMLineIndex"
    if (problem := _optional(_string(64, allow_empty=True))(value.get("sdpMid"))):
        return f"candidate.sdpMid: {problem}"
    if (problem := _optional(_small_int)(value.get("sdpMLineIndex"))):
        return f"candidate.sdpMLineIndex: {problem}"
    if (problem := _optional(_string(256, allow_empty=True))(value.get("usernameFragment"))):
        return f"candidate.usernameFragment: {problem}"
    return None


def _sdp(value: Any) -> str | None:
    problem = _string(MAX_SDP_CHARS)(value)
    if problem:
        return problem
    if not value.startswith("v=0"):
        return "an SDP description starting with v=0"
    return None


_site = Field(_string(MAX_ID_CHARS))

# Messages a client may send, and who may send them.
SCHEMAS: dict[str, dict[str, Field]] = {
    "join": {
        "token": Field(_string(MAX_TOKEN_CHARS)),
        "pin": Field(_optional(_string(32)), required=False),
        "lang": Field(_one_of("vi", "en"), required=False),
        # The resume key of an earlier connection: reconnect within the grace period.
        "resume": Field(_optional(_string(MAX_ID_CHARS)), required=False),
    },
    "offer": {"sdp": Field(_sdp)},
    "answer": {"sdp": Field(_sdp)},
    "ice": {"candidate": Field(_candidate)},
    "leave": {},
    "ping": {},
    # The site's own microphone/camera state (shown to others; the page stops the track itself).
    "media_state": {
        "audio": Field(_boolean, required=False),
        "video": Field(_boolean, required=False),
        "screen": Field(_boolean, required=False),
    },
    "hand": {"raised": Field(_boolean)},
    # Chair commands.
    "give_floor": {"site": _site},
    "take_floor": {},
    "mute_site": {"site": _site, "muted": Field(_boolean, required=False)},
    "remove_site": {"site": _site},
    "lock": {"locked": Field(_boolean)},
    "end": {},
}

CHAIR_ONLY = frozenset({"give_floor", "take_floor", "mute_site", "remove_site", "lock", "end"})
# What an observer (receives only) may send besides the session messages.
OBSERVER_FORBIDDEN = frozenset({"hand", "media_state"})
# Types valid before "join" succeeded.
BEFORE_JOIN = frozenset({"join", "ping"})


@dataclass(frozen=True)
class ClientMessage:
    type: str
    fields: dict[str, Any] = field(default_factory=dict)
    id: int | None = None

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default)


def parse_client_message(text: str | bytes) -> ClientMessage:
    if isinstance(text, bytes):
        raise ProtocolError("bad_frame", "send JSON in text frames, not binary")
    if len(text) > MAX_MESSAGE_BYTES:
        raise ProtocolError("too_large", f"a message is at most {MAX_MESSAGE_BYTES} bytes")
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError("bad_json", "a message is one JSON object") from None
    if not isinstance(obj, dict):
        raise ProtocolError("bad_json", "a message is one JSON object")
    msg_id = obj.get("id")
    if msg_id is not None and (isinstance(msg_id, bool) or not isinstance(msg_id, int)
                               or not (0 <= msg_id < 2**53)):
        raise ProtocolError("bad_field", "id: expected a non-negative integer")
    msg_type = obj.get("type")
    if obj.get("v") != VERSION:
        raise ProtocolError("unsupported_version", f"this server speaks version {VERSION}; got v={obj.get('v')!r}",
                            msg_id=msg_id, msg_type=msg_type if isinstance(msg_type, str) else None)
    if not isinstance(msg_type, str) or msg_type not in SCHEMAS:
        shown = msg_type if isinstance(msg_type, str) else None
        raise ProtocolError("unknown_type", f"unknown message type {str(msg_type)[:40]!r}",
                            msg_id=msg_id, msg_type=shown[:40] if shown else None)
    schema = SCHEMAS[msg_type]
    values = {k: v for k, v in obj.items() if k not in ("v", "type", "id")}
    unknown = sorted(set(values) - set(schema))
    if unknown:
        raise ProtocolError("bad_field", f"{msg_type}: unknown field {unknown[0][:40]!r}",
                            msg_id=msg_id, msg_type=msg_type)
    for name, spec in schema.items():
        if name not in values:
            if spec.required:
                raise ProtocolError("bad_field", f"{msg_type}.{name}: missing", msg_id=msg_id, msg_type=msg_type)
            continue
        expected = spec.check(values[name])
        if expected:
            raise ProtocolError("bad_field", f"{msg_type}.{name}: expected {expected}",
                                msg_id=msg_id, msg_type=msg_type)
    return ClientMessage(msg_type, values, msg_id)


def server_message(msg_type: str, **fields: Any) -> dict[str, Any]:
    """One server → client message (the caller serialises it)."""
    return {"v": VERSION, "type": msg_type, **fields}


def error_message(code: str, message: str, *, msg_id: int | None = None, msg_type: str | None = None,
                  message_vi: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if message_vi is not None:
        body["message_vi"] = message_vi
    if msg_id is not None:
        body["id"] = msg_id
    if msg_type is not None:
        body["ref"] = msg_type
    return server_message("error", **body)
