"""`asp check` on the command line: exit codes 0/1/2, outputs, step summary, no TensorFlow import."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_check import make_run, set_field, set_pair

from asp_export.cli import cli


def asp(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, ["check", *map(str, args)], env=env or {"GITHUB_STEP_SUMMARY": ""})


@pytest.fixture
def good(tmp_path: Path) -> Path:
    return make_run(tmp_path / "good")


@pytest.fixture
def baseline(tmp_path: Path, good: Path) -> Path:
    path = tmp_path / "asp-baseline.json"
    result = asp(good, "--baseline", path, "--write-baseline")
    assert result.exit_code == 0, result.output
    return path


def error_line(result) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr  # one line, no traceback
    return lines[0]


def test_write_baseline_then_same_run_passes(good, baseline):
    assert json.loads(baseline.read_text())["metrics"]["params"] == 21307
    result = asp(good, "--baseline", baseline)
    assert result.exit_code == 0, result.output
    assert "PASS: 10 metric(s) within budget." in result.stdout


def test_worse_run_exits_1_and_says_what_failed_by_how_much(tmp_path, baseline):
    worse = make_run(tmp_path / "worse", report=set_field("pruned.accuracy", 0.9733))
    result = asp(worse, "--baseline", baseline)
    assert result.exit_code == 1
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("accuracy.pruned"))
    assert "98.33%" in line and "97.33%" in line and "fail: dropped 1.00 pp > 0.2 pp allowed" in line
    assert (
        error_line(result)
        == "Error: asp check failed: 1 metric(s) regressed beyond budget (accuracy.pruned)."
    )


def test_budget_option_lets_a_regression_pass(tmp_path, baseline):
    worse = make_run(tmp_path / "worse", report=set_field("pruned.accuracy", 0.9733))
    assert asp(worse, "--baseline", baseline, "--max-accuracy-drop", "1.5pp").exit_code == 0


def test_update_prints_what_changed(tmp_path, baseline):
    faster = make_run(tmp_path / "faster", bench=set_pair(32, 4.4))
    result = asp(faster, "--baseline", baseline, "--write-baseline", "--max-latency-regression", "15%")
    assert result.exit_code == 0
    assert f"updated {baseline}" in result.stdout
    assert (
        "~ speedup_p50[onnxruntime/CPUExecutionProvider/onnx/fp32/b32]: 4.0 -> 4.4 (+10.0%)" in result.stdout
    )
    assert "~ budget latency: '10%' -> '15%'" in result.stdout


def test_missing_baseline_exits_2_with_write_baseline_hint(good, tmp_path):
    result = asp(good, "--baseline", tmp_path / "none.json")
    assert result.exit_code == 2
    assert "--write-baseline" in error_line(result)


def test_malformed_baseline_exits_2_in_one_line(good, tmp_path):
    path = tmp_path / "asp-baseline.json"
    path.write_text('{"schema_version": 1, "metrics": ')
    result = asp(good, "--baseline", path)
    assert result.exit_code == 2
    assert "is not valid JSON" in error_line(result)


def test_newer_baseline_schema_exits_2(good, tmp_path):
    path = tmp_path / "asp-baseline.json"
    path.write_text('{"schema_version": 99, "metrics": {"params": 1}}')
    result = asp(good, "--baseline", path)
    assert result.exit_code == 2
    assert "newer than this asp understands" in error_line(result)


def test_missing_run_dir_exits_2(baseline, tmp_path):
    result = asp(tmp_path / "no-run", "--baseline", baseline)
    assert result.exit_code == 2
    assert "does not exist" in error_line(result)


def test_bad_budget_option_exits_2(good, baseline):
    result = asp(good, "--baseline", baseline, "--max-accuracy-drop", "0.2%")
    assert result.exit_code == 2
    assert "percentage points" in error_line(result)


def test_source_the_baseline_has_missing_exits_1_naming_it(tmp_path, baseline):
    result = asp(make_run(tmp_path / "noexport", drop=("manifest", "bench")), "--baseline", baseline)
    assert result.exit_code == 1
    line = error_line(result)
    assert line.startswith("Error: asp check failed: 5 metric(s) of the baseline have no source in this run")
    assert "missing: export/manifest.json, bench/bench.json" in line
    assert "--allow-missing export,bench" in line
    allowed = asp(
        make_run(tmp_path / "allowed", drop=("manifest", "bench")),
        "--baseline",
        baseline,
        "--allow-missing",
        "export,bench",
    )
    assert allowed.exit_code == 0, allowed.output
    assert "5 skipped (missing: export/manifest.json, bench/bench.json)" in allowed.stdout


def test_skipped_source_is_visible_and_not_a_pass(tmp_path, baseline):
    result = asp(
        make_run(tmp_path / "nobench", drop=("bench",)), "--baseline", baseline, "--allow-missing", "bench"
    )
    assert result.exit_code == 0
    assert "bench/bench.json MISSING" in result.stdout
    assert result.stdout.count("skipped: no bench/bench.json") == 2
    assert "PASS: 8 metric(s) within budget; 2 skipped (missing: bench/bench.json)." in result.stdout


def test_junit_to_file_keeps_table_on_terminal(tmp_path, baseline):
    worse = make_run(tmp_path / "worse", report=set_field("pruned.params", 40000))
    out = tmp_path / "reports" / "asp-check.xml"
    result = asp(worse, "--baseline", baseline, "--format", "junit", "--output", out)
    assert result.exit_code == 1
    assert "metric" in result.stdout.splitlines()[3]  # the table header
    suite = ET.parse(out).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures")) == ("11", "1")


def test_json_to_stdout(good, baseline):
    result = asp(good, "--baseline", baseline, "--format", "json")
    assert json.loads(result.stdout)["passed"] is True


def test_github_step_summary_is_appended(good, baseline, tmp_path):
    summary = tmp_path / "step_summary.md"
    result = asp(good, "--baseline", baseline, env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert result.exit_code == 0
    assert "| `params` | 21,307 | 21,307 |" in summary.read_text()


def test_check_does_not_import_tensorflow(good, baseline):
    code = (
        "import sys\n"
        "import asp_export.check\n"
        "assert 'numpy' not in sys.modules, 'asp_export.check should need only the standard library'\n"
        "from asp_export.cli import cli\n"
        f"try:\n    cli(['check', {str(good)!r}, '--baseline', {str(baseline)!r}])\n"
        "except SystemExit as exit:\n    assert exit.code == 0, exit.code\n"
        "heavy = sorted(m for m in ('tensorflow', 'keras', 'onnxruntime') if m in sys.modules)\n"
        "assert not heavy, f'asp check imported {heavy}'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
