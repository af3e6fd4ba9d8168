"""`asp sweep`: one run per (method, target) + a dense reference, resumable, one comparison."""

from __future__ import annotations

import csv
import json

import pytest
from click.testing import CliRunner

from asp_export.cli import cli
from asp_export.errors import UserInputError
from asp_export.sweep import SweepOptions, run_name

SWEEP = [
    "sweep",
    "--model",
    "lenet5",
    "--input-shape",
    "16,16,1",
    "--data",
    "digits",
    "--methods",
    "ssl,l1-filter",
    "--targets",
    "0.5,0.8",
    "--epochs",
    "1",
    "--steps-per-epoch",
    "3",
    "--round-to",
    "1",
]
CELLS = ["dense", "ssl-sparsity0.5", "ssl-sparsity0.8", "l1-filter-sparsity0.5", "l1-filter-sparsity0.8"]


def test_run_names_are_stable():
    assert run_name("gasl", "flops", 0.8) == "gasl-flops0.8"
    assert run_name("none", "sparsity", None) == "dense"
    assert run_name("ssl", "elementwise", 0.9, "layer") == "ssl-elementwise0.9-layer"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"methods": ("lasso",)}, "Unknown sweep method"),
        ({"targets": (1.5,)}, "fractions to remove"),
        ({"prune": {"method": "gasl"}}, "Sweep sets method"),
        ({"kind": "latency"}, "Unknown target kind"),
        ({"scopes": ("everywhere",)}, "Unknown target scope"),
        ({"scopes": ("layer",), "prune": {"target_scope": "global"}}, "not both"),
    ],
)
def test_bad_sweep_options_are_refused(kwargs, message):
    base = {"model": "lenet5", "data": "digits", "methods": ("gasl",), "targets": (0.5,), "out": "x"}
    with pytest.raises(UserInputError, match=message):
        SweepOptions(**{**base, **kwargs})


