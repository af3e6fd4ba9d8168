"""`asp prune` end to end on the embedded digits data: the run directory it writes,
its report, determinism, resume, and the error contract."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from asp_export.cli import cli

# lenet5 at 16x16 keeps a run to a few seconds on two CPU cores.
FAST = [
    "--model",
    "lenet5",
    "--data",
    "digits",
    "--input-shape",
    "16,16,1",
    "--epochs",
    "2",
    "--steps-per-epoch",
    "4",
    "--batch-size",
    "32",
]


def _prune(args):
    return CliRunner().invoke(cli, ["prune", *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "demo"
    result = _prune([*FAST, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_run_directory_has_every_artifact(finished_run):
    out, _ = finished_run
    for name in ("config.json", "dense.keras", "pruned.keras", "report.json", "report.md", "state.json"):
        assert (out / name).is_file(), name
    assert any((out / "checkpoints").glob("epoch-*.keras"))
    assert any((out / "logs").rglob("events.out.tfevents.*"))
    assert not list(out.rglob("*.tmp*")), "a temporary file was left behind"


def test_report_has_the_contract_fields(finished_run):
    out, output = finished_run
    report = json.loads((out / "report.json").read_text())
    for key in (
        "schema_version",
        "model",
        "dataset",
        "method",
        "config",
        "seed",
        "versions",
        "layers",
        "elementwise_sparsity",
        "structure",
        "plan",
        "masked",
    ):
        assert key in report, key
    for kind in ("dense", "pruned"):
        for field in ("accuracy", "params", "flops", "size_bytes"):
            assert report[kind][field] is not None, (kind, field)
    assert report["pruned"]["params"] <= report["dense"]["params"]
    assert report["structure"] == "-".join(str(layer["groups_after"]) for layer in report["layers"])
    assert [layer["name"] for layer in report["layers"]] == ["conv1", "conv2", "fc1"]
    assert "structure" in output and "run directory" in output


def test_surgery_changes_nothing_but_the_size(finished_run):
    out, _ = finished_run
    report = json.loads((out / "report.json").read_text())
    assert report["surgery"]["max_abs_diff_vs_masked"] < 1e-4
    assert report["surgery"]["accuracy_before_finetune"] == pytest.approx(
        report["masked"]["accuracy"], abs=1e-9
    )


def test_config_records_what_is_needed_to_rerun(finished_run):
    out, _ = finished_run
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["name"] == "digits"
    assert config["input_shape"] == [16, 16, 1]
    assert config["devices"]["device"] in ("CPU", "GPU")
    assert config["options"]["train"]["epochs"] == 2
    assert "tensorflow" in config["versions"]


def test_saved_models_load_in_safe_mode_without_custom_objects(finished_run):
    import keras

    out, _ = finished_run
    for name in ("dense.keras", "pruned.keras"):
        model = keras.saving.load_model(out / name, safe_mode=True, compile=False)
        assert model.output_shape[-1] == 10


def test_saved_models_hold_no_optimizer_state(finished_run):
    out, _ = finished_run
    report = json.loads((out / "report.json").read_text())
    for kind in ("dense", "pruned"):
        weights_bytes = 4 * report[kind]["params"]
        assert report[kind]["size_bytes"] < 1.2 * weights_bytes + 64_000, kind


def test_same_seed_gives_the_same_report(finished_run, tmp_path):
    out, _ = finished_run
    again = tmp_path / "again"
    assert _prune([*FAST, "--out", str(again)]).exit_code == 0
    first, second = (json.loads((d / "report.json").read_text()) for d in (out, again))
    for key in ("dense", "pruned", "masked", "structure", "layers", "elementwise_sparsity", "plan"):
        a, b = first[key], second[key]
        if isinstance(a, dict):
            a = {k: v for k, v in a.items() if k != "size_bytes"}
            b = {k: v for k, v in b.items() if k != "size_bytes"}
        assert a == b, key


def test_resume_after_a_kill_ends_with_the_same_report(finished_run, tmp_path):
    out, _ = finished_run
    killed = _killed_copy(out, tmp_path / "killed")
    result = _prune(["--resume", str(killed)])
    assert result.exit_code == 0, result.output
    first, resumed = (json.loads((d / "report.json").read_text()) for d in (out, killed))
    assert resumed["structure"] == first["structure"]
    assert resumed["dense"]["accuracy"] == pytest.approx(first["dense"]["accuracy"], abs=0.02)


def test_existing_run_dir_is_refused_without_force(finished_run):
    out, _ = finished_run
    before = (out / "report.json").read_bytes()
    result = CliRunner().invoke(cli, ["prune", *FAST, "--out", str(out)])
    assert result.exit_code == 2
    assert "--force" in result.output
    assert (out / "report.json").read_bytes() == before


def test_force_never_deletes_a_folder_that_is_not_a_run_dir(tmp_path):
    precious = tmp_path / "photos"
    precious.mkdir()
    (precious / "holiday.jpg").write_bytes(b"not a run")
    result = CliRunner().invoke(cli, ["prune", *FAST, "--out", str(precious), "--force"])
    assert result.exit_code == 2
    assert "not an asp run directory" in result.output
    assert (precious / "holiday.jpg").read_bytes() == b"not a run"


def _files(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _error_line(output: str) -> str:
    errors = [line for line in output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "Traceback" not in output, output
    return errors[0]


def test_force_with_a_model_that_cannot_be_built_is_bad_input_and_keeps_the_run(finished_run, tmp_path):
    out, _ = finished_run
    run = tmp_path / "edge"
    shutil.copytree(out, run)
    before = _files(run)
    argv = ["prune", "--model", "lenet5", "--data", "digits", "--input-shape", "8,8,1", "--out", str(run)]
    result = CliRunner().invoke(cli, [*argv, "--force"])
    assert result.exit_code == 2, result.output
    assert "lenet5 cannot be built for input shape 8,8,1" in _error_line(result.output)
    assert "--input-shape" in _error_line(result.output)
    assert _files(run) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edge"]


def test_force_keeps_the_old_run_until_the_new_one_is_complete(finished_run, tmp_path):
    out, _ = finished_run
    run = tmp_path / "old"
    shutil.copytree(out, run)
    before = _files(run)
    result = CliRunner().invoke(cli, ["prune", *FAST, "--lr", "1e30", "--out", str(run), "--force"])
    assert result.exit_code == 1, result.output  # the new run diverged while training
    assert "loss became" in _error_line(result.output)
    assert _files(run) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]  # its partial replacement is gone

    result = _prune([*FAST, "--seed", "3", "--out", str(run), "--force"])
    assert result.exit_code == 0, result.output
    assert json.loads((run / "config.json").read_text())["seed"] == 3
    assert json.loads((run / "report.json").read_text())["seed"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]


def _killed_copy(out, root):
    """What a kill during epoch 2 of 2 leaves: epoch 1's checkpoint, no report, no final models."""
    shutil.copytree(out, root)
    for name in ("report.json", "report.md", "dense.keras", "pruned.keras", "checkpoints/epoch-002.keras"):
        (root / name).unlink()
    state = json.loads((root / "state.json").read_text())
    state.pop("complete", None)
    (root / "state.json").write_text(json.dumps(state))
    return root


