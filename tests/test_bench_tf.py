"""`asp bench` on the TensorFlow-side runtimes: LiteRT (.tflite) and a compiled tf.function (.keras).

One tiny Keras model is built and converted once per module; the conversion imports TensorFlow, so these
tests live apart from tests/test_bench.py, which must stay TensorFlow-free.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import tensorflow as tf

from asp_export.bench import BenchConfig, TimingPolicy, run_bench

FAST = TimingPolicy(warmup=1, min_iterations=3, min_time_s=0.0, block=1)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    import keras

    keras.utils.set_random_seed(0)
    root = tmp_path_factory.mktemp("tfbench")
    out = {}
    for name, filters in (("dense", 16), ("pruned", 4)):
        inputs = keras.Input((12, 12, 1), name="image")
        x = keras.layers.Conv2D(filters, 3, activation="relu")(inputs)
        x = keras.layers.GlobalAveragePooling2D()(x)
        model = keras.Model(inputs, keras.layers.Dense(10)(x))
        out[f"{name}.keras"] = root / f"{name}.keras"
        model.save(out[f"{name}.keras"])
        tflite = tf.lite.TFLiteConverter.from_keras_model(model).convert()  # fixed batch 1, like asp export
        out[f"{name}.tflite"] = root / f"{name}.tflite"
        out[f"{name}.tflite"].write_bytes(tflite)
    return out


def test_tflite_runs_at_a_batch_other_than_the_exported_one(files):
    config = BenchConfig(
        inputs=(str(files["dense.tflite"]), str(files["pruned.tflite"])),
        runtimes=("tflite",),
        batches=(1, 4),
        threads=1,
        policy=FAST,
    )
    data = run_bench(config).data
    assert [(r["model"], r["batch"], r["status"]) for r in data["rows"]] == [
        ("dense", 1, "ok"),
        ("pruned", 1, "ok"),
        ("dense", 4, "ok"),
        ("pruned", 4, "ok"),
    ]
    assert {r["provider"] for r in data["rows"]} == {_delegate_in_litert(files["dense.tflite"])}
    assert [p["batch"] for p in data["pairs"]] == [1, 4]
    assert (
        data["pairs"][0]["flops_ratio"] is None
    )  # no report.json and no graph to read: unknown, not guessed


def _delegate_in_litert(path: Path) -> str:
    """The oracle: LiteRT's graph after allocation (XNNPACK replaces the ops it takes by DELEGATE nodes)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    ops = [d["op_name"] for d in interpreter._get_ops_details()]
    assert "CONV_2D" in ops  # the model's own ops are listed too
    return "XNNPACK" if "DELEGATE" in ops else "builtin"


def test_tflite_provider_is_the_delegate_really_applied(files, monkeypatch):
    """Without LiteRT's default delegate no XNNPACK is claimed: the builtin kernels ran."""
    import functools

    import ai_edge_litert.interpreter as litert

    assert _delegate_in_litert(files["dense.tflite"]) == "XNNPACK"  # this machine's LiteRT delegates
    no_delegate = functools.partial(
        litert.Interpreter,
        experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    monkeypatch.setattr(litert, "Interpreter", no_delegate)
    config = BenchConfig(
        inputs=(str(files["dense.tflite"]), str(files["pruned.tflite"])),
        runtimes=("tflite",),
        batches=(1,),
        threads=1,
        policy=FAST,
    )
    rows = run_bench(config).data["rows"]
    assert [(r["status"], r["provider"]) for r in rows] == [("ok", "builtin"), ("ok", "builtin")]


def test_tflite_provider_is_unknown_when_litert_hides_its_graph():
    from asp_export.bench.runtimes import tflite_delegate

    assert tflite_delegate(object()) == "unknown"


def test_tensorflow_times_a_compiled_function_of_the_keras_file(files):
    config = BenchConfig(
        inputs=(str(files["dense.keras"]), str(files["pruned.keras"])),
        runtimes=("tensorflow",),
        batches=(2,),
        threads=1,
        policy=FAST,
    )
    data = run_bench(config).data
    rows = data["rows"]
    assert [r["status"] for r in rows] == ["ok", "ok"], [r["error"] for r in rows]
    assert rows[0]["provider"] == "CPU:0"
    assert rows[0]["first_inference_ms"] is not None and rows[0]["load_ms"] > 0
    assert data["pairs"][0]["speedup_p50"] > 0


def test_runtime_that_cannot_read_a_format_is_not_asked_to(files):
    config = BenchConfig(
        inputs=(str(files["dense.tflite"]), str(files["dense.keras"])),
        runtimes=("all",),
        batches=(1,),
        threads=1,
        policy=FAST,
    )
    rows = run_bench(config).data["rows"]
    assert sorted((r["runtime"], r["format"]) for r in rows) == [
        ("tensorflow", "keras"),
        ("tflite", "tflite"),
    ]
