"""`asp check` library: every metric is caught when it regresses and passes within its budget.

Run directories are built from tests/data/check/good_run (hand-written JSON in the run-dir
contract's field names, illustrative numbers) and edited per test.
"""

from __future__ import annotations

import json
import logging
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from asp_export.check import BaselineError, collect, render, run_check, write_baseline
from asp_export.check.output import append_step_summary
from asp_export.errors import RunDirError, UserInputError

GOOD_RUN = Path(__file__).parent / "data" / "check" / "good_run"
SOURCE_FILES = {"report": "report.json", "manifest": "export/manifest.json", "bench": "bench/bench.json"}

PAIR_B32 = "speedup_p50[onnxruntime/CPUExecutionProvider/onnx/fp32/b32]"
PAIR_B1 = "speedup_p50[onnxruntime/CPUExecutionProvider/onnx/fp32/b1]"
PRUNED_ONNX = "size_bytes[pruned/onnx/fp32]"
PRUNED_KERAS = "size_bytes[pruned/keras]"

Edit = Callable[[dict[str, Any]], None]


def make_run(root: Path, *, drop: tuple[str, ...] = (), **edits: Edit) -> Path:
    """Copy the good run to `root`, delete the sources in `drop`, apply edits per source key."""
    shutil.copytree(GOOD_RUN, root)
    for key in drop:
        (root / SOURCE_FILES[key]).unlink()
    for key, edit in edits.items():
        path = root / SOURCE_FILES[key]
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data))
    return root


def set_field(dotted: str, value: Any) -> Edit:
    def edit(data: dict[str, Any]) -> None:
        *parents, last = dotted.split(".")
        for part in parents:
            data = data[part]
        data[last] = value

    return edit


def set_file(model: str, dotted: str, value: Any) -> Edit:
    """Manifest edit on the onnx/fp32 file of `model`."""

    def edit(data: dict[str, Any]) -> None:
        (entry,) = [f for f in data["files"] if f["model"] == model]
        set_field(dotted, value)(entry)

    return edit


def set_pair(batch: int, speedup: float | None) -> Edit:
    def edit(data: dict[str, Any]) -> None:
        (pair,) = [p for p in data["pairs"] if p["batch"] == batch]
        pair["speedup_p50"] = speedup

    return edit


@pytest.fixture
def baseline(tmp_path: Path) -> Path:
    """A baseline written from the good run with the default budgets."""
    path = tmp_path / "asp-baseline.json"
    write_baseline(make_run(tmp_path / "base"), path)
    return path


def row(report, name: str):
    (match,) = [r for r in report.rows if r.name == name]
    return match


# --- each metric: regression detected, and within budget passes ------------------------------

# (metric name, source, edit that makes it worse by a known amount, budget option key, budget that allows it)
REGRESSIONS = [
    ("params", "report", set_field("pruned.params", 21307 + 2130), "params", "10%"),  # +9.997%
    ("flops", "report", set_field("pruned.flops", 238000 + 11900), "flops", "5%"),  # +5.0%
    (PRUNED_KERAS, "report", set_field("pruned.size_bytes", 118000 + 513), "size", "0.001%"),  # +1.18 + 512 B
    (
        PRUNED_ONNX,
        "manifest",
        set_file("pruned", "size_bytes", 86000 + 8600 + 512),
        "size",
        "10",
    ),  # 10% + 512
    ("accuracy.pruned", "report", set_field("pruned.accuracy", 0.9833 - 0.0050), "accuracy", "0.5pp"),
    ("accuracy.masked", "report", set_field("masked.accuracy", 0.9839 - 0.0030), "accuracy", "0.3"),
    (PAIR_B32, "bench", set_pair(32, 4.0 * 0.85), "latency", "15%"),  # -15%
]


