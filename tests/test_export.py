"""Every format writes a file its own runtime runs to the same logits as Keras."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from asp_export.export import FORMATS, FileSpec, default_tolerance
from asp_export.export.parity import check_file, keras_logits

ZOO_SMALL = {  # name -> small input shape so every model converts in about a second (tiny_cnn: below)
    "tiny_resnet": None,
    "tiny_mobilenet": None,
    "tiny_concat": None,
    "tiny_separable": None,
    "tiny_se": None,
    "lenet5": (16, 16, 1),
    "gasl-mnist": (8, 8, 1),
    "lenet-300-100": (16, 16, 1),
}
# The CIFAR-sized zoo takes 1-20 s per conversion here: marked slow (tests/conftest.py).
ZOO_LARGE = {"resnet20": (16, 16, 3), "resnet56": (16, 16, 3), "vgg16-cifar": None, "mobilenetv2-cifar": None}
N = 24  # parity samples: not a multiple of typical batches, so chunking is exercised


def _model(name: str):
    import keras
    from asp_export.models import create_model

    keras.utils.set_random_seed(0)
    return create_model(name, input_shape=ZOO_SMALL.get(name))


def _inputs(model, n: int = N, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(size=(n, *model.input_shape[1:])).astype(np.float32)


def _export_and_check(model, fmt_key: str, path, spec: FileSpec, x=None):
    fmt = FORMATS[fmt_key]
    x = _inputs(model) if x is None else x
    io = importlib.import_module(fmt.module).export(model, path, spec)
    assert path.exists()
    result = check_file(fmt, path, x, keras_logits(model, x), default_tolerance(spec.precision))
    return io, result


@pytest.fixture(scope="module")
def tiny_cnn():
    return _model("tiny_cnn")


@pytest.fixture(scope="module")
def fp32_sizes():
    """Size of each format's fp32 file of tiny_cnn, filled by the fp32 test."""
    return {}


@pytest.mark.parametrize("fmt_key", list(FORMATS))
def test_fp32_file_matches_keras_in_its_runtime(fmt_key, tiny_cnn, fp32_sizes, tmp_path):
    from asp_export.export.manifest import artifact_size

    fmt = FORMATS[fmt_key]
    path = tmp_path / fmt.filename("dense", "fp32")
    io, result = _export_and_check(tiny_cnn, fmt_key, path, FileSpec(batch=fmt.default_batch))
    fp32_sizes[fmt_key] = artifact_size(path)
    assert result.passed, result.failures
    assert result.max_rel_diff <= 1e-4 and result.top1_agreement == 1.0
    assert result.n_samples == N
    assert io["input"]["shape"] == [fmt.default_batch, 16, 16, 3]
    assert io["input"]["dtype"] == "float32"


@pytest.mark.parametrize("name", list(ZOO_SMALL))
@pytest.mark.parametrize("fmt_key", ["onnx", "tflite"])
def test_zoo_models_export_with_parity(name, fmt_key, tmp_path):
    model = _model(name)
    fmt = FORMATS[fmt_key]
    _, result = _export_and_check(
        model, fmt_key, tmp_path / f"m{fmt.suffix}", FileSpec(batch=fmt.default_batch)
    )
    assert result.passed, f"{name} {fmt_key}: {result.failures}"


def test_zoo_covers_every_registered_model():
    from asp_export.models import list_models

    assert set(list_models()) - {"tiny_cnn"} == set(ZOO_SMALL) | set(ZOO_LARGE)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ZOO_LARGE))
@pytest.mark.parametrize("fmt_key", ["onnx", "tflite"])
def test_large_zoo_models_export_with_parity(name, fmt_key, tmp_path):
    model = _model(name)
    fmt = FORMATS[fmt_key]
    x = _inputs(model, 8)
    _, result = _export_and_check(
        model, fmt_key, tmp_path / f"m{fmt.suffix}", FileSpec(batch=fmt.default_batch), x
    )
    assert result.passed, f"{name} {fmt_key}: {result.failures}"