def test_sweep_runs_the_grid_compares_and_resumes_without_retraining(tmp_path):
    out = tmp_path / "sweep"
    result = CliRunner().invoke(cli, [*SWEEP, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "| l1-filter | 0.8 |" in result.output
    for cell in CELLS:
        assert (out / cell / "report.json").exists(), cell

    comparison = json.loads((out / "comparison.json").read_text())
    rows = {row["run"]: row for row in comparison["rows"]}
    assert set(rows) == set(CELLS[1:])
    for name, row in rows.items():
        assert row["status"] == "ok" and row["reached"], name
        assert row["params_reduction"] >= row["target"] - 1e-6
        assert row["accuracy_drop_pt"] == pytest.approx(
            100 * (comparison["reference"]["accuracy"] - row["accuracy"]), abs=1e-3
        )
    with open(out / "comparison.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 4
    assert (out / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # each method trains once: the second target starts from the first one's final checkpoint
    shared = json.loads((out / "ssl-sparsity0.8" / "config.json").read_text())
    assert shared["training_shared_with"] == "ssl-sparsity0.5"
    assert shared["options"]["target_sparsity"] == 0.8
    # l1-filter trains plainly, exactly like the reference: it starts from the reference's training
    for cell in ("l1-filter-sparsity0.5", "l1-filter-sparsity0.8"):
        config = json.loads((out / cell / "config.json").read_text())
        assert config["training_shared_with"] == "dense", cell
        assert config["options"]["sparsity"]["method"] == "l1-filter"
    assert "| ssl | 0.5 |" in (out / "comparison.md").read_text()

    # Re-run: complete runs are skipped; a run without its report is finished from its checkpoints.
    mtimes = {cell: (out / cell / "report.json").stat().st_mtime_ns for cell in CELLS}
    history = json.loads((out / "ssl-sparsity0.8" / "state.json").read_text())["history"]
    (out / "ssl-sparsity0.8" / "report.json").unlink()
    again = CliRunner().invoke(cli, [*SWEEP, "--out", str(out)])
    assert again.exit_code == 0, again.output
    for cell in CELLS:
        if cell != "ssl-sparsity0.8":
            assert (out / cell / "report.json").stat().st_mtime_ns == mtimes[cell], cell
    assert (out / "ssl-sparsity0.8" / "report.json").exists()
    assert (
        json.loads((out / "ssl-sparsity0.8" / "state.json").read_text())["history"] == history
    )  # not retrained

    # Adding scopes to the same directory: new cells, each cut from ssl's one training.
    scoped = [*SWEEP[:8], "ssl", "--targets", "0.8", *SWEEP[11:], "--scopes", "layer,uniform"]
    third = CliRunner().invoke(cli, [*scoped, "--out", str(out)])
    assert third.exit_code == 0, third.output
    rows = json.loads((out / "comparison.json").read_text())["rows"]
    assert [(row["run"], row["scope"]) for row in rows] == [
        ("ssl-sparsity0.8-layer", "layer"),
        ("ssl-sparsity0.8-uniform", "uniform"),
    ]
    for row in rows:
        config = json.loads((out / row["run"] / "config.json").read_text())
        assert config["training_shared_with"] in ("ssl-sparsity0.5", "ssl-sparsity0.8")
        assert config["options"]["target_scope"] == row["scope"]
        assert row["status"] == "ok" and row["reached"]
    assert "| ssl (layer) | 0.8 |" in third.output


def test_a_sweep_directory_refuses_a_different_model(tmp_path):
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "sweep.json").write_text(
        json.dumps({"model": "gasl-mnist", "data": "digits", "kind": "sparsity", "prune": {}})
    )
    result = CliRunner().invoke(cli, [*SWEEP, "--out", str(out)])
    assert result.exit_code == 2 and "different model" in result.output


def test_a_failing_cell_is_recorded_and_the_sweep_goes_on(tmp_path):
    out = tmp_path / "sweep"
    args = [
        "sweep",
        "--model",
        "lenet5",
        "--input-shape",
        "16,16,1",
        "--methods",
        "magnitude",
        "--targets",
        "0.5",
    ]
    args += ["--target-kind", "flops", "--epochs", "1", "--steps-per-epoch", "2", "--out", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    (row,) = json.loads((out / "comparison.json").read_text())["rows"]
    assert row["status"] == "failed" and "removes no FLOPs" in row["error"]
    assert not (out / "magnitude-flops0.5").exists()


def _row(method: str, structural: bool) -> dict:
    return {
        "run": f"{method}-sparsity0.5",
        "method": method,
        "scope": None,
        "target": 0.5,
        "kind": "sparsity",
        "status": "ok",
        "achieved": 0.5,
        "reached": True,
        "accuracy": 0.9,
        "accuracy_drop_pt": 1.0,
        "params": 1000 if structural else 2000,
        "flops": 10_000 if structural else 20_000,
        "params_reduction": 0.5 if structural else 0.0,
        "flops_reduction": 0.5 if structural else 0.0,
        "structure": "4-8" if structural else "8-16",
        "speedup_ort_cpu_b32": None,
        "structural_change": structural,
    }


def test_magnitude_rows_say_they_removed_nothing_on_the_table_and_the_plot(tmp_path, monkeypatch):
    """Issue 17 item 13: 'reached 0.500' beside unchanged params, and a line at 0 % removed, unexplained."""
    import matplotlib.figure

    from asp_export.sweep import plot, render_markdown

    comparison = {
        "model": "lenet5",
        "data": "digits",
        "kind": "sparsity",
        "reference": {"accuracy": 0.91, "params": 2000, "flops": 20_000},
        "rows": [_row("ssl", True), _row("magnitude", False)],
    }
    table = render_markdown(comparison)
    assert "| ssl | 0.5 |" in table and "| magnitude † | 0.5 |" in table
    assert "† element-wise: its 'reached' is the share of weights set to exactly zero; nothing" in table

    legends: list[str] = []
    real_savefig = matplotlib.figure.Figure.savefig

    def spy(figure, *args, **kwargs):
        legends.extend(t.get_text() for axis in figure.axes for t in axis.get_legend().get_texts())
        return real_savefig(figure, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    plot(comparison, tmp_path / "comparison.png")
    assert set(legends) == {"ssl", "magnitude (zeros only: nothing removed)"}


def test_the_default_sweep_keeps_every_cell_above_chance(tmp_path):
    # issue 12.4: `asp sweep --epochs 1 --targets 0.5` at defaults (gasl-mnist on digits, params
    # target, round_to 8, each method's default scope) once cut gasl/ssl to chance (conv1 to 8
    # filters, fc2 256 -> 8) by ranking raw group norms across layers of different group sizes.
    import numpy as np

    from asp_export.data import load_dataset

    out = tmp_path / "sweep"
    args = ["sweep", "--methods", "gasl,ssl", "--targets", "0.5", "--epochs", "1", "--input-shape", "8,8,1"]
    args += ["--out", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    comparison = json.loads((out / "comparison.json").read_text())
    labels = load_dataset("digits", input_shape=(8, 8, 1), val_fraction=0.1, seed=0).labels("test")
    chance = np.bincount(labels).max() / len(labels)  # always answering the most frequent class
    assert comparison["reference"]["accuracy"] > chance + 0.5  # the reference learnt
    for row in comparison["rows"]:
        assert row["status"] == "ok", row
        assert row["accuracy"] > chance + 0.3, row  # chance is ~0.10; raw global norms gave ~0.10


def test_a_sweep_with_an_unreachable_target_is_refused_before_training(tmp_path):
    out = tmp_path / "sweep"
    args = [*SWEEP[:8], "gasl", "--targets", "0.5,0.999", "--target-kind", "flops", "--out", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert "--target-flops 0.999 cannot be reached on lenet5" in result.output
    assert "Epoch" not in result.output and not out.exists()


def test_a_cell_whose_pruned_model_is_at_chance_is_failed_not_a_row_of_results(tmp_path, monkeypatch):
    import numpy as np

    from asp_export.prune import select

    choose = select.choose_plan

    def destroying(dense, options):  # a cut that leaves no information through conv1 (not the reference's)
        source, plan, target = choose(dense, options)
        if target is not None:
            layer = source.get_layer("conv1")
            layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
        return source, plan, target

    monkeypatch.setattr(select, "choose_plan", destroying)
    out = tmp_path / "sweep"
    args = [*SWEEP[:8], "ssl", "--targets", "0.3", "--target-kind", "flops", "--epochs", "2"]
    args += ["--out", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    (row,) = json.loads((out / "comparison.json").read_text())["rows"]
    assert row["status"] == "failed" and "pruned model is at chance" in row["error"]
    assert "accuracy" not in row and not (out / "ssl-flops0.3" / "report.json").exists()
