"""Kill-and-resume: `kill -9` at any point of `asp prune` or `asp export` costs
the unfinished epoch, never a lying file.

Every run here is a real `asp` process (the console script next to
sys.executable) killed with SIGKILL, so no `finally` block or atexit handler
gets a chance to tidy up: what is on disk is exactly what a power cut leaves.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ASP = str(Path(sys.executable).with_name("asp"))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}

# lenet5 at 16x16 with 4 steps per epoch: one process takes about 8 s on two shared cores.
# lambda-group 5 prunes within these few steps (20-50-160 of 20-50-500), so the plan is not "keep all".
FAST = [
    "--model", "lenet5", "--data", "digits", "--input-shape", "16,16,1",
    "--epochs", "3", "--steps-per-epoch", "4", "--batch-size", "32", "--lambda-group", "5",
]  # fmt: skip
REPORT_KEYS = (
    "dense",
    "pruned",
    "masked",
    "structure",
    "structure_live",
    "layers",
    "elementwise_sparsity",
    "plan",
)
TIMEOUT = 240


def _asp(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([ASP, *args], capture_output=True, text=True, env=ENV, timeout=TIMEOUT)


def _kill_when(args: list[str], ready, what: str) -> None:
    """Start `asp ARGS`, SIGKILL it as soon as `ready()` is true; fail if it finished first."""
    process = subprocess.Popen([ASP, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    deadline = time.monotonic() + TIMEOUT
    try:
        while not ready():
            if process.poll() is not None:
                pytest.fail(
                    f"asp {args[0]} ended (exit {process.returncode}) before {what}: {process.stderr.read()}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"{what} did not happen within {TIMEOUT} s")
            time.sleep(0.005)  # polling a file the child writes; not a wait for an outcome
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=30)
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL, f"asp {args[0]} was not killed mid-way ({what})"


def _comparable(report: dict) -> dict:
    """The report minus what legitimately differs between two runs (timings, file sizes)."""
    out = {}
    for key in REPORT_KEYS:
        value = report[key]
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if k != "size_bytes"}
        out[key] = value
    return out


def _temporaries(root: Path) -> list[Path]:
    return sorted(root.rglob("*.tmp*"))


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "run"
    result = _asp("prune", *FAST, "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def uninterrupted(reference_run) -> dict:
    return json.loads((reference_run / "report.json").read_text())


def test_kill_during_training_then_resume_gives_the_same_report(uninterrupted, tmp_path):
    run = tmp_path / "run"
    first = run / "checkpoints" / "epoch-001.keras"
    _kill_when(["prune", *FAST, "--out", str(run)], first.exists, "the first checkpoint")
    assert not (run / "report.json").exists()
    assert not (run / "dense.keras").exists()

    result = _asp("prune", "--resume", str(run))

    assert result.returncode == 0, result.stderr
    assert "Continuing from epoch-" in result.stderr
    resumed = json.loads((run / "report.json").read_text())
    # Measured: identical to the uninterrupted run, accuracies included (CPU, same seed).
    assert _comparable(resumed) == _comparable(uninterrupted)
    assert resumed["pruned"]["params"] < resumed["dense"]["params"], "the test should exercise a real prune"
    assert _temporaries(run) == []


def test_kill_after_training_recomputes_the_post_training_stages(uninterrupted, tmp_path):
    run = tmp_path / "run"
    dense = run / "dense.keras"
    # dense.keras appears once training ended; fine-tuning and surgery follow.
    _kill_when(["prune", *FAST, "--finetune-epochs", "2", "--out", str(run)], dense.exists, "dense.keras")
    assert not (run / "report.json").exists()

    result = _asp("prune", "--resume", str(run))

    assert result.returncode == 0, result.stderr
    resumed = json.loads((run / "report.json").read_text())
    assert resumed["structure"] == uninterrupted["structure"]
    assert resumed["dense"] == uninterrupted["dense"] | {"size_bytes": resumed["dense"]["size_bytes"]}
    assert resumed["finetuned"] is not None
    assert resumed["pruned"]["params"] == uninterrupted["pruned"]["params"]
    assert _temporaries(run) == []


def test_resume_draws_the_same_dropout_masks_as_an_uninterrupted_run(tmp_path):
    """gasl-mnist has dropout. Keras does not restore a Dropout's random state from a
    `.keras` file, so the checkpoint keeps it beside the model; resuming after epoch 1
    must then train epoch 2 exactly as the uninterrupted run did (same weights, bit for bit)."""
    args = ["--model", "gasl-mnist", "--data", "digits", "--input-shape", "16,16,1"]
    args += ["--epochs", "2", "--steps-per-epoch", "3", "--batch-size", "16"]
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    result = _asp("prune", *args, "--out", str(whole))
    assert result.returncode == 0, result.stderr
    assert (whole / "checkpoints" / "epoch-001.random.json").is_file()

    shutil.copytree(whole, resumed)  # then undo epoch 2, as a kill right after epoch 1 would
    for name in ("epoch-002.keras", "epoch-002.random.json"):
        (resumed / "checkpoints" / name).unlink()
    for name in ("report.json", "report.md", "dense.keras", "pruned.keras"):
        (resumed / name).unlink()
    state = json.loads((resumed / "state.json").read_text())
    (resumed / "state.json").write_text(
        json.dumps({**state, "complete": False, "history": state["history"][:1]})
    )

    result = _asp("prune", "--resume", str(resumed))
    assert result.returncode == 0, result.stderr
    assert "Continuing from epoch-001.keras" in result.stderr

    import keras

    expected, got = (
        keras.saving.load_model(run / "dense.keras", safe_mode=True).get_weights() for run in (whole, resumed)
    )
    for a, b in zip(expected, got, strict=True):
        assert (a == b).all()


def test_resuming_a_complete_run_does_not_retrain(reference_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(reference_run, run)
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}

    result = _asp("prune", "--resume", str(run))

    assert result.returncode == 0, result.stderr
    assert "already complete" in result.stderr
    assert "structure" in result.stdout  # the summary of the finished run is printed again
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == before


def test_stale_temporaries_of_a_killed_write_are_removed_on_resume(tmp_path):
    """A SIGKILL inside atomic_path leaves its hidden temporary; resume deletes it."""
    run = tmp_path / "run"
    first = run / "checkpoints" / "epoch-001.keras"
    _kill_when(["prune", *FAST, "--out", str(run)], first.exists, "the first checkpoint")
    stale = run / "checkpoints" / ".epoch-002.abcd1234.tmp.keras"
    stale.write_bytes(b"PK\x03\x04 half a zip")
    assert _asp("prune", "--resume", str(run)).returncode == 0
    assert not stale.exists()
    assert _temporaries(run) == []


def test_only_atomic_write_temporaries_count_as_stale(tmp_path):
    """Clean-up after a kill removes atomic_path's hidden `.STEM.XXXXXXXX.tmp.EXT` names and
    nothing a user could own, at the top level or (for run directories) below it."""
    from asp_export._io import remove_stale_temporaries

    nested = tmp_path / "checkpoints"
    nested.mkdir()
    stale = [tmp_path / ".report.k1ll3d_x.tmp.json", nested / ".epoch-002.abcd1234.tmp.keras"]
    kept = [tmp_path / ".notes.tmp", tmp_path / "report.json", nested / ".epoch-2.tmp.keras"]
    for path in stale + kept:
        path.write_text("x")

    assert remove_stale_temporaries(tmp_path) == [stale[0]]
    assert remove_stale_temporaries(tmp_path, recursive=True) == [stale[1]]
    assert [p for p in stale + kept if p.exists()] == kept


def test_killed_export_leaves_no_manifest_and_no_partial_file(reference_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(reference_run, run)
    export = run / "export"
    args = ["export", str(run), "--format", "onnx", "--format", "tflite", "--precision", "fp32",
            "--parity-samples", "32"]  # fmt: skip

    def first_file_written() -> bool:  # three more files and the manifest are still to come
        return export.is_dir() and any(not name.startswith(".") for name in os.listdir(export))

    _kill_when(args, first_file_written, "the first exported file")

    assert not (export / "manifest.json").exists(), "the manifest is written last"
    finals = [p for p in export.iterdir() if not p.name.startswith(".")]
    for path in finals:  # every file under a final name is complete: it loads and runs
        _assert_complete(path)
    # A re-run finishes the export and removes the hidden temporaries a kill leaves mid-write.
    (export / ".pruned.k1ll3d_x.tmp.onnx").write_bytes(b"\x08\x07 half a protobuf")
    result = _asp(*args, "--force")
    assert result.returncode == 0, result.stderr
    assert _temporaries(export) == []
    manifest = json.loads((export / "manifest.json").read_text())
    from asp_export._io import sha256_of

    assert len(manifest["files"]) == 4  # dense and pruned, ONNX and TFLite
    for entry in manifest["files"]:
        assert sha256_of(run / entry["path"]) == entry["sha256"]


def _assert_complete(path: Path) -> None:
    import numpy as np

    if path.suffix == ".onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        spec = session.get_inputs()[0]
        shape = [d if isinstance(d, int) else 1 for d in spec.shape]
        dtype = np.float16 if "float16" in spec.type else np.float32
        session.run(None, {spec.name: np.zeros(shape, dtype)})
    elif path.suffix == ".tflite":
        import tensorflow as tf

        tf.lite.Interpreter(model_path=str(path)).allocate_tensors()
    elif path.is_dir():  # a SavedModel directory is renamed into place whole
        assert (path / "saved_model.pb").is_file()
    else:
        pytest.fail(f"unexpected file {path.name} in the export dir")
