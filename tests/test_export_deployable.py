"""What a consumer gets from `asp export`: a simplified ONNX graph, NCHW and fixed or named batch
dimensions, an op histogram with the mobile EPs' verdict, and a SavedModel without duplicated weights.

Every test runs real exports (tf2onnx, onnxslim, onnxruntime) of a small model with a Flatten, the
layer tf2onnx turns into a dynamic Shape -> Gather -> Cast -> Slice -> Concat -> Reshape chain.
"""

from __future__ import annotations

import collections

import numpy as np
import pytest
from click.testing import CliRunner

from asp_export.cli import cli
from asp_export.export import ExportOptions, export_run

SHAPE = (8, 8, 1)
N = 24
DYNAMIC_CHAIN = {"Shape", "Gather", "Cast", "Slice", "Concat"}


def _net(path):
    """gasl-mnist's layout (conv-pool-conv-pool-flatten-dense x3) at 8x8: the README demo in small."""
    import keras
    from asp_export.models import create_model

    keras.utils.set_random_seed(0)
    model = create_model("gasl-mnist", input_shape=SHAPE)
    model.save(path)
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One .keras file exported three ways: default, --no-simplify, and --batch 1 --nchw."""
    root = tmp_path_factory.mktemp("deployable")
    model = _net(root / "net.keras")
    runs = {
        "default": ExportOptions(formats=("onnx",)),
        "raw": ExportOptions(formats=("onnx",), simplify=False),
        "mobile": ExportOptions(formats=("onnx",), batch=1, nchw=True),
    }
    out = {}
    for name, options in runs.items():
        options = ExportOptions(**{**options.__dict__, "out": root / name, "parity_samples": N})
        result = export_run(root / "net.keras", options)
        (entry,) = result.entries
        out[name] = (root / name / "net.onnx", entry)
    x = np.random.default_rng(0).uniform(size=(N, *SHAPE)).astype(np.float32)
    return model, x, out


def _ops(path) -> collections.Counter:
    import onnx

    return collections.Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def _run(path, x):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))])


def test_default_onnx_export_is_simplified_with_identical_outputs(exported):
    _, x, out = exported
    raw_path, raw = out["raw"]
    path, entry = out["default"]
    assert DYNAMIC_CHAIN <= set(_ops(raw_path)), "tf2onnx no longer emits the chain this test is about"
    assert not DYNAMIC_CHAIN & set(_ops(path))
    assert entry["simplified"] is True and raw["simplified"] is False
    assert entry["graph"]["nodes"] < raw["graph"]["nodes"]
    assert entry["parity"]["passed"]
    np.testing.assert_allclose(_run(path, x), _run(raw_path, x), rtol=0, atol=1e-6)


def test_a_simplification_parity_rejects_leaves_the_file_untouched(exported, tmp_path):
    from asp_export.export import onnx as onnx_export

    raw_path, _ = exported[2]["raw"]
    path = tmp_path / "net.onnx"
    path.write_bytes(raw_path.read_bytes())
    assert onnx_export.simplify(path, lambda candidate: False) is False
    assert path.read_bytes() == raw_path.read_bytes()
    assert onnx_export.simplify(path, lambda candidate: candidate.is_file()) is True
    assert not DYNAMIC_CHAIN & set(_ops(path))
    assert {p.key for p in __import__("onnx").load(str(path)).metadata_props} >= {"precision", "input_layout"}


def test_nchw_fixed_batch_file_takes_transposed_input_and_suits_nnapi_whole(exported):
    import onnx

    model, x, out = exported
    path, entry = out["mobile"]
    assert entry["layout"] == "NCHW" and entry["batch"] == 1
    assert entry["input"]["shape"] == [1, SHAPE[2], SHAPE[0], SHAPE[1]]
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["input_layout"] == "NCHW" and meta["input_shape"] == "N,1,8,8"
    assert entry["parity"]["passed"] and entry["parity"]["n_samples"] == N
    expected = np.asarray(model(x, training=False))
    np.testing.assert_allclose(_run(path, x.transpose(0, 3, 1, 2).copy()), expected, atol=1e-4, rtol=0)
    nnapi = entry["graph"]["mobile"]["nnapi"]
    assert nnapi["supported_nodes"] == nnapi["nodes"] > 0 and nnapi["partitions"] == 1
    assert nnapi["verdict"] == "yes"
    assert exported[2]["default"][1]["graph"]["mobile"]["nnapi"]["verdict"] == "no"  # dynamic batch


def test_dynamic_batch_is_named_batch_and_a_fixed_batch_fixes_the_onnx_input(exported):
    import onnx

    path, entry = exported[2]["default"]
    graph = onnx.load(str(path)).graph
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert entry["batch"] == "dynamic" and entry["input"]["shape"][0] is None
    assert entry["layout"] == "NHWC"
    fixed = onnx.load(str(exported[2]["mobile"][0])).graph
    assert fixed.input[0].type.tensor_type.shape.dim[0].dim_value == 1


def test_manifest_records_the_op_histogram_of_the_file(exported):
    import onnx

    for path, entry in exported[2].values():
        graph = entry["graph"]
        assert graph["nodes"] == len(onnx.load(str(path)).graph.node) == sum(graph["ops"].values())
        assert graph["ops"] == dict(_ops(path))
        assert set(graph["mobile"]) == {"nnapi", "coreml"}


def test_nchw_without_an_onnx_file_is_refused_in_one_line(tmp_path):
    _net(tmp_path / "net.keras")
    result = CliRunner().invoke(cli, ["export", str(tmp_path / "net.keras"), "--format", "tflite", "--nchw"])
    assert result.exit_code == 2
    assert "--nchw applies to onnx files only" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "export" / "net.tflite").exists()


def test_saved_model_stores_each_weight_once(exported, tmp_path):
    import tensorflow as tf

    from asp_export.export import FORMATS, FileSpec, default_tolerance
    from asp_export.export import saved_model as sm_export
    from asp_export.export.manifest import artifact_size
    from asp_export.export.parity import check_file, keras_logits

    model, x, out = exported
    path = tmp_path / "net_saved_model"
    sm_export.export(model, path, FileSpec())
    values = {
        name: int(np.prod(shape))
        for name, shape in tf.train.list_variables(str(path / "variables" / "variables"))
        if name != "_CHECKPOINTABLE_OBJECT_GRAPH"
    }
    assert len(values) == len(model.weights)
    assert sum(values.values()) == model.count_params()
    onnx_size = out["raw"][0].stat().st_size
    assert artifact_size(path) <= 1.05 * onnx_size, (artifact_size(path), onnx_size)
    result = check_file(FORMATS["saved_model"], path, x, keras_logits(model, x), default_tolerance("fp32"))
    assert result.passed, result.failures


def test_bench_marks_a_file_that_failed_parity_and_check_fails_its_speedup(tmp_path):
    import json
    import shutil

    from asp_export.bench import BenchConfig, TimingPolicy, run_bench, write_outputs
    from asp_export.check import run_check, write_baseline

    run = tmp_path / "run"
    run.mkdir()
    for kind in ("dense", "pruned"):
        _net(run / f"{kind}.keras")
    export_run(run / "dense.keras", ExportOptions(formats=("onnx",), parity_samples=8))
    strict = ExportOptions(formats=("onnx",), parity_samples=8, rtol=0.0)  # any float difference fails
    result = export_run(run / "pruned.keras", strict, strict=False)
    assert not result.ok and result.failed_files[0]["model"] == "pruned"

    export = run / "export"
    config = BenchConfig(
        inputs=(str(export / "dense.onnx"), str(export / "pruned.onnx")),
        runtimes=("onnxruntime",),
        provider="cpu",
        batches=(1,),
        threads=1,
        policy=TimingPolicy(warmup=1, min_iterations=3, min_time_s=0.0, block=1),
        out=str(run / "bench"),
    )
    data = run_bench(config).data
    write_outputs(data, run / "bench")
    assert {r["model"]: r["parity_failed"] for r in data["rows"]} == {"dense": False, "pruned": True}
    (pair,) = data["pairs"]
    assert pair["parity_failed"] == ["pruned"]
    markdown = (run / "bench" / "bench.md").read_text()
    assert "PRUNED FAILED EXPORT PARITY" in markdown and "ok PARITY FAILED" in markdown

    # A baseline from the same run with parity passing; the real run must fail the speedup row.
    good = tmp_path / "good"
    shutil.copytree(run, good)
    for name, edit in (("export/manifest.json", "files"), ("bench/bench.json", "pairs")):
        doc = json.loads((good / name).read_text())
        for item in doc[edit]:
            if edit == "files":
                item["parity"]["passed"], item["parity"]["failures"] = True, []
            else:
                item["parity_failed"] = []
        (good / name).write_text(json.dumps(doc))
    write_baseline(good, tmp_path / "baseline.json")
    report = run_check(run, tmp_path / "baseline.json")
    failed = {r.name: r.message for r in report.failures}
    speedup = next(name for name in failed if name.startswith("speedup_p50["))
    assert "pruned file failed export parity" in failed[speedup]
    assert "parity.passed" in failed
    update = write_baseline(run, tmp_path / "from_the_failed_run.json")
    assert any(w.startswith(f"{speedup} timed a pruned file that failed") for w in update.warnings)


def test_a_simplified_file_the_runtime_cannot_run_is_rejected_not_a_crash(tmp_path, monkeypatch):
    from asp_export.export import onnx as onnx_export

    real_predict = onnx_export.predict

    def predict(path, x):  # the runtime chokes on onnxslim's graph only
        if "Shape" not in _ops(path):
            raise RuntimeError("unsupported node")
        return real_predict(path, x)

    _net(tmp_path / "net.keras")
    monkeypatch.setattr(onnx_export, "predict", predict)
    result = export_run(tmp_path / "net.keras", ExportOptions(formats=("onnx",), parity_samples=8))
    (entry,) = result.entries
    assert result.ok and entry["simplified"] is False
    assert DYNAMIC_CHAIN <= set(_ops(tmp_path / "export" / "net.onnx"))
