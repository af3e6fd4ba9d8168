"""One process at a time owns a run directory (docs/reliability.md, "Ownership").

The owner is always a separate, real process: a helper that holds `run_lock` from the
library, or a real `asp prune`. The second comer is a real `asp` (console script) or the
CLI in this process; either way two processes compete for one directory.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from asp_export.cli import cli
from asp_export.errors import RunDirError
from asp_export.rundir import lock_path, replacing, run_lock

ASP = str(Path(sys.executable).with_name("asp"))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
FAST = [
    "--model", "lenet5", "--data", "digits", "--input-shape", "16,16,1",
    "--steps-per-epoch", "2", "--batch-size", "16",
]  # fmt: skip
TIMEOUT = 240

HOLDER = """
import sys, time
from asp_export.rundir import run_lock
with run_lock(sys.argv[1], "test holder"):
    print("locked", flush=True)
    time.sleep(600)
"""


@pytest.fixture
def holder():
    """Start a helper process that owns a directory until killed; yields (start, processes)."""
    processes: list[subprocess.Popen] = []

    def start(root: Path) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(root)], stdout=subprocess.PIPE, text=True, env=ENV
        )
        processes.append(process)
        assert process.stdout.readline().strip() == "locked"
        return process

    yield start
    for process in processes:
        process.kill()
        process.wait(timeout=30)
        process.stdout.close()


def _fake_run(root: Path) -> dict[str, bytes]:
    """A run directory as far as the refusal checks look (config.json, model files)."""
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"schema_version": 1, "options": {}}))
    (root / "report.json").write_text(json.dumps({"schema_version": 1, "seed": 0}))
    (root / "pruned.keras").write_bytes(b"PK not really")
    return _files(root)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _one_error(output: str) -> str:
    errors = [line for line in output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "Traceback" not in output, output
    return errors[0]


@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
def test_prune_into_a_directory_another_process_owns_is_refused(holder, tmp_path, force):
    run = tmp_path / "c"
    before = _fake_run(run)
    owner = holder(run)
    result = CliRunner().invoke(cli, ["prune", *FAST, "--out", str(run), *(["--force"] if force else [])])
    assert result.exit_code == 2, result.output
    line = _one_error(result.output)
    assert f"{run} is in use by test holder (pid {owner.pid} on host {socket.gethostname()}" in line
    assert str(lock_path(run)) in line
    assert _files(run) == before, "the owner's directory was touched"


@pytest.mark.parametrize(
    "argv",
    [["export", "{run}", "--format", "onnx"], ["bench", "{run}", "--runtime", "onnxruntime"]],
    ids=["export", "bench"],
)
def test_export_and_bench_wait_their_turn(holder, tmp_path, argv):
    run = tmp_path / "c"
    before = _fake_run(run)
    owner = holder(run)
    result = CliRunner().invoke(cli, [a.format(run=run) for a in argv])
    assert result.exit_code == 2, result.output
    assert f"in use by test holder (pid {owner.pid}" in _one_error(result.output)
    assert _files(run) == before


def test_a_sweep_cell_owned_by_another_process_stops_the_sweep_untouched(holder, tmp_path):
    out = tmp_path / "sweep"
    owner = holder(out / "dense")  # the reference cell, e.g. an `asp prune --out sweep/dense` running
    argv = ["sweep", "--model", "lenet5", "--methods", "gasl", "--targets", "0.5", "--out", str(out),
            "--epochs", "1"]  # fmt: skip
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 2, result.output
    assert f"{out / 'dense'} is in use by test holder (pid {owner.pid}" in _one_error(result.output)
    assert not (out / "dense").exists()


def test_a_second_sweep_into_the_same_out_is_refused(holder, tmp_path):
    out = tmp_path / "sweep"
    owner = holder(out)
    argv = ["sweep", "--model", "lenet5", "--methods", "gasl", "--targets", "0.5", "--out", str(out)]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 2, result.output
    assert f"in use by test holder (pid {owner.pid}" in _one_error(result.output)


def test_two_real_prunes_into_one_out(tmp_path):
    """The issue's reproduction: a second `asp prune --force` while the first runs is refused,
    and the directory stays the first run's; a kill leaves a stale lock naming its owner."""
    run = tmp_path / "c"
    first = subprocess.Popen(
        [ASP, "prune", *FAST, "--epochs", "100000", "--seed", "0", "--out", str(run)],  # runs until killed
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=ENV,
    )
    try:
        _wait_for(lambda: lock_path(run).exists(), first, "the first run to take the lock")
        second = subprocess.run(
            [
                ASP,
                "prune",
                *FAST,
                "--epochs",
                "1",
                "--seed",
                "5",
                "--target-flops",
                "0.5",
                "--out",
                str(run),
                "--force",
            ],  # fmt: skip
            capture_output=True,
            text=True,
            env=ENV,
            timeout=TIMEOUT,
        )
        assert second.returncode == 2, second.stderr
        assert f"in use by asp prune (pid {first.pid}" in second.stderr.strip().splitlines()[-1]
        _wait_for((run / "state.json").exists, first, "the first run to train")  # after its config.json
        assert json.loads((run / "config.json").read_text())["seed"] == 0
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        first.stderr.close()
    assert json.loads(lock_path(run).read_text())["pid"] == first.pid  # stale: its owner is dead