@pytest.mark.parametrize(
    ("name", "source", "edit", "budget", "allowance"), REGRESSIONS, ids=[r[0] for r in REGRESSIONS]
)
def test_metric_regression_fails_under_default_budget(
    tmp_path, baseline, name, source, edit, budget, allowance
):
    run = make_run(tmp_path / "worse", **{source: edit})
    report = run_check(run, baseline)
    assert not report.passed
    assert [r.name for r in report.failures] == [name]
    assert row(report, name).message  # says by how much


@pytest.mark.parametrize(
    ("name", "source", "edit", "budget", "allowance"), REGRESSIONS, ids=[r[0] for r in REGRESSIONS]
)
def test_metric_regression_passes_within_its_budget(
    tmp_path, baseline, name, source, edit, budget, allowance
):
    run = make_run(tmp_path / "worse", **{source: edit})
    report = run_check(run, baseline, {budget: allowance})
    assert report.passed, report.summary()
    assert row(report, name).status == "pass"


def test_sizes_allow_512_bytes_of_metadata_noise(tmp_path, baseline):
    # identical models exported twice differ by a few bytes (embedded paths, generated names)
    within = run_check(
        make_run(tmp_path / "a", manifest=set_file("pruned", "size_bytes", 86000 + 512)), baseline
    )
    beyond = run_check(
        make_run(tmp_path / "b", manifest=set_file("pruned", "size_bytes", 86000 + 513)), baseline
    )
    assert within.passed
    assert [r.name for r in beyond.failures] == [PRUNED_ONNX]
    assert row(beyond, PRUNED_ONNX).message == "+513 B (+0.6%) > +0% + 512 B allowed"
    assert "<= +0% +512 B" in render(beyond, "table")


def test_accuracy_drop_is_measured_in_percentage_points(tmp_path, baseline):
    run = make_run(tmp_path / "worse", report=set_field("pruned.accuracy", 0.9833 - 0.0021))
    report = run_check(run, baseline)  # default budget 0.2 pp
    r = row(report, "accuracy.pruned")
    assert r.status == "fail"
    assert r.delta == pytest.approx(-0.0021)
    assert "0.21 pp" in r.message
    assert run_check(
        make_run(tmp_path / "ok", report=set_field("pruned.accuracy", 0.9833 - 0.0019)), baseline
    ).passed


def test_latency_default_allows_ten_percent_lower_speedup(tmp_path, baseline):
    within = run_check(make_run(tmp_path / "a", bench=set_pair(32, 3.61)), baseline)
    beyond = run_check(make_run(tmp_path / "b", bench=set_pair(32, 3.59)), baseline)
    assert within.passed
    assert [r.name for r in beyond.failures] == [PAIR_B32]
    assert "-10.3% < -10% allowed" in row(beyond, PAIR_B32).message


def test_latency_failure_shows_the_runs_own_spread(tmp_path, baseline):
    def slow_with_spread(data):
        (pair,) = [p for p in data["pairs"] if p["batch"] == 32]
        pair.update(speedup_p50=2.0, speedup_p10_blocks=1.5, speedup_p90_blocks=2.5)

    report = run_check(make_run(tmp_path / "r", bench=slow_with_spread), baseline)
    assert row(report, PAIR_B32).message == "-50.0% < -10% allowed (block spread in this run 1.50x-2.50x)"


def test_parity_must_stay_true_and_names_the_failing_file(tmp_path, baseline):
    run = make_run(tmp_path / "bad", manifest=set_file("pruned", "parity.passed", False))
    report = run_check(run, baseline, {"size": "100%", "accuracy": "100"})  # no budget loosens parity
    r = row(report, "parity.passed")
    assert r.status == "fail"
    assert "pruned/onnx/fp32" in r.message


def test_failed_export_fails_parity(tmp_path, baseline):
    def int8_failed(data):
        data["failures"] = [
            {"model": "pruned", "format": "tflite", "precision": "int8", "error": "converter"}
        ]

    report = run_check(make_run(tmp_path / "r", manifest=int8_failed), baseline)
    assert row(report, "parity.passed").status == "fail"
    assert "pruned/tflite/int8 (export failed)" in row(report, "parity.passed").message


