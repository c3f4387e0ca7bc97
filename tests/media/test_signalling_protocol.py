"""The pure core of the signalling protocol: every client message is validated, nothing crashes."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from web.room_protocol import (CHAIR_ONLY, SCHEMAS, VERSION, ProtocolError, error_message,
                               parse_client_message, server_message)

SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


def dump(**obj: Any) -> str:
    return json.dumps({"v": VERSION, **obj})


def code_of(text: str | bytes) -> str:
    with pytest.raises(ProtocolError) as info:
        parse_client_message(text)
    return info.value.code


def test_join_with_all_fields() -> None:
    msg = parse_client_message(dump(type="join", id=7, token="abc.def", pin="1234", lang="en", resume="r1"))
    assert (msg.type, msg.id) == ("join", 7)
    assert msg.fields == {"token": "abc.def", "pin": "1234", "lang": "en", "resume": "r1"}


def test_optional_fields_may_be_absent() -> None:
    msg = parse_client_message(dump(type="join", token="t"))
    assert msg.get("pin") is None and msg.get("lang", "vi") == "vi" and msg.id is None


@pytest.mark.parametrize("text, code", [
    ("not json", "bad_json"),
    ("[1, 2]", "bad_json"),
    ('"join"', "bad_json"),
    ("[" * 100_000, "bad_json"),
    (json.dumps({"type": "ping"}), "unsupported_version"),
    (json.dumps({"v": 2, "type": "ping"}), "unsupported_version"),
    (json.dumps({"v": "1", "type": "ping"}), "unsupported_version"),
    (dump(type="fly"), "unknown_type"),
    (dump(type=None), "unknown_type"),
    (dump(type=["join"]), "unknown_type"),
    (dump(type="join"), "bad_field"),
    (dump(type="join", token=""), "bad_field"),
    (dump(type="join", token=5), "bad_field"),
    (dump(type="join", token="t" * 5000), "bad_field"),
    (dump(type="join", token="t", lang="fr"), "bad_field"),
    (dump(type="join", token="t", extra=1), "bad_field"),
    (dump(type="ping", id=-1), "bad_field"),
    (dump(type="ping", id="1"), "bad_field"),
    (dump(type="ping", id=True), "bad_field"),
    (dump(type="offer", sdp="hello"), "bad_field"),
    (dump(type="offer"), "bad_field"),
    (dump(type="answer", sdp=None), "bad_field"),
    (dump(type="ice"), "bad_field"),
    (dump(type="ice", candidate="candidate:1 1 udp 1 1.2.3.4 5 typ host"), "bad_field"),
    (dump(type="ice", candidate={"candidate": "x"}), "bad_field"),
    (dump(type="ice", candidate={"candidate": "x", "sdpMLineIndex": -1}), "bad_field"),
    (dump(type="ice", candidate={"candidate": "x", "sdpMid": "0", "foo": 1}), "bad_field"),
    (dump(type="hand"), "bad_field"),
    (dump(type="hand", raised="yes"), "bad_field"),
    (dump(type="hand", raised=1), "bad_field"),
    (dump(type="give_floor"), "bad_field"),
    (dump(type="give_floor", site=3), "bad_field"),
    (dump(type="lock", locked=None), "bad_field"),
    (dump(type="media_state", audio="off"), "bad_field"),
])
def test_bad_messages_get_a_stable_code(text: str, code: str) -> None:
    assert code_of(text) == code


def test_binary_frames_and_huge_messages_are_refused() -> None:
    assert code_of(b'{"v":1,"type":"ping"}') == "bad_frame"
    assert code_of(dump(type="offer", sdp="v=0" + "a" * 300_000)) == "too_large"


def test_error_keeps_the_request_id_and_type() -> None:
    with pytest.raises(ProtocolError) as info:
        parse_client_message(dump(type="hand", id=42, raised="no"))
    assert (info.value.msg_id, info.value.msg_type) == (42, "hand")
    assert "hand.raised" in info.value.message
    err = error_message(info.value.code, info.value.message, msg_id=42, msg_type="hand")
    assert err == {"v": VERSION, "type": "error", "code": "bad_field", "message": info.value.message,
                   "id": 42, "ref": "hand"}


def test_trickle_candidate_and_end_of_candidates() -> None:
    cand = {"candidate": "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host", "sdpMid": "0",
            "sdpMLineIndex": 0}
    assert parse_client_message(dump(type="ice", candidate=cand)).get("candidate") == cand
    assert parse_client_message(dump(type="ice", candidate=None)).get("candidate") is None
    # Firefox sends an empty candidate string as its end-of-candidates marker.
    empty = {"candidate": "", "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "abcd"}
    assert parse_client_message(dump(type="ice", candidate=empty)).get("candidate") == empty


def test_every_chair_command_parses() -> None:
    examples = {
        "give_floor": {"site": "s1"}, "take_floor": {}, "mute_site": {"site": "s1", "muted": True},
        "remove_site": {"site": "s1"}, "lock": {"locked": True}, "end": {},
    }
    assert set(examples) == CHAIR_ONLY
    for msg_type, fields in examples.items():
        assert parse_client_message(dump(type=msg_type, **fields)).fields == fields


def test_offer_and_answer_carry_sdp() -> None:
    assert parse_client_message(dump(type="offer", sdp=SDP)).get("sdp") == SDP
    assert parse_client_message(dump(type="answer", sdp=SDP)).get("sdp") == SDP


def test_random_garbage_never_raises_anything_but_protocol_error() -> None:
    rng = random.Random(3)
    values: list[Any] = [None, True, 0, -5, 1.5, "", "x", "v=0", [], {}, {"candidate": ""}, "y" * 300]
    for _ in range(3000):
        obj: dict[str, Any] = {}
        if rng.random() < 0.9:
            obj["v"] = rng.choice([VERSION, VERSION, 0, "1", None])
        if rng.random() < 0.95:
            obj["type"] = rng.choice([*SCHEMAS, "nope", 3, None])
        for name in rng.sample(["token", "sdp", "candidate", "site", "raised", "locked", "id", "pin",
                                "audio", "resume", "lang", "muted", "zzz"], rng.randint(0, 4)):
            obj[name] = rng.choice(values)
        try:
            msg = parse_client_message(json.dumps(obj))
        except ProtocolError as e:
            assert e.code in {"bad_json", "unsupported_version", "unknown_type", "bad_field"}
        else:
            assert msg.type in SCHEMAS


def test_server_message_has_version_and_type() -> None:
    assert server_message("pong") == {"v": VERSION, "type": "pong"}
    assert server_message("floor", site="s2") == {"v": VERSION, "type": "floor", "site": "s2"}
