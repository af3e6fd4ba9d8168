"""asp guards itself: a small prune -> export -> bench run must pass `asp check`
against the committed baseline, and a worse run must fail it.

The baseline's budgets must hold on another machine (other CPU kernels round differently, so
training can keep a unit more or less and get a test image or two otherwise) and still gate
latency: the run is made once, and copies of it with rewritten JSON stand in for the other
machine and for a slower pruned model.

The baseline lives in tests/data/gate/asp-baseline.json. After an intended change
to what the pipeline produces, regenerate it (and commit it) with:

    python tests/test_gate.py --write-baseline
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BASELINE = Path(__file__).resolve().parent / "data" / "gate" / "asp-baseline.json"
ASP = str(Path(sys.executable).with_name("asp"))

PRUNE = [
    "prune",
    "--model",
    "lenet5",
    "--data",
    "digits",
    "--epochs",
    "8",
    "--finetune-epochs",
    "4",
    "--group-weighting",
    "sqrt",
    "--lambda-group",
    "2e-3",
]
EXPORT = ["export", "--format", "onnx"]
BENCH = [
    "bench",
    "--runtime",
    "onnxruntime",
    "--provider",
    "cpu",
    "--batch",
    "1,32",
    "--min-time",
    "0.5",
    "--iterations",
    "30",
]
# Budgets given when the baseline is rewritten (main below); the file also keeps per-metric exceptions.
# Accuracy: one digits test image is 0.28 pp, so 1.5 pp is five images. Params, FLOPs and the pruned
# model's sizes follow the kept structure, which another CPU's rounding can move by a unit or two
# (a LeNet-5 fc1 unit is 1.3 % of the params): 5 %, still far below an unpruned model (+570 %). The
# dense ONNX file's weights do not depend on training, only its names and metadata do (424 bytes
# between two runs here): 1 % in the file. ONNX node counts do not depend on widths: exact (0 %).
# Latency: speedups are ratios measured within one run; 30 % (20 % at batch 32, in the file) puts the
# limits near 0.85x, i.e. a pruned model clearly slower than the dense one fails, while the
# run-to-run spread measured on a busy 2-core machine (0.91x-1.39x for a ~1x model) passes (docs/ci.md).
BUDGETS = [
    "--max-accuracy-drop",
    "1.5",
    "--max-params-increase",
    "5%",
    "--max-flops-increase",
    "5%",
    "--max-size-increase",
    "5%",
    "--max-latency-regression",
    "30%",
]


def _asp(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([ASP, *args], capture_output=True, text=True, timeout=900)


def _pipeline(run: Path, prune_extra: tuple[str, ...] = ()) -> None:
    for args in ([*PRUNE, *prune_extra, "--out", str(run)], [*EXPORT, str(run)], [*BENCH, str(run)]):
        result = _asp(*args)
        assert result.returncode == 0, f"asp {' '.join(args)}\n{result.stderr[-3000:]}"


@pytest.fixture(scope="module")
def gate_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("gate") / "gate"
    _pipeline(run)
    return run


def _check(run: Path, *extra: str) -> subprocess.CompletedProcess:
    return _asp("check", str(run), "--baseline", str(BASELINE), *extra)


def _rewrite(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _copy(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "gate"
    shutil.copytree(run, copy)
    return copy


def test_the_pipeline_passes_the_committed_gate(gate_run, tmp_path):
    result = _check(gate_run, "--format", "junit", "--output", str(tmp_path / "gate.xml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout


def test_a_run_from_another_machine_passes_the_gate(gate_run, tmp_path):
    """Other kernels, other rounding: one fc1 unit more kept (811 params, 3.2 kB more weights) and two
    test images fewer right. Exact budgets on these figures would fail every such machine."""
    run = _copy(gate_run, tmp_path)
    wrong = 2 / 359  # digits test images

    def drift(report):
        pruned = report["pruned"]
        pruned.update(params=pruned["params"] + 811, flops=pruned["flops"] + 1602)
        pruned.update(size_bytes=pruned["size_bytes"] + 3300, accuracy=pruned["accuracy"] - wrong)
        report["masked"]["accuracy"] -= wrong

    def grow_pruned_files(manifest):
        for entry in manifest["files"]:
            if entry["model"] == "pruned":
                entry["size_bytes"] += 3300

    _rewrite(run / "report.json", drift)
    _rewrite(run / "export" / "manifest.json", grow_pruned_files)
    result = _check(run)
    assert result.returncode == 0, result.stdout + result.stderr


def _set_speedups(run: Path, speedup) -> None:
    def change(bench):  # a run that measured `speedup` with a tight block spread around it
        for pair in bench["pairs"]:
            value = speedup(pair)
            pair["speedup_p50"] = value
            pair["speedup_p10_blocks"], pair["speedup_p90_blocks"] = value * 0.98, value * 1.02

    _rewrite(run / "bench" / "bench.json", change)


def test_a_slower_pruned_model_fails_the_latency_gate(gate_run, tmp_path):
    """The latency budget gates something: a pruned model 25 % slower than the dense one (speedup 0.8x)
    fails at both batches, while 10 % below the baseline's speedups (run-to-run noise) passes."""
    baseline = json.loads(BASELINE.read_text())["metrics"]
    run = _copy(gate_run, tmp_path)

    def noisy(pair):
        (name,) = [k for k in baseline if k.startswith("speedup_p50[") and k.endswith(f"/b{pair['batch']}]")]
        return baseline[name] * 0.9

    _set_speedups(run, noisy)
    result = _check(run)
    assert result.returncode == 0, result.stdout + result.stderr

    _set_speedups(run, lambda pair: 0.8)
    result = _check(run)
    assert result.returncode == 1, result.stdout + result.stderr
    failed = result.stdout.strip().splitlines()[-1]
    assert "2 metric(s) regressed" in failed and "/b1]" in failed and "/b32]" in failed, result.stdout
    assert "params" not in failed and "accuracy" not in failed, result.stdout


def test_a_speedup_below_its_limit_inside_this_runs_noise_passes_and_says_so(gate_run, tmp_path):
    """On a shared core the p50 speedup can dip under the limit while the run's own block spread
    still reaches it: that is noise, reported, not a regression; the same p50 with the whole
    spread below the limit fails."""
    run = _copy(gate_run, tmp_path)

    def wide(bench):
        for pair in bench["pairs"]:
            pair["speedup_p50"], pair["speedup_p10_blocks"], pair["speedup_p90_blocks"] = 0.8, 0.6, 1.2

    _rewrite(run / "bench" / "bench.json", wide)
    result = _check(run)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("noise, not a regression") == 2, result.stdout

    _set_speedups(run, lambda pair: 0.8)
    assert _check(run).returncode == 1


def test_a_run_without_pruning_fails_the_gate_and_says_why(tmp_path):
    run = tmp_path / "unpruned"
    result = _asp(*PRUNE, "--method", "none", "--out", str(run))
    assert result.returncode == 0, result.stderr[-3000:]
    result = _asp("check", str(run), "--baseline", str(BASELINE))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "params" in result.stdout and "flops" in result.stdout


def main() -> None:
    if sys.argv[1:] != ["--write-baseline"]:
        raise SystemExit(__doc__)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "gate"
        _pipeline(run)
        BASELINE.parent.mkdir(parents=True, exist_ok=True)
        result = _asp("check", str(run), "--baseline", str(BASELINE), "--write-baseline", *BUDGETS)
        print(result.stdout, result.stderr)
        raise SystemExit(result.returncode)


if __name__ == "__main__":
    main()
