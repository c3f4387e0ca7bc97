"""Config loading: every error names file, key and expectation; unknown keys are errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lienthong.config import ConfigError, load_config

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "bad.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_defaults_are_valid() -> None:
    cfg = load_config(None)
    assert cfg.general.timezone == "Asia/Ho_Chi_Minh"
    assert cfg.general.language == "vi"
    assert cfg.web.host == "127.0.0.1"


def test_shipped_example_is_valid() -> None:
    cfg = load_config(REPO / "conf" / "lienthong.toml")
    assert cfg.source.endswith("lienthong.toml")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[general]\nfoo = 1\n", "general.foo: unknown key"),
        ("[nosuch]\nx = 1\n", "nosuch: unknown key"),
        ("[web]\nport = 'x'\n", "web.port: expected an integer, got 'x'"),
        ("[web]\nport = 70000\n", "web.port: expected a TCP port"),
        ("[general]\ntimezone = 'Mars/Base'\n", "general.timezone: expected an IANA time zone"),
        ("[general]\nlanguage = 'fr'\n", 'general.language: expected "vi" or "en"'),
        ("[media]\ncandidate_addresses = '127.0.0.1'\n", "media.candidate_addresses: expected a list of a string"),
        ("[media]\nice_servers = [{urls = ['stun:x'], bogus = 1}]\n", "media.ice_servers[0].bogus: unknown key"),
        ("[mail]\nsubmission_listen = 'nohost'\n", "mail.submission_listen: expected"),
        ("[web]\nplain_http = 1\n", "web.plain_http: expected true or false"),
        ("[tls]\ncert = 'a.pem'\n", "tls.cert: expected cert and key both set"),
        ("not toml at all [", "not valid TOML"),
    ],
)
def test_errors_name_file_key_and_expectation(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    assert expected in message


def test_all_errors_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, "[general]\nfoo = 1\ntimezone = 'Nowhere/Zone'\n[web]\nport = 'x'\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert len(info.value.errors) == 3, info.value.errors


def test_check_config_cli_exit_codes(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ok = subprocess.run([sys.executable, "-m", "lienthong", "check-config", "--config", str(REPO / "conf" / "lienthong.toml")],
                        capture_output=True, text=True, cwd=tmp_path, env=env)
    assert ok.returncode == 0, ok.stderr
    bad = write(tmp_path, "[web]\nport = 'x'\n")
    res = subprocess.run([sys.executable, "-m", "lienthong", "check-config", "--config", str(bad)],
                         capture_output=True, text=True, cwd=tmp_path, env=env)
    assert res.returncode == 1
    assert f"{bad}: web.port: expected an integer" in res.stderr
    assert "Traceback" not in res.stderr
