"""One registry per concept (issue 13 item 3): every other place reads it, so the facts cannot drift.

Code under test: asp_export/prune/targets.py (TARGET_KINDS), asp_export/rundir.py (MODEL_KINDS) and
their readers: asp_export/sweep.py, commands/sweep.py, commands/prune.py, asp_export/bench/config.py;
asp_export/surgery/flops.py (`cost`, the one reader of `count`'s totals); the CLI defaults in
commands/prune.py, bench.py, export.py and shrink.py (read from the dataclasses).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import click
import pytest


def _option(command: click.Command, name: str) -> click.Option:
    return next(p for p in command.params if p.name == name)


def test_bench_roles_are_the_run_dirs_model_kinds():
    from asp_export import rundir
    from asp_export.bench import config

    assert config.ROLES is rundir.MODEL_KINDS


def test_target_kinds_one_registry_read_by_sweep_prune_and_the_cli():
    from asp_export.commands.prune import command as prune_command
    from asp_export.commands.sweep import command as sweep_command

    from asp_export import sweep
    from asp_export.prune.options import PruneOptions
    from asp_export.prune.targets import KINDS, TARGET_KINDS

    assert KINDS == tuple(TARGET_KINDS)
    assert tuple(_option(sweep_command, "kind").type.choices) == KINDS
    assert sweep.TARGET_OPTION == {name: kind.field for name, kind in TARGET_KINDS.items()}
    fields = {f.name for f in dataclasses.fields(PruneOptions)}
    prune_flags = {flag for p in prune_command.params for flag in getattr(p, "opts", ())}
    for name, kind in TARGET_KINDS.items():
        assert kind.name == name
        assert kind.field in fields, kind.field
        assert kind.option in prune_flags, kind.option
        assert _option(prune_command, kind.field).opts == [kind.option]


def test_sweep_scopes_help_lists_the_registry():
    from asp_export.commands.sweep import command as sweep_command

    from asp_export.prune.targets import SCOPES

    assert f"({','.join(SCOPES)})" in _option(sweep_command, "scopes").help


def test_one_flops_cost_helper_every_stage_reads():
    """`surgery.flops.cost` is the only reader of `count`'s totals inside the package (no wrappers)."""
    import keras

    from asp_export.prune.report import model_figures
    from asp_export.surgery.flops import cost, count

    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, name="c")(inputs)
    outputs = keras.layers.Dense(3, name="d")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    report = count(model)
    assert report.flops > 0
    assert cost(model) == {"params": report.params, "flops": report.flops, "macs": report.macs}
    assert list(cost(model, ("flops", "params"))) == ["flops", "params"]
    figures = model_figures(model, accuracy=0.5)
    assert list(figures) == ["accuracy", "params", "flops", "macs"]
    assert figures["flops"] == report.flops

    package = Path(__file__).resolve().parents[1] / "asp_export"
    callers = sorted(
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if "flops import count" in path.read_text()
        or "flops import FlopsReport, LayerFlops, count" in path.read_text()
    )
    assert callers == ["flops.py"], callers  # only the public facade; the stages call cost()


_PATCH_DEFAULTS = """
import json
from asp_export.bench.config import BenchConfig
from asp_export.bench.stats import TimingPolicy
from asp_export.export.runner import ExportOptions
from asp_export.prune.options import PruneOptions, SurgeryConfig
from asp_export.prune.sparsity import SparsityConfig
from asp_export.prune.train import TrainConfig

def patch(cls, name, value):  # a new default, as an edit of the dataclass would make it
    cls.__dataclass_fields__[name].default = value
    setattr(cls, name, value)

patch(SparsityConfig, "lambda_group", 0.0025)
patch(SparsityConfig, "solver", "subgradient")
patch(SurgeryConfig, "round_to", 4)
patch(TrainConfig, "epochs", 7)
patch(PruneOptions, "val_fraction", 0.2)
patch(TimingPolicy, "warmup", 3)
patch(BenchConfig, "batches", (2, 4))
patch(ExportOptions, "opset", 13)

from asp_export.commands import bench, export, prune, shrink
def opt(command, name):
    return next(p for p in command.command.params if p.name == name)
print(json.dumps({
    "lambda_group": opt(prune, "lambda_group").help,
    "solver": opt(prune, "solver").help,
    "round_to": opt(prune, "round_to").help,
    "epochs": opt(prune, "epochs").help,
    "val_fraction": opt(prune, "val_fraction").help,
    "shrink_round_to": opt(shrink, "round_to").default,
    "warmup": opt(bench, "warmup").default,
    "batch": opt(bench, "batch").default,
    "opset": opt(export, "opset").default,
}))
"""


def test_cli_defaults_are_read_from_the_dataclasses():
    """Change a dataclass default and the CLI's help/default follows (nothing is copied by hand)."""
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _PATCH_DEFAULTS], capture_output=True, text=True, check=True)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["lambda_group"].endswith("[default: 2.5e-3]")
    assert seen["solver"].endswith("[default: subgradient]")
    assert seen["round_to"].endswith("[default: 4]")
    assert seen["epochs"].endswith("[default: 7]")
    assert seen["val_fraction"].endswith("[default: 0.2]")
    assert (seen["shrink_round_to"], seen["warmup"], seen["batch"], seen["opset"]) == (4, 3, "2,4", 13)