def test_improvements_pass(tmp_path, baseline):
    run = make_run(tmp_path / "better", report=set_field("pruned.params", 15000), bench=set_pair(32, 5.0))
    assert run_check(run, baseline).passed


def test_speedup_without_value_fails(tmp_path, baseline):
    report = run_check(make_run(tmp_path / "r", bench=set_pair(1, None)), baseline)
    assert [r.name for r in report.failures] == [PAIR_B1]
    assert "null in bench/bench.json" in row(report, PAIR_B1).message


def test_metric_missing_from_a_present_source_fails(tmp_path, baseline):
    def drop_batch1_pair(data):
        data["pairs"] = [p for p in data["pairs"] if p["batch"] != 1]

    report = run_check(make_run(tmp_path / "r", bench=drop_batch1_pair), baseline)
    assert row(report, PAIR_B1).status == "fail"
    assert "missing from bench/bench.json" in row(report, PAIR_B1).message


def test_per_metric_budget_in_baseline_file(tmp_path, baseline):
    data = json.loads(baseline.read_text())
    data["budgets"][PAIR_B1] = "30%"  # batch 1 is dominated by per-call overhead: noisier
    baseline.write_text(json.dumps(data))
    run = make_run(tmp_path / "r", bench=set_pair(1, 1.6 * 0.75))
    assert run_check(run, baseline).passed
    assert not run_check(run, baseline, {"latency": "10%"}).passed  # an explicit option wins


def test_family_budget_in_baseline_file_is_used(tmp_path, baseline):
    data = json.loads(baseline.read_text())
    data["budgets"]["params"] = "20%"
    baseline.write_text(json.dumps(data))
    assert run_check(make_run(tmp_path / "r", report=set_field("pruned.params", 25000)), baseline).passed


def test_pairs_differing_only_in_precision_are_separate_metrics(tmp_path):
    def tflite_pairs(data):
        data["pairs"] = [
            {
                "runtime": "tflite",
                "provider": None,
                "format": "tflite",
                "precision": precision,
                "batch": 1,
                "speedup_p50": speedup,
            }
            for precision, speedup in (("fp32", 2.0), ("int8", 1.2))
        ]

    figures = collect(make_run(tmp_path / "r", bench=tflite_pairs))
    assert figures.values["speedup_p50[tflite/-/tflite/fp32/b1]"] == 2.0
    assert figures.values["speedup_p50[tflite/-/tflite/int8/b1]"] == 1.2


# --- sources -------------------------------------------------------------------------------


def test_source_the_baseline_has_missing_from_the_run_fails(tmp_path, baseline):
    """The baseline was written with export/ and bench/; both deleted, the gate must not go green."""
    report = run_check(make_run(tmp_path / "r", drop=("manifest", "bench")), baseline)
    assert not report.passed
    failed = {r.name for r in report.failures}
    assert {PAIR_B1, PAIR_B32, PRUNED_ONNX, "parity.passed"} <= failed
    assert all(r.metric.source in ("manifest", "bench") for r in report.failures)
    assert "which the baseline was written with" in row(report, PAIR_B1).message
    assert report.count("skipped") == 0
    summary = report.summary()
    assert summary.startswith("FAIL: ")
    assert "missing: export/manifest.json, bench/bench.json" in summary
    assert "--allow-missing export,bench" in summary
    assert "regressed" not in report.failure_line()


def test_allow_missing_skips_the_named_sources_only(tmp_path, baseline):
    run = make_run(tmp_path / "r", drop=("manifest", "bench"))
    report = run_check(run, baseline, allow_missing=("bench",))
    assert {r.metric.source for r in report.failures} == {"manifest"}
    report = run_check(run, baseline, allow_missing=("export", "bench"))
    assert report.passed
    skipped = [r for r in report.rows if r.status == "skipped"]
    assert {PAIR_B1, PAIR_B32, PRUNED_ONNX, "parity.passed"} <= {r.name for r in skipped}
    assert "skipped (missing: export/manifest.json, bench/bench.json)" in report.summary()


