"""Multi-device training through the real CLI: MirroredStrategy on two logical CPUs,
MultiWorkerMirroredStrategy with two local worker processes, and the memory bound
of `asp prune` on a streamed folder dataset.

Logical devices and collectives must be configured before TensorFlow starts, so
every run here is its own process. (GASL steps on two replicas equal to single-device
steps, with and without BatchNormalization and dropout, are checked in test_train.py.)
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
FAST = [
    "--model", "lenet5", "--data", "digits", "--input-shape", "16,16,1",
    "--epochs", "2", "--steps-per-epoch", "4", "--batch-size", "32",
]  # fmt: skip

# Runs `asp ARGS...` with the CPU split into two logical devices before TF starts.
TWO_CPUS = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from asp_export.cli import main
sys.argv = ["asp", *sys.argv[1:]]
main()
"""


def test_mirrored_strategy_trains_on_two_logical_cpus(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-c", TWO_CPUS, "prune", *FAST, "--strategy", "mirrored", "--out", str(out)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    devices = json.loads((out / "config.json").read_text())["devices"]
    assert devices["strategy"] == "MirroredStrategy"
    assert devices["num_replicas"] == 2
    assert [d.rsplit("/", 1)[-1] for d in devices["replica_devices"]] == ["device:CPU:0", "device:CPU:1"]
    report = json.loads((out / "report.json").read_text())
    assert report["dense"]["accuracy"] > 0.1  # better than chance after 8 steps


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _run_workers(worker_args: list[list[str]], timeout: float = 180) -> list[str]:
    """Run `asp ARGS` once per worker of a localhost cluster; return their stderr."""
    ports = _free_ports(len(worker_args))
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    asp = str(Path(sys.executable).with_name("asp"))
    workers = []
    for index, args in enumerate(worker_args):
        task = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        workers.append(
            subprocess.Popen(
                [asp, *args],
                env={**ENV, "TF_CONFIG": json.dumps(task)},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    deadline = time.monotonic() + timeout
    try:
        errors = [w.communicate(timeout=max(1.0, deadline - time.monotonic()))[1] for w in workers]
    finally:
        for w in workers:
            w.kill()
            w.wait(timeout=30)
    assert [w.returncode for w in workers] == [0] * len(workers), errors
    return errors


def _weights(run: Path, name: str = "dense") -> list[np.ndarray]:
    import keras

    return keras.saving.load_model(run / f"{name}.keras", safe_mode=True).get_weights()


@pytest.mark.slow  # about 60 s (two workers, one single process, two workers resumed)
def test_two_local_workers_train_one_model_in_lockstep_and_resume_together(tmp_path):
    """Two worker processes on localhost (TF_CONFIG) train one model: each global batch
    is split between them and the gradients are all-reduced, so both end with the
    same weights (trained and fine-tuned) and the same per-epoch losses, and say so in
    config.json; and those equal one process training alone on the same global batches.

    Then a kill that landed between the two workers' checkpoint writes (worker 0 saved
    epoch 2, worker 1 only epoch 1): `--resume` on both continues from epoch 1 on both
    and they end in lockstep again, with worker 0 saying why it went back."""
    runs = [tmp_path / f"w{i}" for i in range(2)]
    args = ["prune", *FAST, "--finetune-epochs", "1", "--strategy", "multi-worker"]
    _run_workers([[*args, "--out", str(run)] for run in runs])
    for run in runs:
        devices = json.loads((run / "config.json").read_text())["devices"]
        assert devices["strategy"] == "MultiWorkerMirroredStrategy"
        assert devices["num_replicas"] == 2
    histories = [json.loads((run / "state.json").read_text())["history"] for run in runs]
    assert len(histories[0]) == 2
    assert [h["loss"] for h in histories[0]] == [h["loss"] for h in histories[1]]
    trained = [_weights(run) for run in runs]
    for a, b in zip(*trained, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    for a, b in zip(*(_weights(run, "pruned") for run in runs), strict=True):  # fine-tuned together too
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)

    # the independent oracle: one process, no strategy, the same global batches
    alone = tmp_path / "single"
    single = subprocess.run(
        [str(Path(sys.executable).with_name("asp")), *args[:-2], "--out", str(alone)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=180,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    alone_history = json.loads((alone / "state.json").read_text())["history"]
    for key in ("loss", "val_loss"):
        assert [h[key] for h in alone_history] == pytest.approx([h[key] for h in histories[0]], rel=1e-5), key
    for name in ("dense", "pruned"):
        for a, b in zip(_weights(runs[0], name), _weights(alone, name), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=name)

    for run in runs:  # as if killed during the last checkpoint write, before the report
        (run / "report.json").unlink()
        state = json.loads((run / "state.json").read_text())
        (run / "state.json").write_text(json.dumps({**state, "complete": False}))
    (runs[1] / "checkpoints" / "epoch-002.keras").unlink()

    errors = _run_workers([["prune", "--resume", str(run)] for run in runs])
    assert "Resuming from epoch 1, the last one every worker has (this one has 2)" in errors[0]
    resumed = [_weights(run) for run in runs]
    for a, b, before in zip(*resumed, trained[0], strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
        np.testing.assert_allclose(a, before, rtol=0, atol=1e-5)  # epoch 2 redone = epoch 2


# --- memory -------------------------------------------------------------------

MEMORY_IMAGES = 3 * 1100  # > batch 32 x 100 = 3,200 images


def test_prune_on_a_folder_dataset_streams_instead_of_loading_it(tmp_path):
    """Peak RSS of `asp prune` grows by less than 150 MB from 330 to 3,300 images.

    The images are 16x16 PNGs (decoded: 3 kB each as float32 RGB), so the bound is
    about what loading the folder whole would take at 50,000 images; the growth
    measured from 10x the images is what matters: a streaming pipeline does not scale with it.
    """
    small, large = tmp_path / "small", tmp_path / "large"
    _write_folder(small, MEMORY_IMAGES // 10)
    _write_folder(large, MEMORY_IMAGES)
    peaks = [_peak_rss_mb(folder, tmp_path / f"run-{folder.name}") for folder in (small, large)]
    assert peaks[1] - peaks[0] < 150, f"peak RSS {peaks[0]:.0f} MB -> {peaks[1]:.0f} MB"


def _write_folder(root: Path, n: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        cls = root / f"class{i % 3}"
        cls.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(cls / f"{i:05d}.png")


def _peak_rss_mb(folder: Path, out: Path) -> float:
    """ru_maxrss of one `asp prune` child process, in MB (Linux reports kB)."""
    code = (
        "import resource, subprocess, sys; "
        "r = subprocess.run(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)"
    )
    asp = str(Path(sys.executable).with_name("asp"))
    args = [asp, "prune", "--model", "lenet5", "--data", f"folder:{folder}", "--input-shape", "16,16,3"]
    args += ["--epochs", "1", "--batch-size", "32", "--out", str(out)]
    result = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=ENV, timeout=240
    )
    assert result.returncode == 0, result.stderr
    return int(result.stdout.strip().splitlines()[-1]) / 1024
