"""Training: the GASL terms are scaled right under tf.distribute, mixed precision
trains and saves float32 models, and the strategy options fail clearly."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from asp_export.cli import cli

# Runs in a fresh interpreter: logical devices must be configured before TensorFlow starts.
_ONE_STEP = textwrap.dedent(
    """
    import json, sys
    import numpy as np, tensorflow as tf
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0],
        [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()],
    )
    import keras
    from asp_export import sparsity
    from asp_export.train import compile_model

    solver = sys.argv[1]
    rng = np.random.default_rng(0)
    x = rng.random((8, 6, 6, 1), dtype=np.float32)
    y = rng.integers(0, 3, size=8)

    init = [rng.normal(0, 0.3, size=s).astype(np.float32) for s in [(3, 3, 1, 4), (4,), (64, 3), (3,)]]

    def build():
        inputs = keras.Input((6, 6, 1))
        h = keras.layers.Conv2D(4, 3, name="conv")(inputs)
        h = keras.layers.Flatten()(h)
        model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(h))
        model.set_weights(init)  # both runs start from the same weights
        compile_model(model, 1e-2)
        return model

    config = sparsity.SparsityConfig(method="gasl", solver=solver, lambda_group=1.0, lambda_var=1e-3)
    results = {}
    for name, strategy in (("single", tf.distribute.get_strategy()),
                           ("mirrored", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))):
        with strategy.scope():
            model = build()
        with sparsity.attach(model, config) as kernels:
            callbacks = [sparsity.make_proximal_callback(kernels, config)] if solver == "proximal" else []
            history = model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=callbacks)
        results[name] = {
            "replicas": strategy.num_replicas_in_sync,
            "loss": history.history["loss"][0],
            "weights": [w.tolist() for w in model.get_weights()],
        }
    print(json.dumps(results))
    """
)


@pytest.mark.parametrize("solver", ["subgradient", "proximal"])
def test_one_gasl_step_on_two_replicas_equals_one_step_on_one_device(solver):
    import numpy as np

    result = subprocess.run(
        [sys.executable, "-c", _ONE_STEP, solver], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = json.loads(result.stdout.strip().splitlines()[-1])
    assert runs["mirrored"]["replicas"] == 2
    assert runs["mirrored"]["loss"] == pytest.approx(runs["single"]["loss"], rel=1e-5)
    for single, mirrored in zip(runs["single"]["weights"], runs["mirrored"]["weights"], strict=True):
        np.testing.assert_allclose(mirrored, single, rtol=1e-5, atol=1e-6)


_ONE_EPOCH_LENET = [
    "prune",
    "--model",
    "lenet5",
    "--data",
    "digits",
    "--input-shape",
    "16,16,1",
    "--epochs",
    "1",
]


def test_mixed_precision_trains_and_saves_a_float32_model(tmp_path):
    import keras

    out = tmp_path / "mp"
    args = [
        *_ONE_EPOCH_LENET,
        "--steps-per-epoch",
        "2",
        "--batch-size",
        "16",
        "--mixed-precision",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["options"]["train"]["mixed_precision"] is True
    for name in ("dense.keras", "pruned.keras"):
        model = keras.saving.load_model(out / name, safe_mode=True, compile=False)
        assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}
    assert keras.mixed_precision.global_policy().name == "float32"  # restored for whatever runs next


@pytest.mark.parametrize(
    ("experimental", "message"),
    [("", "not supported yet"), ("1", "TF_CONFIG")],
)
def test_multi_worker_is_refused_with_a_reason(tmp_path, monkeypatch, experimental, message):
    """Keras 3.15's fit fails under MultiWorkerMirroredStrategy (docs/distributed.md); with the
    experimental opt-in, a missing cluster description is the next thing asp names."""
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.setenv("ASP_EXPERIMENTAL_MULTI_WORKER", experimental)
    args = [*_ONE_EPOCH_LENET, "--strategy", "multi-worker", "--out", str(tmp_path / "mw")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "mw").exists()