def test_source_the_baseline_never_had_is_not_required(tmp_path):
    baseline = tmp_path / "b.json"
    write_baseline(make_run(tmp_path / "base", drop=("bench",)), baseline)
    report = run_check(make_run(tmp_path / "r", drop=("bench",)), baseline)
    assert report.passed and report.count("skipped") == 0


def test_unknown_allow_missing_stage_is_bad_input(tmp_path, baseline):
    with pytest.raises(UserInputError, match="Unknown --allow-missing stage 'benhc'. Did you mean 'bench'"):
        run_check(make_run(tmp_path / "r"), baseline, allow_missing=("benhc",))


def test_missing_source_is_skipped_not_passed(tmp_path, baseline):
    report = run_check(make_run(tmp_path / "r", drop=("bench",)), baseline, allow_missing=("bench",))
    skipped = [r for r in report.rows if r.status == "skipped"]
    assert {r.name for r in skipped} == {PAIR_B1, PAIR_B32}
    assert all(r.message == "no bench/bench.json" for r in skipped)
    assert report.missing_sources == ["bench/bench.json"]
    assert "2 skipped (missing: bench/bench.json)" in report.summary()
    assert "skipped: no bench/bench.json" in render(report, "table")


def test_no_source_at_all_is_bad_input(tmp_path, baseline):
    run = make_run(tmp_path / "r", drop=("report", "manifest", "bench"))
    with pytest.raises(RunDirError, match="holds none of report.json") as info:
        run_check(run, baseline)
    assert info.value.exit_code == 2


def test_missing_run_dir_is_bad_input(tmp_path, baseline):
    with pytest.raises(RunDirError, match="does not exist"):
        run_check(tmp_path / "nope", baseline)


def test_wrong_typed_field_names_the_file_and_field(tmp_path):
    run = make_run(tmp_path / "r", report=set_field("pruned.accuracy", 98.3))  # percent, not a fraction
    with pytest.raises(
        RunDirError, match=r"report.json: field pruned.accuracy is 98.3, expected an accuracy"
    ):
        collect(run)


def test_new_metric_is_reported_but_not_gated(tmp_path, baseline):
    def add_pair(data):
        data["pairs"].append(
            {
                "runtime": "litert",
                "provider": "cpu",
                "format": "tflite",
                "batch": 1,
                "speedup_p50": 0.5,
                "flops_ratio": 19.3,
                "efficiency": 0.03,
            }
        )

    report = run_check(make_run(tmp_path / "r", bench=add_pair), baseline)
    assert report.passed
    assert row(report, "speedup_p50[litert/cpu/tflite/b1]").status == "new"


# --- baseline file -------------------------------------------------------------------------


def test_round_trip_same_run_passes(tmp_path, baseline):
    data = json.loads(baseline.read_text())
    assert data["schema_version"] == 1
    assert set(data) >= {"created_from", "asp_version", "metrics", "budgets"}
    assert data["metrics"]["params"] == 21307
    assert data["budgets"] == {
        "size": "0%",
        "params": "0%",
        "flops": "0%",
        "nodes": "0%",
        "accuracy": "0.2pp",
        "latency": "10%",
    }
    report = run_check(tmp_path / "base", baseline)
    assert report.passed
    assert {r.name for r in report.rows if r.status == "pass"} == {
        "params",
        "flops",
        PRUNED_KERAS,
        "accuracy.pruned",
        "accuracy.masked",
        "size_bytes[dense/onnx/fp32]",
        PRUNED_ONNX,
        "parity.passed",
        PAIR_B1,
        PAIR_B32,
    }


def test_update_reports_changes_and_keeps_budgets(tmp_path, baseline):
    data = json.loads(baseline.read_text())
    data["budgets"]["latency"] = "25%"
    baseline.write_text(json.dumps(data))
    run = make_run(tmp_path / "new", report=set_field("pruned.params", 20000))
    update = write_baseline(run, baseline, {"accuracy": "0.5"})
    assert not update.created
    assert "~ params: 21307 -> 20000 (-6.1%)" in update.changes
    assert "~ budget accuracy: '0.2pp' -> '0.5pp'" in update.changes
    stored = json.loads(baseline.read_text())
    assert stored["budgets"]["latency"] == "25%"
    assert stored["metrics"]["params"] == 20000