def _wait_for(condition, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():  # polling a file the other process writes
        assert process.poll() is None, f"it ended before {what}: {process.stderr.read()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_stale_lock_of_a_killed_owner_is_taken_over_and_named(holder, tmp_path, caplog):
    run = tmp_path / "c"
    owner = holder(run)
    owner.kill()
    owner.wait(timeout=30)
    assert lock_path(run).exists()  # SIGKILL: no clean-up ran
    with caplog.at_level(logging.WARNING, logger="asp_export"), run_lock(run, "asp prune"):
        assert json.loads(lock_path(run).read_text())["pid"] == os.getpid()
    assert f"left by test holder (pid {owner.pid} on host {socket.gethostname()}" in caplog.text
    assert "no longer running" in caplog.text
    assert not lock_path(run).exists()  # a clean exit removes the lock file


def test_a_lock_left_on_another_host_is_not_taken_over(tmp_path):
    run = tmp_path / "c"
    owner = {"command": "asp prune", "pid": 4242, "host": "gpu-box-7", "started": "2026-01-01T00:00:00Z"}
    lock_path(run).write_text(json.dumps(owner))
    with (
        pytest.raises(RunDirError, match="pid 4242 on host gpu-box-7.*another host.*delete"),
        run_lock(run, "x"),
    ):
        pass
    assert json.loads(lock_path(run).read_text()) == owner


def test_the_lock_is_reentrant_within_a_process(tmp_path):
    run = tmp_path / "c"
    with run_lock(run, "asp sweep"):
        with run_lock(run, "asp prune"):
            assert lock_path(run).exists()
        assert lock_path(run).exists()
    assert not lock_path(run).exists()


def test_force_replacement_keeps_the_old_run_when_the_new_one_fails(tmp_path):
    run = tmp_path / "c"
    before = _fake_run(run)
    with pytest.raises(RuntimeError), replacing(run, force=True) as new:
        assert new.root != run and new.root.parent == run.parent
        (new.root / "config.json").write_text("{}")
        raise RuntimeError("training diverged")
    assert _files(run) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_force_replacement_swaps_in_the_complete_run(tmp_path):
    run = tmp_path / "c"
    _fake_run(run)
    with replacing(run, force=True) as new:
        (new.root / "config.json").write_text('{"schema_version": 1, "new": true}')
    assert json.loads((run / "config.json").read_text())["new"] is True
    assert not (run / "report.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_a_kill_during_the_swap_is_undone_by_the_next_owner(tmp_path):
    run = tmp_path / "c"
    before = _fake_run(run)
    aside, partial = tmp_path / ".c.k1ll3d_x.old", tmp_path / ".c.abcd1234.tmp"
    run.rename(aside)  # killed between the two renames: the old run aside, the new one unfinished
    partial.mkdir()
    (partial / "config.json").write_text("{}")
    with pytest.raises(RunDirError, match="already exists"), replacing(run):
        pass
    assert _files(run) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]