def test_onnx_file_is_checked_named_and_carries_metadata(tiny_cnn, tmp_path):
    import onnx

    path = tmp_path / "dense.onnx"
    meta = {"asp_version": "0.1.0", "params": "123", "flops": "456", "preprocessing": "scaled to [0, 1]"}
    io, result = _export_and_check(tiny_cnn, "onnx", path, FileSpec(metadata=meta))
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert [i.name for i in proto.graph.input] == ["input"]
    assert io["input"]["shape"][0] is None  # dynamic batch by default
    assert {p.key: p.value for p in proto.metadata_props} == {**meta, "input_layout": "NHWC"}
    assert {op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")} == {17}


def test_dynamic_batch_tflite_is_resized_to_the_samples(tiny_cnn, tmp_path):
    io, result = _export_and_check(tiny_cnn, "tflite", tmp_path / "d.tflite", FileSpec(batch=None))
    assert io["input"]["shape"][0] is None
    assert result.passed and result.n_samples == N


def test_fixed_batch_onnx_runs_in_chunks(tiny_cnn, tmp_path):
    io, result = _export_and_check(tiny_cnn, "onnx", tmp_path / "b5.onnx", FileSpec(batch=5))
    assert io["input"]["shape"][0] == 5
    assert result.passed and result.n_samples == N  # 24 samples in chunks of 5


@pytest.mark.parametrize("fmt_key", ["onnx", "tflite"])
def test_fp16_stays_within_1e_2_and_keeps_float32_io(fmt_key, tiny_cnn, fp32_sizes, tmp_path):
    path = tmp_path / f"dense_fp16{FORMATS[fmt_key].suffix}"
    io, result = _export_and_check(tiny_cnn, fmt_key, path, FileSpec(precision="fp16"))
    assert result.passed, result.failures
    assert 0 < result.max_rel_diff <= 1e-2  # really half precision, yet close
    assert io["input"]["dtype"] == "float32"
    if fmt_key not in fp32_sizes:  # run alone: make the fp32 file to compare with
        fp32 = tmp_path / f"dense{FORMATS[fmt_key].suffix}"
        importlib.import_module(FORMATS[fmt_key].module).export(tiny_cnn, fp32, FileSpec())
        fp32_sizes[fmt_key] = fp32.stat().st_size
    assert path.stat().st_size < 0.7 * fp32_sizes[fmt_key]


def test_int8_full_integer_with_int8_io(tmp_path):
    model = _model("lenet5")
    calibration = _inputs(model, 64, seed=1)
    path = tmp_path / "dense_int8.tflite"
    spec = FileSpec(precision="int8", calibration=calibration, int8_io=True)
    io, result = _export_and_check(model, "tflite", path, spec, x=_inputs(model, 64))
    assert io["input"]["dtype"] == "int8" and io["output"]["dtype"] == "int8"
    assert io["input"]["quantization"]["scale"] > 0
    assert result.passed, result.failures
    assert result.top1_agreement >= 0.98
    assert result.max_abs_diff > 0  # quantized for real


def test_dynamic_range_quantization(tiny_cnn, tmp_path):
    path = tmp_path / "dense_dynamic.tflite"
    io, result = _export_and_check(tiny_cnn, "tflite", path, FileSpec(precision="dynamic"))
    assert result.passed, result.failures
    assert io["input"]["dtype"] == "float32"


def test_sequential_models_are_wrapped_for_tf2onnx(tmp_path):
    import keras

    from asp_export.export.source import as_functional

    seq = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3), keras.layers.Flatten(), keras.layers.Dense(3)]
    )
    _, result = _export_and_check(as_functional(seq), "onnx", tmp_path / "s.onnx", FileSpec())
    assert result.passed


@pytest.mark.parametrize("fmt_key", ["onnx", "tflite"])
def test_surgically_pruned_model_exports_smaller_with_parity(fmt_key, tmp_path):
    from asp_export.surgery import make_dead_channels, prune_model

    dense = _model("tiny_resnet")
    assert make_dead_channels(dense, 0.5, seed=0) > 0
    pruned, _ = prune_model(dense, threshold=1e-6)
    assert pruned.count_params() < dense.count_params()
    fmt = FORMATS[fmt_key]
    sizes = {}
    for kind, model in (("dense", dense), ("pruned", pruned)):
        path = tmp_path / fmt.filename(kind, "fp32")
        _, result = _export_and_check(model, fmt_key, path, FileSpec(batch=fmt.default_batch))
        assert result.passed, f"{kind}: {result.failures}"
        sizes[kind] = path.stat().st_size
    assert sizes["pruned"] < sizes["dense"]


def test_int8_with_a_fixed_batch_calibrates_in_batches_of_that_size(tiny_cnn, tmp_path):
    spec = FileSpec(precision="int8", batch=4, calibration=_inputs(tiny_cnn, 10, seed=1))
    io, result = _export_and_check(tiny_cnn, "tflite", tmp_path / "b4_int8.tflite", spec)
    assert io["input"]["shape"][0] == 4
    assert result.passed, result.failures


def test_parity_reference_and_savedmodel_runs_are_computed_without_tf32(tmp_path, monkeypatch):
    """On Ampere+ GPUs TensorFlow runs fp32 in TF32 by default (~1e-3 relative), which would fail every
    fp32 file at 1e-4 (issue 18): the reference and the SavedModel parity run switch it off, and put
    back what was set before."""
    import tensorflow as tf

    from asp_export.export import parity, saved_model

    seen = []

    class Probe:  # stands in for a Keras model: records the TF32 setting while it computes
        def __call__(self, x, training=False):
            seen.append(tf.config.experimental.tensor_float_32_execution_enabled())
            return np.zeros((len(x), 3), np.float32)

    assert tf.config.experimental.tensor_float_32_execution_enabled()  # TensorFlow's default
    logits = parity.keras_logits(Probe(), np.zeros((130, 4), np.float32))
    assert logits.shape == (130, 3) and seen == [False, False, False]
    assert tf.config.experimental.tensor_float_32_execution_enabled()

    model = _model("tiny_cnn")
    path = tmp_path / "m_saved_model"
    saved_model.export(model, path, FileSpec(precision="fp32"))
    real_run = saved_model.run_in_batches

    def recording_run(fn, x, batch):
        seen.append(tf.config.experimental.tensor_float_32_execution_enabled())
        return real_run(fn, x, batch)

    monkeypatch.setattr(saved_model, "run_in_batches", recording_run)
    saved_model.predict(path, _inputs(model, 4))
    assert seen[-1] is False
    assert tf.config.experimental.tensor_float_32_execution_enabled()
