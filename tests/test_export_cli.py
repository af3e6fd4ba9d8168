"""`asp export` through the CLI: run directories, manifests, refusals and failures."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from asp_export._io import sha256_of, write_json_atomic
from asp_export.cli import cli
from asp_export.rundir import RunDir

SHAPE = (8, 8, 1)  # the embedded digits, native size: no download, tiny models
FAST = ["--parity-samples", "32"]


def _classifier(widths: tuple[int, int], seed: int):
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(SHAPE, name="input")
    x = keras.layers.Conv2D(widths[0], 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.MaxPooling2D(2, name="pool1")(x)
    x = keras.layers.Conv2D(widths[1], 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def run_template(tmp_path_factory):
    """A run directory as `asp prune` leaves it: config.json, dense.keras and a narrower pruned.keras."""
    run = RunDir(tmp_path_factory.mktemp("template") / "run")
    run.root.mkdir()
    write_json_atomic(
        run.config_json,
        {
            "schema_version": 1,
            "model": "inline-cnn",
            "data": {
                "name": "digits",
                "data_dir": None,
                "input_shape": list(SHAPE),
                "val_fraction": 0.1,
                "seed": 0,
            },
            "input_shape": list(SHAPE),
            "num_classes": 10,
            "seed": 0,
            "method": "gasl",
        },
    )
    _classifier((8, 16), seed=0).save(run.model_path("dense"))
    _classifier((3, 5), seed=1).save(run.model_path("pruned"))
    return run


@pytest.fixture
def run_dir(run_template, tmp_path):
    copy = RunDir(tmp_path / "run")
    shutil.copytree(run_template.root, copy.root)
    return copy


def _invoke(*args):
    return CliRunner().invoke(cli, ["export", *map(str, args)])


def _manifest(run: RunDir) -> dict:
    return json.loads(run.manifest_json.read_text())


def test_run_dir_exports_dense_and_pruned_with_a_truthful_manifest(run_dir):
    result = _invoke(run_dir.root, "--format", "onnx", "--format", "tflite", "--precision", "fp32", *FAST)
    assert result.exit_code == 0, result.output
    assert "onnx fp32 pruned -> export/pruned.onnx" in result.output
    manifest = _manifest(run_dir)
    assert manifest["schema_version"] == 1 and manifest["all_passed"] is True
    assert manifest["data"] == "test split of digits"
    rows = {(f["model"], f["format"], f["precision"]): f for f in manifest["files"]}
    assert set(rows) == {(m, f, "fp32") for m in ("dense", "pruned") for f in ("onnx", "tflite")}
    for entry in manifest["files"]:
        path = run_dir.resolve(entry["path"])
        assert entry["path"].startswith("export/")
        assert entry["size_bytes"] == path.stat().st_size
        assert entry["sha256"] == sha256_of(path)
        assert entry["parity"]["passed"] and entry["parity"]["n_samples"] == 32
        assert entry["parity"]["data"] == "test split of digits"
        assert {"keras_accuracy", "accuracy_drop"} <= set(entry["parity"])
        assert entry["parity"]["reference"] == {"device": "CPU", "tensor_float_32": False}
        # the log prints sizes in decimal units (1 kB = 1000 B), as report.md does (asp_export/units.py)
        value, unit = re.search(rf"-> {entry['path']} \(([\d.]+) (B|kB|MB)\)", result.output).groups()
        printed = float(value) * {"B": 1, "kB": 1e3, "MB": 1e6}[unit]
        assert printed == pytest.approx(entry["size_bytes"], rel=5e-4)
    assert rows[("pruned", "onnx", "fp32")]["size_bytes"] < rows[("dense", "onnx", "fp32")]["size_bytes"]
    assert rows[("pruned", "onnx", "fp32")]["params"] < rows[("dense", "onnx", "fp32")]["params"]
    assert rows[("dense", "tflite", "fp32")]["batch"] == 1
    assert rows[("dense", "onnx", "fp32")]["batch"] == "dynamic"


def test_pruned_onnx_agrees_with_pruned_keras_independently(run_dir):
    """Load the files with nothing from asp: onnxruntime vs keras, 1e-4."""
    import keras
    import onnxruntime as ort

    result = _invoke(run_dir.root, "--format", "onnx", "--models", "pruned", *FAST)
    assert result.exit_code == 0, result.output
    x = np.random.default_rng(7).uniform(size=(16, *SHAPE)).astype(np.float32)
    session = ort.InferenceSession(
        str(run_dir.export_dir / "pruned.onnx"), providers=["CPUExecutionProvider"]
    )
    assert session.get_providers() == ["CPUExecutionProvider"]
    ours = session.run(None, {"input": x})[0]
    theirs = np.asarray(keras.saving.load_model(run_dir.model_path("pruned"), compile=False)(x))
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=1e-4)
    assert not (run_dir.export_dir / "dense.onnx").exists()


def test_existing_files_are_not_overwritten_without_force(run_dir):
    args = [run_dir.root, "--format", "onnx", "--models", "dense", *FAST]
    assert _invoke(*args).exit_code == 0
    stamp = (run_dir.export_dir / "dense.onnx").stat().st_mtime_ns
    refused = _invoke(*args)
    assert refused.exit_code == 2
    assert "already holds dense.onnx; pass --force" in refused.output
    assert (run_dir.export_dir / "dense.onnx").stat().st_mtime_ns == stamp
    assert _invoke(*args, "--force").exit_code == 0


def test_a_second_export_keeps_earlier_unchanged_entries(run_dir):
    assert _invoke(run_dir.root, "--format", "onnx", "--models", "dense", *FAST).exit_code == 0
    result = _invoke(
        run_dir.root,
        "--format",
        "tflite",
        "--precision",
        "int8",
        "--models",
        "dense",
        "--calibration-samples",
        "32",
        "--min-top1",
        "0.9",
        *FAST,
    )
    assert result.exit_code == 0, result.output
    files = {(f["format"], f["precision"]) for f in _manifest(run_dir)["files"]}
    assert files == {("onnx", "fp32"), ("tflite", "int8")}
    int8 = next(f for f in _manifest(run_dir)["files"] if f["precision"] == "int8")
    assert int8["calibration_samples"] == 32 and "accuracy_drop" in int8["parity"]


def test_parity_failure_keeps_the_file_marks_it_and_exits_1(run_dir, monkeypatch):
    from asp_export.export import onnx as onnx_export

    real_predict = onnx_export.predict
    monkeypatch.setattr(onnx_export, "predict", lambda path, x: real_predict(path, x) + 1.0)
    result = _invoke(run_dir.root, "--format", "onnx", "--models", "dense", *FAST)
    assert result.exit_code == 1
    assert "export/dense.onnx failed parity (max_rel_diff" in result.output
    assert (run_dir.export_dir / "dense.onnx").is_file()
    entry = _manifest(run_dir)["files"][0]
    assert entry["parity"]["passed"] is False and _manifest(run_dir)["all_passed"] is False


def test_converter_failure_names_the_format_and_continues(run_dir, monkeypatch):
    from asp_export.export import onnx as onnx_export

    def broken(model, path, spec):
        raise RuntimeError("Unsupported ops: Counter({'Zorp': 1}) at functional/conv2/Zorp")

    monkeypatch.setattr(onnx_export, "export", broken)
    result = _invoke(
        run_dir.root,
        "--format",
        "onnx",
        "--format",
        "tflite",
        "--precision",
        "fp32",
        "--models",
        "dense",
        *FAST,
    )
    assert result.exit_code == 1
    assert "onnx conversion failed at layer 'conv2', op Zorp" in result.output
    manifest = _manifest(run_dir)
    assert [f["format"] for f in manifest["files"]] == ["tflite"]
    assert manifest["failures"][0]["format"] == "onnx"


def test_missing_pruned_model_is_reported_and_dense_exported(run_dir):
    run_dir.model_path("pruned").unlink()
    result = _invoke(run_dir.root, "--format", "onnx", *FAST)
    assert result.exit_code == 0, result.output
    assert "has no pruned.keras; exporting dense only" in result.output
    asked = _invoke(run_dir.root, "--format", "onnx", "--models", "pruned", "--out", run_dir.root / "x")
    assert asked.exit_code == 2
    assert "has no pruned.keras" in asked.output


def test_a_model_file_inside_a_run_dir_is_exported_with_the_runs_data(run_dir):
    result = _invoke(run_dir.model_path("pruned"), "--format", "onnx", *FAST)
    assert result.exit_code == 0, result.output
    manifest = _manifest(run_dir)
    assert manifest["data"] == "test split of digits"
    assert [(f["model"], f["path"]) for f in manifest["files"]] == [("pruned", "export/pruned.onnx")]


def test_force_retracts_replaced_entries_before_rewriting(run_dir, monkeypatch):
    from asp_export.export import onnx as onnx_export

    assert _invoke(run_dir.root, "--format", "onnx", *FAST).exit_code == 0

    def killed(model, path, spec):
        raise KeyboardInterrupt

    monkeypatch.setattr(onnx_export, "export", killed)
    result = _invoke(run_dir.root, "--format", "onnx", "--models", "dense", "--force", *FAST)
    assert result.exit_code == 130
    assert [f["path"] for f in _manifest(run_dir)["files"]] == ["export/pruned.onnx"]


def test_bare_keras_file_uses_synthetic_inputs_and_says_so(tmp_path):
    _classifier((4, 4), seed=2).save(tmp_path / "net.keras")
    result = _invoke(tmp_path / "net.keras", "--format", "saved_model", *FAST)
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "export" / "manifest.json").read_text())
    assert manifest["data"] == "synthetic"
    entry = manifest["files"][0]
    assert entry["path"] == "export/net_saved_model" and entry["parity"]["data"] == "synthetic"
    assert (tmp_path / "export" / "net_saved_model" / "saved_model.pb").is_file()


def test_corrupted_keras_file_is_a_one_line_error(tmp_path):
    bad = tmp_path / "broken.keras"
    bad.write_bytes(b"PK\x03\x04 this is not a keras archive")
    result = _invoke(bad, "--format", "onnx")
    assert result.exit_code == 2
    assert "broken.keras" in result.output
    assert "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1


def test_a_corrupt_model_in_a_run_dir_stops_before_anything_is_written(run_dir):
    run_dir.model_path("pruned").write_bytes(b"truncated")
    result = _invoke(run_dir.root, "--format", "onnx", *FAST)
    assert result.exit_code == 2
    assert "pruned.keras" in result.output
    assert not any(run_dir.export_dir.iterdir())


def test_a_corrupt_keras_file_becomes_one_model_load_error_naming_it(tmp_path):
    from asp_export.errors import ModelLoadError
    from asp_export.export.source import load_model

    bad = tmp_path / "broken.keras"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ModelLoadError, match="broken.keras"):
        load_model(bad)


def test_unknown_format_suggests_the_closest(tmp_path):
    result = _invoke(tmp_path, "--format", "onxx")
    assert result.exit_code == 2
    assert "Did you mean 'onnx'?" in result.output


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: p / "nope", "does not exist"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "not an asp run directory"),
    ],
)
def test_bad_sources_exit_2(tmp_path, make, expected):
    result = _invoke(make(tmp_path), "--format", "onnx")
    assert result.exit_code == 2
    assert expected in result.output


def test_unwritable_output_dir_exits_2(run_dir, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    result = _invoke(run_dir.root, "--format", "onnx", "--out", blocker / "export")
    assert result.exit_code == 2
    assert "Cannot create output directory" in result.output


def test_help_lists_formats_from_the_table():
    result = CliRunner().invoke(cli, ["export", "--help"])
    assert result.exit_code == 0
    from asp_export.export import FORMATS

    for key in [*FORMATS, "all", "int8", "dynamic"]:
        assert key in result.output
