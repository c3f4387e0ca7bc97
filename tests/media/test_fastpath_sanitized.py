"""media/_fastpath.c reads what participants send (authenticated by their own SRTP keys, so
shaped by them): its tests, the differential ones against the Python reference included, run
again here on a build with AddressSanitizer and UndefinedBehaviorSanitizer, in a child process that
loads that build as media._fastpath.  Any out-of-bounds access, use after free or undefined
behaviour on the way aborts the child.  Skipped, saying why, without gcc and its sanitizer
runtimes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from media import native

ROOT = Path(__file__).resolve().parents[2]
TESTS = ["test_fastpath.py", "test_rewriters_compiled.py", "test_fanout_compiled.py", "test_receive_compiled.py",
         "test_rtp_rewrite.py", "test_vp8.py", "test_forwarding.py", "test_rtc_adapter.py"]

BOOTSTRAP = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("media._fastpath", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
sys.modules["media._fastpath"] = module
import media.native
assert media.native.fastpath is module, "the sanitized build is not the one in use"
print("sanitized media._fastpath:", module.__file__, flush=True)
import pytest
sys.exit(pytest.main(sys.argv[2:]))
"""


def _runtime(cc: str, name: str) -> str | None:
    path = subprocess.run([cc, f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
    return path if os.path.isabs(path) and os.path.exists(path) else None


def test_the_compiled_paths_under_address_and_undefined_behaviour_sanitizers(tmp_path: Path) -> None:
    cc = shutil.which("gcc")
    include = sysconfig.get_paths()["include"]
    if cc is None or not (Path(include) / "Python.h").exists():
        pytest.skip("no gcc or no Python headers: media._fastpath is not built here")
    asan, ubsan = _runtime(cc, "libasan.so"), _runtime(cc, "libubsan.so")
    if asan is None or ubsan is None:
        pytest.skip("gcc's sanitizer runtimes (libasan, libubsan) are not installed")
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    built = tmp_path / f"_fastpath{suffix}"
    subprocess.run([cc, "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
                    "-fno-omit-frame-pointer", "-Wall", "-Wextra", "-Wno-unused-parameter",
                    "-Wno-missing-field-initializers", "-Werror", "-fPIC", "-shared", f"-I{include}",
                    str(ROOT / "media" / "_fastpath.c"), "-o", str(built)], check=True)
    # PYTHONMALLOC=malloc: every object its own malloc block, so ASAN sees its bounds (pymalloc
    # carves small objects out of arenas it cannot see into)
    env = dict(os.environ, LD_PRELOAD=f"{asan} {ubsan}", ASAN_OPTIONS="detect_leaks=0:abort_on_error=1", PYTHONMALLOC="malloc",
               UBSAN_OPTIONS="print_stacktrace=1", PYTHONPATH=str(ROOT))
    env.pop(native.PURE_PYTHON_ENV, None)
    # -s: no capture in the child, so a sanitizer report written just before an abort is not lost
    child = subprocess.run([sys.executable, "-c", BOOTSTRAP, str(built), "-q", "-s", "-p", "no:cacheprovider",
                            *[str(ROOT / "tests" / "media" / name) for name in TESTS]],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    output = child.stdout + child.stderr
    assert f"sanitized media._fastpath: {built}" in output
    assert child.returncode == 0, output[-6000:]
    assert "ERROR: AddressSanitizer" not in output and "runtime error:" not in output, output[-6000:]
    assert " passed" in output and " skipped" not in output.split("\n")[-2], output[-2000:]
