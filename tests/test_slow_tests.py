"""One switch for slow tests: the `slow` marker, run with ASP_SLOW_TESTS=1 (`make test`, CI) or `-m slow`,
skipped with a reason otherwise (tests/conftest.py). No test reads ASP_SLOW_TESTS itself."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

SUITE = """
import pytest

@pytest.mark.slow
def test_slow():
    pass

@pytest.mark.parametrize("n", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_param(n):
    pass

def test_fast():
    pass
"""


def _run(tmp_path: Path, *args: str, slow_env: str | None = None) -> str:
    """Run a small suite under the real tests/conftest.py; return pytest's -rA output."""
    (tmp_path / "tests").mkdir(exist_ok=True)
    shutil.copy(TESTS / "conftest.py", tmp_path / "tests" / "conftest.py")
    (tmp_path / "tests" / "test_suite.py").write_text(SUITE)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    slow: slow\n")
    env = {k: v for k, v in os.environ.items() if k != "ASP_SLOW_TESTS"}
    if slow_env is not None:
        env["ASP_SLOW_TESTS"] = slow_env
    command = [sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider", "--strict-markers", *args]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    return result.stdout


def test_slow_tests_are_skipped_with_a_reason_by_default(tmp_path):
    out = _run(tmp_path)
    assert "2 passed, 2 skipped" in out, out
    assert out.count("set ASP_SLOW_TESTS=1 or select with -m slow") == 2, out


@pytest.mark.parametrize("how", ["env", "env-0", "marker"])
def test_slow_tests_run_with_the_switch(tmp_path, how):
    if how == "env":
        out = _run(tmp_path, slow_env="1")
        assert "4 passed" in out and "skipped" not in out, out
    elif how == "env-0":  # only "1" switches them on
        out = _run(tmp_path, slow_env="0")
        assert "2 passed, 2 skipped" in out, out
    else:
        out = _run(tmp_path, "-m", "slow")
        assert "2 passed, 2 deselected" in out and "skipped" not in out, out


def test_only_conftest_reads_the_switch_and_the_slow_tests_are_marked():
    readers = [p.name for p in sorted(TESTS.glob("*.py")) if "ASP_SLOW_TESTS" in p.read_text()]
    assert readers == ["conftest.py", "test_slow_tests.py"], readers
    marked = {p.name for p in TESTS.glob("test_*.py") if "pytest.mark.slow" in p.read_text()}
    assert {"test_export.py", "test_distributed.py", "test_surgery_applications.py"} <= marked, marked
    makefile = (TESTS.parent / "Makefile").read_text()
    assert "ASP_SLOW_TESTS=1 $(BIN)/python -m pytest" in makefile  # make test (CI) runs all of them
    development = (TESTS.parent / "README.md").read_text().split("## Development", 1)[1]
    assert "`slow` marker" in development and "ASP_SLOW_TESTS=1" in development and "-m slow" in development
