"""The installed package: one top-level import name, a console script, no TensorFlow at import."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (found,) = out.glob("asp_export-*.whl")
    return found


def test_wheel_installs_only_the_asp_export_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"asp_export"}
    assert "asp_export/commands/prune.py" in names
    assert "asp_export/models/resnet.py" in names


def test_wheel_holds_every_subpackage_of_the_source_tree(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for init in (ROOT / "asp_export").rglob("__init__.py"):
        assert init.relative_to(ROOT).as_posix() in names, f"{init.parent.name} is missing from the wheel"


def test_wheel_declares_the_asp_console_script(wheel):
    archive = zipfile.ZipFile(wheel)
    (entry_points,) = [n for n in archive.namelist() if n.endswith("entry_points.txt")]
    assert "asp = asp_export.cli:main" in archive.read(entry_points).decode()


@pytest.mark.parametrize(
    ("sys_platform", "machine", "expected"),
    [
        ("linux", "x86_64", "onnxruntime-gpu"),
        ("win32", "AMD64", "onnxruntime-gpu"),
        ("linux", "aarch64", "onnxruntime"),
        ("darwin", "arm64", "onnxruntime"),
    ],
)
def test_exactly_one_onnxruntime_package_per_platform(wheel, sys_platform, machine, expected):
    from packaging.requirements import Requirement

    archive = zipfile.ZipFile(wheel)
    (metadata,) = [n for n in archive.namelist() if n.endswith("METADATA")]
    requirements = [
        Requirement(line.split(":", 1)[1].strip())
        for line in archive.read(metadata).decode().splitlines()
        if line.startswith("Requires-Dist:")
    ]
    environment = {"sys_platform": sys_platform, "platform_machine": machine, "extra": ""}
    chosen = [
        r.name
        for r in requirements
        if r.name in ("onnxruntime", "onnxruntime-gpu")
        and (r.marker is None or r.marker.evaluate(environment))
    ]
    assert chosen == [expected]


def test_importing_the_package_does_not_import_tensorflow():
    code = "import sys, asp_export, asp_export.rundir, asp_export.cli; assert 'tensorflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