@pytest.mark.parametrize("killed", [True, False], ids=["killed", "complete"])
def test_resume_refuses_options_that_differ_from_the_run(finished_run, tmp_path, killed):
    out, _ = finished_run
    run = _killed_copy(out, tmp_path / "run") if killed else shutil.copytree(out, tmp_path / "run")
    before = _files(run)
    result = CliRunner().invoke(
        cli, ["prune", "--resume", str(run), "--epochs", "4", "--target-flops", "0.3", "--seed", "0"]
    )
    assert result.exit_code == 2, result.output
    line = _error_line(result.output)
    assert "--epochs=4 (run: 2)" in line and "--target-flops=0.3 (run: not set)" in line
    assert "--seed" not in line  # given, but the same as the run's
    assert _files(run) == before, "nothing is trained or rewritten"


def test_resume_accepts_options_equal_to_the_run(finished_run, tmp_path):
    out, _ = finished_run
    run = shutil.copytree(out, tmp_path / "run")
    result = _prune(["--resume", str(run), *FAST, "--out", str(run)])
    assert result.exit_code == 0, result.output
    assert "already complete" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "lenet"], "Did you mean"),
        (["--data", "mnsit"], "Did you mean"),
        (["--input-shape", "16,16"], "H,W,C"),
        (["--epochs", "-1"], "epochs"),
        (["--model", "missing.keras"], "missing.keras"),
    ],
)
def test_bad_input_gets_one_line_and_exit_2(tmp_path, args, message):
    result = CliRunner().invoke(cli, ["prune", *FAST, *args, "--out", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_diverging_training_stops_with_a_message(tmp_path):
    result = CliRunner().invoke(cli, ["prune", *FAST, "--lr", "1e30", "--out", str(tmp_path / "nan")])
    assert result.exit_code == 1, result.output
    assert "loss became" in result.output
    assert "Traceback" not in result.output


def test_the_installed_console_script_runs(tmp_path):
    asp = Path(sys.executable).with_name("asp")
    result = subprocess.run(
        [str(asp), "prune", *FAST, "--epochs", "1", "--out", str(tmp_path / "sub")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "sub" / "pruned.keras").is_file()


def test_an_exploding_loss_stops_the_run_with_exit_1(tmp_path):
    """Issue 17 item 9: --lr 10 reached loss 9.7e11 and 10 % accuracy, and exited 0."""
    result = CliRunner().invoke(cli, ["prune", *FAST, "--lr", "10", "--out", str(tmp_path / "r")])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "loss exploded to" in errors[0], result.output
    assert "--lr 10 is far above" in result.output
    assert not (tmp_path / "r" / "report.json").exists()


def test_degenerate_batch_and_validation_split_are_said_out_loud(tmp_path):
    """Issue 17 item 9: --batch-size larger than the data and --val-fraction 0.99 ran without a word."""
    args = [*FAST, "--epochs", "1", "--batch-size", "5000", "--val-fraction", "0.99"]
    result = CliRunner().invoke(cli, ["prune", *args, "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "--batch-size 5000 is larger than the" in result.output
    assert "--val-fraction 0.99 holds out more than it trains on" in result.output
