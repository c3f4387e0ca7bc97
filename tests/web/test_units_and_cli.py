"""The units file's validation, and the admin CLI run as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from web.units import UnitsError, parse_units, subtree, tree_rows

GOOD = """
[[unit]]
id = "bo"
parent = ""
name = "Bộ"
kind = "central"
emails = ["a@bo.example.vn"]

[[unit]]
id = "so"
parent = "bo"
name = "Sở"
kind = "provincial"
emails = []

[[unit]]
id = "xa"
parent = "so"
name = "Xã"
kind = "local"
"""


def test_any_depth_and_parents_first() -> None:
    text = GOOD.replace('id = "bo"\nparent = ""', 'id = "bo"\nparent = ""') + "".join(
        f'\n[[unit]]\nid = "d{i}"\nparent = "{"xa" if i == 0 else f"d{i-1}"}"\nname = "Tầng {i}"\nkind = "local"\n'
        for i in range(10))
    units, hashes = parse_units(text, "u.toml")
    order = [u.id for u in units]
    assert order.index("bo") < order.index("so") < order.index("xa") < order.index("d0") < order.index("d9")
    assert subtree(units, "so") == {"so", "xa"} | {f"d{i}" for i in range(10)}
    depths = {u.id: d for d, u in tree_rows(units)}
    assert depths["d9"] == 12
    assert set(hashes) == set(order)


@pytest.mark.parametrize("change, message", [
    (('kind = "local"', 'kind = "district"'), 'unit[2] (xa).kind: expected one of central, provincial, local, external'),
    (('parent = "so"', 'parent = "nowhere"'), "unit xa.parent: expected the id of a unit in this file, got 'nowhere'"),
    (('id = "xa"', 'id = "so"'), "unit[2] (so).id: expected a unique id"),
    (('id = "xa"', 'id = "Xã Bắc Hà"'), "unit[2].id: expected lowercase letters"),
    (('emails = ["a@bo.example.vn"]', 'emails = ["not-an-address"]'), "unit[0] (bo).emails: expected a list of e-mail"),
    (('name = "Xã"', 'name = ""'), "unit[2] (xa).name: expected a non-empty string"),
    (('name = "Xã"', 'name = "Xã"\ncolour = "red"'), "unit[2].colour: unknown key"),
    (('parent = ""', 'parent = "xa"'), "expected no cycle"),
])
def test_errors_name_file_key_and_expectation(change: tuple[str, str], message: str) -> None:
    with pytest.raises(UnitsError) as info:
        parse_units(GOOD.replace(*change, 1), "/etc/lienthong/units.toml")
    text = str(info.value)
    assert "/etc/lienthong/units.toml: " in text and message in text, text


REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str, cwd: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # this checkout's code, whatever is installed
    return subprocess.run([sys.executable, "-m", "lienthong", *args], input=stdin, capture_output=True, text=True,
                          cwd=cwd, timeout=60, env=env)


def test_check_config_reports_units_errors(tmp_path: Path) -> None:
    (tmp_path / "units.toml").write_text(GOOD.replace('kind = "local"', 'kind = "district"'), encoding="utf-8")
    (tmp_path / "lt.toml").write_text('[general]\nunits_file = "units.toml"\n', encoding="utf-8")
    res = _cli("check-config", "--config", str(tmp_path / "lt.toml"), cwd=tmp_path)
    assert res.returncode == 1
    assert f"{tmp_path / 'units.toml'}: unit[2] (xa).kind: expected one of" in res.stderr
    assert "Traceback" not in res.stderr


def test_admin_add_and_token(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    res = _cli("admin", "add", "chanh-vp", "--role", "unit_admin", "--unit", "so-dttg-hue", "--state-dir", state,
               cwd=tmp_path, stdin="a good long password\n")
    assert res.returncode == 0, res.stderr
    res = _cli("admin", "add", "chanh-vp", "--state-dir", state, cwd=tmp_path, stdin="a good long password\n")
    assert res.returncode == 1 and "exists" in res.stderr
    res = _cli("admin", "add", "x", "--role", "unit_admin", "--unit", "nowhere", "--state-dir", state,
               cwd=tmp_path, stdin="a good long password\n")
    assert res.returncode == 1 and "no unit 'nowhere'" in res.stderr
    res = _cli("admin", "add", "y", "--state-dir", state, cwd=tmp_path, stdin="short\n")
    assert res.returncode == 1 and "at least 10" in res.stderr
    res = _cli("admin", "token", "chanh-vp", "--state-dir", state, cwd=tmp_path)
    assert res.returncode == 0 and res.stdout.strip().startswith("lt_")
    res = _cli("admin", "token", "nobody", "--state-dir", state, cwd=tmp_path)
    assert res.returncode == 1 and "no account" in res.stderr