def test_write_without_bench_says_so(tmp_path):
    update = write_baseline(make_run(tmp_path / "r", drop=("bench",)), tmp_path / "b.json")
    assert update.created
    assert update.missing_sources == ["bench/bench.json"]
    assert not any(k.startswith("speedup_p50") for k in update.baseline.metrics)


def test_missing_baseline_hints_write_baseline(tmp_path):
    with pytest.raises(BaselineError, match="not found; create it .* --write-baseline") as info:
        run_check(make_run(tmp_path / "r"), tmp_path / "none.json")
    assert info.value.exit_code == 2


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "is not valid JSON"),
        ('{"schema_version": 2, "metrics": {"params": 1}}', "newer than this asp understands"),
        ('{"metrics": {"params": 1}}', "no integer schema_version"),
        ('{"schema_version": 1}', 'no "metrics" object'),
        ('{"schema_version": 1, "metrics": {"params": [1]}}', "expected a number"),
        ('{"schema_version": 1, "metrics": {"parms": 1}}', "Did you mean 'params'"),
        ('{"schema_version": 1, "metrics": {"accuracy.pruned": 98.3}}', "expected a fraction"),
        ('{"schema_version": 1, "metrics": {"params": "21k"}}', "expected a number"),
        (
            '{"schema_version": 1, "metrics": {"params": 1}, "budgets": {"latncy": "5%"}}',
            "Did you mean 'latency'",
        ),
        ('{"schema_version": 1, "metrics": {"params": 1}, "budgets": {"latency": "fast"}}', "not a budget"),
    ],
)
def test_bad_baseline_is_bad_input(tmp_path, content, match):
    path = tmp_path / "asp-baseline.json"
    path.write_text(content)
    with pytest.raises(UserInputError, match=match) as info:
        run_check(make_run(tmp_path / "r"), path)
    assert info.value.exit_code == 2
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("key", "text", "match"),
    [
        ("accuracy", "0.2%", "percentage points, not percent"),
        ("latency", "-5%", ">= 0"),
        ("size", "ten", "not a budget"),
    ],
)
def test_bad_budget_option_is_bad_input(tmp_path, baseline, key, text, match):
    with pytest.raises(UserInputError, match=match):
        run_check(make_run(tmp_path / "r"), baseline, {key: text})


# --- output --------------------------------------------------------------------------------


def _mixed_report(tmp_path, baseline):
    """Two failures (params, parity), two skipped latency pairs, the rest passing."""
    run = make_run(
        tmp_path / "mixed",
        drop=("bench",),
        report=set_field("pruned.params", 30000),
        manifest=set_file("dense", "parity.passed", False),
    )
    return run_check(run, baseline, allow_missing=("bench",))


def test_junit_parses_with_one_testcase_per_metric(tmp_path, baseline):
    report = _mixed_report(tmp_path, baseline)
    root = ET.fromstring(render(report, "junit"))
    cases = root.findall(".//testcase")
    assert len(cases) == len(report.rows) == 11
    failed = {c.get("name") for c in cases if c.find("failure") is not None}
    assert failed == {"params", "parity.passed"}
    assert {c.get("name") for c in cases if c.find("skipped") is not None} == {PAIR_B1, PAIR_B32}
    suite = root.find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("11", "2", "2")
    params = next(c for c in cases if c.get("name") == "params").find("failure")
    assert "+40.8% > +0% allowed" in params.get("message")


def test_table_shows_figures_and_verdict(tmp_path, baseline):
    text = render(_mixed_report(tmp_path, baseline), "table")
    line = next(ln for ln in text.splitlines() if ln.startswith("params "))
    assert "21,307" in line and "30,000" in line and "+8,693 (+40.8%)" in line and "<= +0%" in line
    assert "fail: +40.8% > +0% allowed" in line
    assert "bench/bench.json MISSING" in text
    assert text.rstrip().splitlines()[-1].startswith("FAIL: 2 of 8 metric(s) regressed")


