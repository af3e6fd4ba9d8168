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
    from asp_export.prune import sparsity
    from asp_export.prune.custom_loop import StrategyLoop
    from asp_export.prune.train import compile_model

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
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    results = {}
    # "loop": asp's strategy.run loop (the one multi-worker training uses) instead of model.fit.
    single = tf.distribute.get_strategy()
    for name, strategy in (("single", single), ("mirrored", mirrored), ("loop", mirrored)):
        with strategy.scope():
            model = build()
        with sparsity.attach(model, config) as kernels:
            callbacks = [sparsity.make_proximal_callback(kernels, config)] if solver == "proximal" else []
            if name == "loop":
                loop = StrategyLoop(model, callbacks, epochs=1)
                loss = loop.run_epoch(0, tf.data.Dataset.from_tensor_slices((x, y)).batch(8))["loss"]
            else:
                history = model.fit(
                    x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=callbacks
                )
                loss = history.history["loss"][0]
        results[name] = {
            "replicas": strategy.num_replicas_in_sync,
            "loss": loss,
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
    for name in ("mirrored", "loop"):
        assert runs[name]["replicas"] == 2
        assert runs[name]["loss"] == pytest.approx(runs["single"]["loss"], rel=1e-5), name
        for single, replicated in zip(runs["single"]["weights"], runs[name]["weights"], strict=True):
            np.testing.assert_allclose(replicated, single, rtol=1e-5, atol=1e-6, err_msg=name)


# Several steps, BatchNormalization and dropout. Each replica keeps its own BN batch statistics and
# draws its dropout mask from the mirrored seed state, so a mirrored step equals a single-device
# step only when every replica sees the single device's batch: the two-replica global batch is each
# step's single-device batch twice. Then loss, weights, BN moving statistics and the dropout state
# must match after every step; a missed all-reduce, a wrong loss or penalty scaling, an unsynchronised
# BN statistic or dropout state, or a proximal step on the wrong count would drift apart.
_SEVERAL_STEPS = textwrap.dedent(
    """
    import itertools, json, re
    import numpy as np, tensorflow as tf
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0],
        [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()],
    )
    import keras
    from asp_export.prune import sparsity
    from asp_export.prune.custom_loop import StrategyLoop
    from asp_export.prune.train import compile_model

    steps, half = 3, 4
    rng = np.random.default_rng(0)
    x = rng.random((steps * half, 6, 6, 1), dtype=np.float32)
    y = rng.integers(0, 3, size=steps * half)
    twice = lambda a: np.concatenate([np.concatenate([a[i : i + half]] * 2) for i in range(0, len(a), half)])

    def build():
        keras.utils.set_random_seed(0)
        inputs = keras.Input((6, 6, 1))
        h = keras.layers.Conv2D(4, 3, name="conv")(inputs)
        h = keras.layers.BatchNormalization(name="bn")(h)
        h = keras.layers.Activation("relu")(h)
        h = keras.layers.Dropout(0.5, seed=1, name="drop")(keras.layers.Flatten()(h))
        h = keras.layers.Dense(5, name="fc")(h)
        model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(h))
        init = np.random.default_rng(1)
        model.set_weights([
            np.ones(w.shape, np.float32) if "variance" in v.path else init.normal(0, 0.3, w.shape)
            for v, w in zip(model.weights, model.get_weights())
        ])
        compile_model(model, 1e-2)
        return model

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    single = tf.distribute.get_strategy()
    results = {}
    for solver, (name, strategy) in itertools.product(
        ("subgradient", "proximal"), (("single", single), ("mirrored", mirrored), ("loop", mirrored))
    ):
        config = sparsity.SparsityConfig(
            method="gasl", solver=solver, lambda_group=0.1, lambda_var=1e-3, group_weighting="sqrt"
        )
        with strategy.scope():
            model = build()
        initial = {v.path: np.asarray(v.numpy()).tolist() for v in model.trainable_variables}
        xs, ys, batch = (x, y, half) if name == "single" else (twice(x), twice(y), 2 * half)
        with sparsity.attach(model, config) as kernels:
            callbacks = [sparsity.make_proximal_callback(kernels, config)] if solver == "proximal" else []
            if name == "loop":
                loop = StrategyLoop(model, callbacks, epochs=1)
                loss = loop.run_epoch(0, tf.data.Dataset.from_tensor_slices((xs, ys)).batch(batch))["loss"]
            else:
                history = model.fit(
                    xs, ys, batch_size=batch, epochs=1, shuffle=False, verbose=0, callbacks=callbacks
                )
                loss = history.history["loss"][0]
        results[solver, name] = {
            "replicas": strategy.num_replicas_in_sync,
            "steps": int(np.asarray(model.optimizer.iterations.numpy())),
            "loss": float(loss),
            "initial": initial,
            # "seed_generator_1" in a second model is "seed_generator" in the first
            "variables": {re.sub(r"_[0-9]+/", "/", v.path): v.numpy().tolist() for v in model.variables},
        }
    print(json.dumps({f"{solver} {name}": run for (solver, name), run in results.items()}))
    """
)


def test_several_steps_with_batch_norm_and_dropout_on_two_replicas_equal_one_device():
    """Both solvers in one process (a TensorFlow start is most of the time): ~20 s."""
    import numpy as np

    result = subprocess.run(
        [sys.executable, "-c", _SEVERAL_STEPS], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = json.loads(result.stdout.strip().splitlines()[-1])
    for solver in ("subgradient", "proximal"):
        single = runs[f"{solver} single"]
        assert single["steps"] == 3
        assert {"bn/moving_mean", "seed_generator/seed_generator_state"} <= set(single["variables"])
        for path in ("conv/kernel", "bn/gamma", "fc/kernel", "logits/kernel"):  # it really trained
            assert np.abs(np.subtract(single["initial"][path], single["variables"][path])).max() > 1e-4, path
        for name in ("mirrored", "loop"):
            run, label = runs[f"{solver} {name}"], f"{solver} {name}"
            assert (run["replicas"], run["steps"]) == (2, 3), label
            assert run["loss"] == pytest.approx(single["loss"], rel=1e-5), label
            assert list(run["variables"]) == list(single["variables"]), label
            for path, want in single["variables"].items():  # weights, BN statistics, dropout state
                np.testing.assert_allclose(
                    run["variables"][path], want, rtol=1e-5, atol=1e-6, err_msg=f"{label} {path}"
                )


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


def test_mixed_precision_trains_and_saves_a_float32_model(tmp_path, monkeypatch):
    import keras

    from asp_export.prune import train

    # nvidia-smi lists a GPU that TensorFlow cannot see (the CUDA wheels missing): a warning, not a fact
    monkeypatch.setattr(train, "visible_gpu", lambda: "NVIDIA A100-SXM4-40GB")

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
    assert config["devices"]["device"] == "CPU"
    assert "NVIDIA A100" in config["devices"]["warning"] and "TensorFlow sees no GPU" in result.output
    for name in ("dense.keras", "pruned.keras"):
        model = keras.saving.load_model(out / name, safe_mode=True, compile=False)
        assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}
    assert keras.mixed_precision.global_policy().name == "float32"  # restored for whatever runs next


_CLUSTER = '"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}'


@pytest.mark.parametrize(
    ("tf_config", "message"),
    [
        ("", "needs TF_CONFIG describing the cluster"),
        ("{not json", "TF_CONFIG is not valid JSON"),
        ('{"task": {"type": "worker", "index": 0}}', 'TF_CONFIG has no "cluster"'),
        ("{" + _CLUSTER + "}", 'TF_CONFIG needs "task"'),
        ("{" + _CLUSTER + ', "task": {"type": "worker", "index": 2}}', "task worker 2 is out of range"),
    ],
)
def test_multi_worker_with_a_bad_cluster_description_is_refused(tmp_path, monkeypatch, tf_config, message):
    """TensorFlow would wait forever for a worker that does not exist or trace back on bad JSON."""
    monkeypatch.setenv("TF_CONFIG", tf_config)
    args = [*_ONE_EPOCH_LENET, "--strategy", "multi-worker", "--out", str(tmp_path / "mw")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "mw").exists()


def test_training_on_the_cpu_of_a_gpu_machine_warns_once(monkeypatch, caplog):
    import logging

    import tensorflow as tf

    from asp_export.prune import train

    strategy = tf.distribute.get_strategy()
    monkeypatch.setattr(train, "visible_gpu", lambda: None)
    assert "warning" not in train.describe_devices(strategy)  # no GPU here: nothing to say
    monkeypatch.setattr(train, "visible_gpu", lambda: "NVIDIA A100-SXM4-40GB")
    monkeypatch.setattr(train, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="asp_export.prune.train"):
        first = train.describe_devices(strategy)
        second = train.describe_devices(strategy)  # config.json, then report.json
    assert first == second and first["device"] == "CPU"
    assert "nvidia-smi lists NVIDIA A100-SXM4-40GB but TensorFlow sees no GPU" in first["warning"]
    assert len([r for r in caplog.records if "TensorFlow sees no GPU" in r.getMessage()]) == 1


def test_tensorflow_grows_gpu_memory_instead_of_taking_it_all(monkeypatch, tmp_path):
    """Training and the bench's TensorFlow runtime set memory growth on every GPU before TensorFlow
    starts on it; otherwise it maps the whole GPU and an onnxruntime CUDA session in the same process
    (`asp bench --runtime all --profile`) finds no memory. The GPU list is the one stub."""
    import keras
    import tensorflow as tf

    from asp_export.bench.runtimes import load_tensorflow
    from asp_export.prune import train

    gpu = tf.config.PhysicalDevice(name="/physical_device:GPU:0", device_type="GPU")
    real_list = tf.config.list_physical_devices
    monkeypatch.setattr(
        tf.config, "list_physical_devices", lambda kind=None: [gpu] if kind == "GPU" else real_list(kind)
    )
    grown = []
    monkeypatch.setattr(
        tf.config.experimental, "set_memory_growth", lambda device, on: grown.append((device.name, on))
    )
    train.make_strategy("none")
    assert grown == [(gpu.name, True)]

    inputs = keras.Input((4,))
    keras.Model(inputs, keras.layers.Dense(2)(inputs)).save(tmp_path / "m.keras")
    loaded = load_tensorflow(tmp_path / "m.keras", batch=1, threads=1)
    assert grown == [(gpu.name, True)] * 2 and loaded.run()[0].shape == (1, 2)
