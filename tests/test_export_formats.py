"""The FORMATS table, tolerances, parity arithmetic and the manifest schema (no TensorFlow needed)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from asp_export.errors import RunDirError, UserInputError
from asp_export.export import FORMATS, PRECISIONS, formats_markdown, get_format, resolve_formats
from asp_export.export._tools import describe_failure
from asp_export.export.formats import plan_precisions
from asp_export.export.manifest import artifact_sha256, read_manifest, validate
from asp_export.export.parity import Tolerance, compare, default_tolerance, run_in_batches

DOCS = Path(__file__).resolve().parents[1] / "docs" / "formats.md"


@pytest.mark.parametrize("key", list(FORMATS))
def test_every_format_row_is_consistent_and_has_its_module(key):
    row = FORMATS[key]
    assert row.key == key == key.lower()
    assert set(row.default_precisions) <= set(row.precisions) <= set(PRECISIONS)
    assert "fp32" in row.precisions
    assert importlib.util.find_spec(row.module) is not None, f"{row.module} implements {key}"
    module_source = Path(importlib.util.find_spec(row.module).origin).read_text()
    assert "def export(" in module_source and "def predict(" in module_source
    assert row.filename("pruned", "fp32").endswith(row.suffix)
    assert row.filename("dense", "int8") == f"dense_int8{row.suffix}"


def test_all_expands_to_every_row_once_in_table_order():
    assert [f.key for f in resolve_formats(["all", "onnx"])] == list(FORMATS)
    assert [f.key for f in resolve_formats(["tflite", "onnx"])] == ["onnx", "tflite"]


def test_unknown_format_suggests_the_closest_key():
    with pytest.raises(UserInputError, match="Did you mean 'onnx'"):
        get_format("onx")


def test_precisions_a_format_lacks_are_dropped_and_defaults_apply():
    assert plan_precisions(FORMATS["onnx"], ["fp32", "int8"]) == ["fp32"]
    assert plan_precisions(FORMATS["tflite"], []) == list(FORMATS["tflite"].default_precisions)
    with pytest.raises(UserInputError, match="precision"):
        plan_precisions(FORMATS["tflite"], ["int4"])


def test_docs_formats_md_holds_the_generated_table():
    table = formats_markdown()
    for key in FORMATS:
        assert f"`{key}`" in table
    assert table in DOCS.read_text(encoding="utf-8"), "regenerate docs/formats.md from formats_markdown()"


@pytest.mark.parametrize(
    ("precision", "rel", "top1"),
    [("fp32", 1e-4, None), ("fp16", 1e-2, None), ("int8", None, 0.98), ("dynamic", None, 0.98)],
)
def test_default_tolerances_by_precision(precision, rel, top1):
    tol = default_tolerance(precision)
    assert tol.max_rel_diff == rel
    assert tol.min_top1_agreement == top1


def test_overrides_apply_to_their_precision_family_only():
    assert default_tolerance("fp32", rtol=1e-3).max_rel_diff == 1e-3
    assert default_tolerance("int8", rtol=1e-3).max_rel_diff is None
    assert default_tolerance("int8", min_top1=0.9).min_top1_agreement == 0.9
    assert default_tolerance("fp16", atol=0.5).max_abs_diff == 0.5
    with pytest.raises(UserInputError):
        Tolerance(min_top1_agreement=1.5)


def test_relative_difference_is_taken_against_the_logit_scale():
    ref = np.array([[10.0, -5.0, 0.0], [2.0, 1.0, 0.0]])
    cand = ref + np.array([[0.0, 0.0, 1e-3], [0.0, 0.0, 0.0]])  # tiny logit near zero moves
    result = compare(ref, cand, Tolerance(max_rel_diff=1e-4))
    assert result.max_abs_diff == pytest.approx(1e-3)
    assert result.max_rel_diff == pytest.approx(1e-4)  # 1e-3 / 10, not 1e-3 / 0
    assert result.top1_agreement == 1.0
    failing = compare(ref, cand * 1.01, Tolerance(max_rel_diff=1e-4))
    assert not failing.passed and "max_rel_diff" in failing.failures[0]


def test_top1_agreement_and_accuracy_drop_with_labels():
    ref = np.eye(4)
    cand = np.eye(4)[[0, 1, 2, 0]]  # last sample flips
    result = compare(
        ref, cand, default_tolerance("int8"), labels=np.array([0, 1, 2, 3]), data="test split of x"
    )
    assert result.top1_agreement == 0.75
    assert not result.passed
    assert result.keras_accuracy == 1.0 and result.file_accuracy == 0.75
    assert result.accuracy_drop == pytest.approx(0.25)
    assert result.to_dict()["data"] == "test split of x"


def test_non_finite_outputs_never_pass_and_serialize_as_null():
    ref = np.ones((2, 3))
    result = compare(ref, np.full((2, 3), np.nan), default_tolerance("fp32"))
    assert not result.passed
    assert result.to_dict()["max_abs_diff"] is None
    json.dumps(result.to_dict(), allow_nan=False)


def test_fixed_batch_runs_in_padded_chunks():
    seen = []

    def fn(chunk):
        seen.append(len(chunk))
        return chunk * 2

    out = run_in_batches(fn, np.arange(5.0)[:, None], 2)
    assert seen == [2, 2, 2]
    np.testing.assert_array_equal(out[:, 0], np.arange(5.0) * 2)


def test_converter_failure_names_format_layer_and_op():
    err = RuntimeError("tf2onnx failed\nUnsupported ops: Counter({'FancyOp': 1}) in functional/conv2/FancyOp")
    message = describe_failure("onnx", err, ["conv1", "conv2"])
    assert message.startswith(
        "onnx conversion failed at layer 'conv2', op FancyOp: RuntimeError: tf2onnx failed"
    )
    assert "\n" not in message


def _entry(**parity):
    return {
        "model": "dense",
        "format": "onnx",
        "precision": "fp32",
        "path": "export/dense.onnx",
        "size_bytes": 1,
        "sha256": "0" * 64,
        "parity": {
            "max_abs_diff": 0.0,
            "max_rel_diff": 0.0,
            "top1_agreement": 1.0,
            "n_samples": 1,
            "passed": True,
            **parity,
        },
    }


def test_manifest_validation_names_the_missing_field(tmp_path):
    good = {"schema_version": 1, "asp_version": "0", "source": "x", "versions": {}, "files": [_entry()]}
    validate(good)
    broken = json.loads(json.dumps(good))
    del broken["files"][0]["parity"]["passed"]
    with pytest.raises(RunDirError, match="parity.passed"):
        validate(broken)
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({**good, "schema_version": 99}))
    with pytest.raises(RunDirError, match="newer"):
        read_manifest(path)


def test_directory_artifacts_hash_their_contents(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.pb").write_bytes(b"1")
    before = artifact_sha256(tmp_path / "a")
    (tmp_path / "a" / "x.pb").write_bytes(b"2")
    assert artifact_sha256(tmp_path / "a") != before


def test_the_export_package_and_its_help_do_not_import_tensorflow():
    code = (
        "import sys\n"
        "import asp_export.export\n"
        "from asp_export.cli import cli\n"
        "try:\n    cli(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "assert 'tensorflow' not in sys.modules, 'TensorFlow imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code, "export", "--help"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "--precision" in done.stdout
