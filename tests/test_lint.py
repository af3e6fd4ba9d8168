"""The code stays in the style pyproject.toml configures (ruff: E, F, I, B, UP; line length 110)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CODE = ["asp_export", "commands", "models", "tests", "benchmarks"]  # not the Markdown docs


def _ruff() -> list[str]:
    found = shutil.which("ruff", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("ruff is not installed: `pip install -e '.[test]'` brings it")
    return [found]


def test_ruff_check_passes():
    result = subprocess.run([*_ruff(), "check", *CODE], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]


def test_ruff_format_is_applied():
    result = subprocess.run([*_ruff(), "format", "--check", *CODE], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]