def test_json_output_is_machine_readable(tmp_path, baseline):
    data = json.loads(render(_mixed_report(tmp_path, baseline), "json"))
    assert data["passed"] is False
    assert data["sources"]["bench/bench.json"] == "missing"
    by_name = {r["name"]: r for r in data["results"]}
    assert by_name["params"]["status"] == "fail" and by_name["params"]["current"] == 30000


def test_markdown_table_has_a_row_per_metric(tmp_path, baseline):
    report = _mixed_report(tmp_path, baseline)
    md = render(report, "md")
    table_rows = [ln for ln in md.splitlines() if ln.startswith("| `")]
    assert len(table_rows) == len(report.rows)
    assert "asp check FAILED" in md


def test_step_summary_is_appended(tmp_path, baseline):
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    report = run_check(tmp_path / "base", baseline)
    assert append_step_summary(report, {"GITHUB_STEP_SUMMARY": str(summary)}) == summary
    text = summary.read_text()
    assert text.startswith("earlier step\n")
    assert "### asp check passed" in text
    assert append_step_summary(report, {}) is None


def test_unwritable_step_summary_does_not_change_the_verdict(tmp_path, baseline, caplog):
    report = run_check(tmp_path / "base", baseline)
    # the CLI stops "asp_export" records from propagating to the root logger caplog listens on
    logger = logging.getLogger("asp_export.check.output")
    logger.addHandler(caplog.handler)
    try:
        assert append_step_summary(report, {"GITHUB_STEP_SUMMARY": str(tmp_path)}) is None  # a directory
    finally:
        logger.removeHandler(caplog.handler)
    assert "Could not append" in caplog.text


def test_baseline_is_untouched_when_write_fails(tmp_path, baseline):
    before = baseline.read_text()
    with pytest.raises(RunDirError):
        write_baseline(tmp_path / "missing-run", baseline)
    assert baseline.read_text() == before
    assert not [p.name for p in baseline.parent.iterdir() if p.name.startswith(".")]  # no temp file left


def test_docs_describe_every_metric_and_budget():
    from asp_export.check import BUDGETS, METRICS

    docs = (Path(__file__).parents[1] / "docs" / "ci.md").read_text()
    for metric in METRICS:
        assert f"`{metric.key}" in docs, metric.key
    for budget in BUDGETS.values():
        assert budget.option in docs and budget.format(budget.default) in docs, budget.option


def test_onnx_node_count_is_gated_like_other_metrics(tmp_path):
    from click.testing import CliRunner

    from asp_export.cli import cli

    def with_nodes(n: int) -> Edit:
        return set_file("pruned", "graph", {"nodes": n, "ops": {"Conv": 2, "Gemm": n - 2}})

    baseline = tmp_path / "asp-baseline.json"
    write_baseline(make_run(tmp_path / "base", manifest=with_nodes(13)), baseline)
    assert json.loads(baseline.read_text())["metrics"]["nodes[pruned/onnx/fp32]"] == 13
    worse = make_run(tmp_path / "worse", manifest=with_nodes(19))  # the un-simplified graph's +6
    report = run_check(worse, baseline)
    assert [r.name for r in report.failures] == ["nodes[pruned/onnx/fp32]"]
    assert "+46.2% > +0% allowed" in row(report, "nodes[pruned/onnx/fp32]").message
    assert run_check(worse, baseline, {"nodes": "50%"}).passed
    result = CliRunner().invoke(cli, ["check", str(worse), "--baseline", str(baseline)])
    assert result.exit_code == 1 and "nodes[pruned/onnx/fp32]" in result.output
    ok = ["check", str(worse), "--baseline", str(baseline), "--max-nodes-increase", "50%"]
    assert CliRunner().invoke(cli, ok).exit_code == 0
