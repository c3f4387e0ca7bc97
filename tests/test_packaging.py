"""Packaging and deployment files: the systemd unit, and a clean install from a copy of the repo."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed: the unit file was not verified")
    unit = (REPO / "systemd" / "lienthong.service").read_text(encoding="utf-8")
    # verify checks that ExecStart exists; point it at this checkout's console script.
    exe = Path(sys.executable).with_name("lienthong")
    assert "/opt/lienthong/venv/bin/lienthong" in unit
    local = tmp_path / "lienthong.service"
    local.write_text(unit.replace("/opt/lienthong/venv/bin/lienthong", str(exe)), encoding="utf-8")
    res = subprocess.run([analyze, "verify", "--man=no", str(local)], capture_output=True, text=True)
    problems = [line for line in (res.stdout + res.stderr).splitlines()
                if line.strip() and "lienthong.service" in line]
    assert res.returncode == 0 and not problems, res.stdout + res.stderr


def test_systemd_unit_hardening() -> None:
    unit = (REPO / "systemd" / "lienthong.service").read_text(encoding="utf-8")
    for directive in ("User=lienthong", "StateDirectory=lienthong", "NoNewPrivileges=yes", "ProtectSystem=strict",
                      "PrivateTmp=yes", "AmbientCapabilities=CAP_NET_BIND_SERVICE", "Restart=on-failure"):
        assert directive in unit.splitlines(), directive


@pytest.mark.slow
def test_clean_install_runs_check_config(tmp_path: Path) -> None:
    """A fresh venv from a clean copy of the tracked files: catches a dependency missing from pyproject."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    tracked = [f for f in files.decode().split("\0") if f]
    if not tracked:
        pytest.skip("not a git checkout")
    copy = tmp_path / "src"
    for rel in tracked:
        src = REPO / rel
        if src.is_file():
            dst = copy / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    res = subprocess.run([str(py), "-m", "pip", "install", "-q", str(copy)], capture_output=True, text=True,
                         env=env, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    # Run from an empty folder so nothing from the checkout shadows the installed package.
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    res = subprocess.run([str(env_dir / "bin" / "lienthong"), "check-config", "--config",
                          str(copy / "conf" / "lienthong.toml")], capture_output=True, text=True, cwd=run_dir, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "OK" in res.stdout
