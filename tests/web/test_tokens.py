from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from web import tokens
from web.tokens import JoinClaims, TokenError

SECRET = b"k" * 32
CLAIMS = JoinClaims("link1", 1, "meet1", "so-dttg-hue", "site", 2_000_000_000)


def test_round_trip() -> None:
    assert tokens.verify(SECRET, tokens.sign(SECRET, CLAIMS), now=1_900_000_000) == CLAIMS


@pytest.mark.parametrize("mutate", [
    lambda t: t[:-2] + ("A" if t[-2] != "A" else "B") + t[-1],  # signature byte
    lambda t: t.replace(t.split(".")[0], t.split(".")[0][:-3] + "xyz"),  # claims
    lambda t: t.split(".")[0],  # no signature
    lambda t: "",
    lambda t: "." * 3,
    lambda t: t + "x" * 2000,
])
def test_tampered_tokens_are_invalid(mutate: object) -> None:
    token = mutate(tokens.sign(SECRET, CLAIMS))  # type: ignore[operator]
    with pytest.raises(TokenError) as info:
        tokens.verify(SECRET, token, now=1_900_000_000)
    assert info.value.reason == "invalid"


def test_role_change_in_claims_breaks_signature() -> None:
    import base64
    import json

    body, mac = tokens.sign(SECRET, CLAIMS).split(".")
    raw = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    raw["r"] = "chair"
    forged = base64.urlsafe_b64encode(json.dumps(raw, separators=(",", ":")).encode()).rstrip(b"=").decode()
    with pytest.raises(TokenError):
        tokens.verify(SECRET, f"{forged}.{mac}", now=1_900_000_000)


def test_wrong_key_and_expiry() -> None:
    token = tokens.sign(SECRET, CLAIMS)
    with pytest.raises(TokenError) as info:
        tokens.verify(b"x" * 32, token, now=1_900_000_000)
    assert info.value.reason == "invalid"
    with pytest.raises(TokenError) as info:
        tokens.verify(SECRET, token, now=2_000_000_001)
    assert info.value.reason == "expired"


def test_secret_created_private_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "join-token.key"
    first = tokens.load_or_create_secret(path)
    assert len(first) == 32 and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert tokens.load_or_create_secret(path) == first


@pytest.mark.parametrize("garbage", [
    "\udcff.abc", "é.é", "a.b.c", "Zm9v.!!!!", "e30." + "A" * 42, "e30." + "A" * 44, " " + "e30." + "A" * 43,
])
def test_malformed_tokens_are_invalid_not_errors(garbage: str) -> None:
    with pytest.raises(TokenError) as info:
        tokens.verify(SECRET, garbage, now=0)
    assert info.value.reason == "invalid"


def test_signature_over_the_exact_claims_text() -> None:
    # Same claims re-encoded with other JSON spacing: a different body, so the MAC fails.
    import base64
    import json

    token = tokens.sign(SECRET, CLAIMS)
    mac = token.split(".")[1]
    raw = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    body = base64.urlsafe_b64encode(json.dumps(raw).encode()).rstrip(b"=").decode()
    with pytest.raises(TokenError):
        tokens.verify(SECRET, f"{body}.{mac}", now=0)


def test_secret_with_a_loose_mode_is_tightened_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "join-token.key"
    path.write_bytes(b"s" * 32)
    path.chmod(0o644)
    assert tokens.load_or_create_secret(path) == b"s" * 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_secret_directory_is_private(tmp_path: Path) -> None:
    tokens.load_or_create_secret(tmp_path / "secrets" / "join-token.key")
    assert stat.S_IMODE(os.stat(tmp_path / "secrets").st_mode) & 0o077 == 0


def test_expired_token_still_has_a_verifiable_signature() -> None:
    token = tokens.sign(SECRET, CLAIMS)
    with pytest.raises(TokenError) as info:
        tokens.verify(SECRET, token, now=CLAIMS.expires + 1)
    assert info.value.reason == "expired"
    assert tokens.verify_signature(SECRET, token) == CLAIMS
    with pytest.raises(TokenError):
        tokens.verify_signature(b"x" * 32, token)