def test_prune_help_defaults_equal_the_dataclass_defaults():
    from asp_export.commands.prune import command

    from asp_export.prune.options import PruneOptions, SurgeryConfig
    from asp_export.prune.sparsity import SparsityConfig
    from asp_export.prune.train import TrainConfig

    defaults = {}
    for config in (TrainConfig, SparsityConfig, SurgeryConfig, PruneOptions):
        defaults.update(
            {
                f.name: f.default
                for f in dataclasses.fields(config)
                if f.default not in (dataclasses.MISSING, None)
            }
        )
    checked = 0
    for param in command.params:
        match = re.search(r"\[default: ([^\]]+)\]$", param.help or "")
        if match and param.name in defaults:
            text, value = match.group(1), defaults[param.name]
            assert (float(text) == value) if isinstance(value, float) else (text == str(value)), param.name
            checked += 1
    assert checked >= 12
    assert next(p for p in command.params if p.name == "data").default == PruneOptions.data


def test_artifact_suffixes_one_table_for_export_bench_and_the_run_dir(tmp_path):
    from asp_export.bench.runtimes import RUNTIMES, detect_format, runtime_for_format
    from asp_export.export.formats import FORMATS
    from asp_export.rundir import ARTIFACT_SUFFIXES, RunDir

    for key, row in FORMATS.items():
        assert row.suffix == ARTIFACT_SUFFIXES[key]
        assert runtime_for_format(key) is not None, key  # bench can time every exported format
    for runtime in RUNTIMES.values():
        assert set(runtime.formats) <= set(ARTIFACT_SUFFIXES), runtime.name
    for key, suffix in ARTIFACT_SUFFIXES.items():
        if suffix.startswith("."):
            assert detect_format(tmp_path / f"m{suffix.upper()}") == key
    assert detect_format(tmp_path / "m.h5") is None
    assert RunDir(tmp_path).model_path("dense").name == "dense" + ARTIFACT_SUFFIXES["keras"]


def test_methods_one_registry_read_by_sparsity_sweep_and_the_cli():
    from asp_export.commands.prune import command as prune_command

    from asp_export.errors import UserInputError
    from asp_export.prune import methods, sparsity
    from asp_export.sweep import SweepOptions

    assert methods.METHODS == tuple(methods.METHOD_TABLE)
    assert sparsity.METHODS is methods.METHODS  # SparsityConfig validates against the registry
    assert tuple(_option(prune_command, "method").type.choices) == methods.METHODS
    for name in methods.METHODS:
        assert methods.get_method(name).name == name
        assert sparsity.SparsityConfig(method=name).method == name
    valid = ", ".join(m for m in methods.METHODS if m != "none")
    with pytest.raises(UserInputError, match=re.escape(f"valid: {valid} (none is always run).")):
        SweepOptions(model="m", data="digits", methods=("nope",), targets=(0.5,), out="o")


def test_one_report_builder_for_the_structured_and_the_magnitude_path():
    from asp_export.prune.options import PruneOptions
    from asp_export.prune.report import build_report

    options = PruneOptions(model="lenet5", out="runs/x")
    layers = [{"name": "c", "groups_before": 8, "groups_after": 3}]
    report = build_report(
        options,
        dense={"accuracy": 0.9},
        masked_accuracy=0.81234567,
        pruned={"accuracy": 0.8},
        surgery=None,
        finetuned=None,
        layers=layers,
        structure_live="3",
        elementwise_sparsity=0.123456789,
        plan={"groups": []},
        target=None,
        dataset="digits",
        devices={"device": "cpu"},
        seconds=12.345,
        versions={"asp": "0"},
        extra={"structural_change": False},
    )
    assert list(report) == [
        "dense", "masked", "pruned", "surgery", "finetuned", "layers", "structure", "structure_live",
        "elementwise_sparsity", "plan", "target", "structural_change",
        "model", "dataset", "method", "seed", "config", "versions", "devices", "training",
    ]  # fmt: skip
    assert report["masked"] == {"accuracy": 0.812346} and report["elementwise_sparsity"] == 0.123457
    assert report["structure"] == "3" and report["method"] == options.sparsity.method
    assert report["training"] == {"epochs": options.train.epochs, "seconds": 12.3}
    assert report["config"] == options.to_dict() and report["seed"] == options.train.seed
    prune = Path(__file__).resolve().parents[1] / "asp_export" / "prune"
    for name in ("pipeline.py", "magnitude.py"):  # neither writes report.json's keys by hand again
        text = (prune / name).read_text()
        assert '"masked":' not in text and '"structure":' not in text and '"training":' not in text, name


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"target_flops": 0.5, "target_elementwise": 0.5}, "Give one of --target-flops, --target-sparsity, "
         "--target-elementwise, not several."),
        ({"target_sparsity": 1.0}, "--target-sparsity is the fraction to remove, strictly between 0 and 1 "
         "(0.8 removes 80 %); got 1.0."),
        ({"target_elementwise": 0.0}, "--target-elementwise is the fraction to remove, strictly between 0 "
         "and 1 (0.8 removes 80 %); got 0.0."),
    ],
)  # fmt: skip
def test_target_option_messages_name_the_registrys_options(given, message):
    from asp_export.errors import UserInputError
    from asp_export.prune.targets import validate_target

    values = {"target_flops": None, "target_sparsity": None, "target_elementwise": None, **given}
    with pytest.raises(UserInputError) as caught:
        validate_target(values["target_flops"], values["target_sparsity"], None, values["target_elementwise"])
    assert str(caught.value) == message
