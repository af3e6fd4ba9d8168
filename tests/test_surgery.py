"""Surgery API and `asp shrink`: plan changes nothing, apply makes a new model, options work."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from keras import layers as L

from asp_export import surgery
from asp_export.cli import cli
from asp_export.errors import ModelLoadError, UserInputError
from asp_export.keras_io import load_keras_model


def _model(width=16):
    inp = keras.Input((8, 8, 3), name="image")
    x = L.Conv2D(width, 3, padding="same", name="conv1")(inp)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU(name="relu1")(x)
    x = L.Conv2D(width, 3, padding="same", name="conv2")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, L.Dense(4, name="logits")(x), name="toy")


def _kill(model, layer, channels):
    w = model.get_layer(layer).get_weights()
    w[0][..., channels] = 0.0
    w[1][channels] = 0.0
    model.get_layer(layer).set_weights(w)


def _scale(model, layer, factors):
    w = model.get_layer(layer).get_weights()
    w[0] = w[0] * np.asarray(factors, dtype=w[0].dtype)
    model.get_layer(layer).set_weights(w)


def _x(n=2):
    return np.random.default_rng(0).normal(size=(n, 8, 8, 3)).astype("float32")


def test_plan_changes_nothing():
    model = _model()
    _kill(model, "conv1", [0, 3])
    before = [w.copy() for w in model.get_weights()]
    p = surgery.plan(model, threshold=1e-6)
    assert p.dropped == 2
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_apply_returns_a_new_model_and_leaves_the_input_untouched():
    model = _model()
    _kill(model, "conv1", [1, 2, 5])
    x = _x()
    y_before = model(x).numpy()
    p = surgery.plan(model, threshold=1e-6)
    small = surgery.apply(model, p)
    assert small is not model
    assert model.get_layer("conv1").filters == 16 and small.get_layer("conv1").filters == 13
    assert small.get_layer("conv2").get_weights()[0].shape[2] == 13
    assert small.get_layer("bn1").get_weights()[0].shape == (13,)
    np.testing.assert_array_equal(model(x).numpy(), y_before)
    np.testing.assert_allclose(small(x), surgery.mask(model, p)(x), rtol=1e-5, atol=1e-6)


def test_bn_beta_keeps_a_dead_kernel_alive():
    model = _model()
    _kill(model, "conv1", [0, 1])
    w = model.get_layer("bn1").get_weights()
    w[1][0] = 0.5  # beta: channel 0 outputs a constant 0.5 into conv2, so it is not dead
    model.get_layer("bn1").set_weights(w)
    assert surgery.plan(model, 1e-6).groups[1].drop == [1]


def test_nothing_to_drop_returns_an_equivalent_copy():
    model = _model()
    p = surgery.plan(model, threshold=0.0)
    assert p.dropped == 0
    small = surgery.apply(model, p)
    assert small.count_params() == model.count_params()
    np.testing.assert_allclose(small(_x()), model(_x()), rtol=1e-6, atol=1e-6)


def test_round_to_keeps_back_the_strongest_channels():
    model = _model()
    w = model.get_layer("conv1").get_weights()
    # 6 strong channels, then 10 weak ones (norm < 1e-2) in increasing strength
    w[0] = np.ones_like(w[0]) * np.array([1.0] * 6 + [1e-4 * (1 + i) for i in range(10)], dtype="float32")
    w[1][:] = 0.0
    model.get_layer("conv1").set_weights(w)
    p = surgery.plan(model, threshold=1e-2)
    assert len(p.groups[1].keep) == 6
    p8 = surgery.plan(model, threshold=1e-2, round_to=8)
    assert p8.groups[1].keep == [0, 1, 2, 3, 4, 5, 14, 15]  # the two strongest of the weak ones
    assert {"name": "conv1", "before": 16, "after": 8} in p8.layers


def test_min_channels_and_exclude():
    model = _model()
    _kill(model, "conv1", list(range(16)))
    assert len(surgery.plan(model, 1e-6).groups[1].keep) == 1
    assert len(surgery.plan(model, 1e-6, min_channels=4).groups[1].keep) == 4
    p = surgery.plan(model, 1e-6, exclude=["conv1"])
    assert p.groups[1].drop == [] and "excluded" in p.groups[1].frozen_reason
    with pytest.raises(UserInputError, match="conv1"):
        surgery.plan(model, 1e-6, exclude=["conv_1"])


def test_relative_threshold_is_a_fraction_of_the_group_max():
    model = _model()
    _scale(model, "conv1", [1.0] * 12 + [0.01] * 4)
    w = model.get_layer("conv1").get_weights()
    w[1][:] = 0.0
    model.get_layer("conv1").set_weights(w)
    norms = np.linalg.norm(model.get_layer("conv1").get_weights()[0].reshape(-1, 16), axis=0)
    assert norms[12:].max() < 0.05 * norms[:12].min()
    p = surgery.plan(model, threshold=0.05, relative=True)
    assert p.groups[1].drop == [12, 13, 14, 15] and p.relative


def test_norms_override_the_kernel_norms():
    model = _model()
    norms = np.ones(16)
    norms[[2, 7]] = 0.0
    w = model.get_layer("conv1").get_weights()
    w[1][:] = 0.0
    model.get_layer("conv1").set_weights(w)
    assert surgery.plan(model, 1e-6, norms={"conv1": norms}).groups[1].drop == [2, 7]
    with pytest.raises(UserInputError, match="16 output channels"):
        surgery.plan(model, 1e-6, norms={"conv1": np.ones(3)})
    with pytest.raises(UserInputError, match="does not produce channels"):
        surgery.plan(model, 1e-6, norms={"bn1": np.ones(16)})


def test_bad_options_are_user_errors():
    model = _model()
    for kwargs in ({"threshold": -1.0}, {"round_to": 0}, {"min_channels": 0}):
        with pytest.raises(UserInputError):
            surgery.plan(model, **{"threshold": 1e-3, **kwargs})


def test_plan_round_trips_through_json(tmp_path):
    model = _model()
    _kill(model, "conv2", [4])
    p = surgery.plan(model, 1e-6, round_to=1)
    text = json.dumps(p.to_dict())
    q = surgery.Plan.from_dict(json.loads(text))
    assert q == p and q.to_dict()["schema_version"] == 1
    assert "drop 1 of" in q.summary() and "conv2" in str(q)
    small = surgery.apply(model, q)
    assert small.get_layer("conv2").filters == 15
    with pytest.raises(UserInputError, match="does not match"):
        surgery.apply(_model(width=8), q)


def test_prune_model_convenience():
    model = _model()
    _kill(model, "conv1", [3])
    small, p = surgery.prune_model(model, threshold=1e-6)
    assert p.dropped == 1 and small.get_layer("conv1").filters == 15


# ------------------------------------------------------------------------------ asp shrink
@pytest.fixture
def model_file(tmp_path):
    model = _model()
    _kill(model, "conv1", [0, 1, 2, 3])
    path = tmp_path / "model.keras"
    model.save(path)
    return path


def test_shrink_dry_run_prints_the_table_and_writes_nothing(model_file, tmp_path):
    result = CliRunner().invoke(
        cli, ["shrink", str(model_file), "--threshold", "1e-6", "--round-to", "1", "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    assert "conv1 -> bn1 -> relu1" in result.output
    assert "drop 4 of" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]


def test_shrink_writes_the_model_and_a_report(model_file, tmp_path):
    out = tmp_path / "small.keras"
    result = CliRunner().invoke(
        cli, ["shrink", str(model_file), "-t", "1e-6", "--round-to", "1", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output
    small = keras.saving.load_model(out, safe_mode=True, compile=False)
    assert small.get_layer("conv1").filters == 12
    report = json.loads((tmp_path / "small.report.json").read_text())
    assert report["after"]["params"] < report["before"]["params"]
    assert report["after"]["flops"] < report["before"]["flops"]
    assert report["plan"]["schema_version"] == 1


def test_shrink_rounds_kept_widths_to_multiples_of_8_by_default(tmp_path):
    model = _model()
    _kill(model, "conv1", list(range(6)))  # 10 of 16 live -> rounded up to 16; 9 dead -> 7 live -> 8
    path = tmp_path / "model.keras"
    model.save(path)
    out = tmp_path / "small.keras"
    assert CliRunner().invoke(cli, ["shrink", str(path), "-t", "1e-6", "--out", str(out)]).exit_code == 0
    assert keras.saving.load_model(out, safe_mode=True, compile=False).get_layer("conv1").filters == 16
    _kill(model, "conv1", list(range(9)))
    model.save(path)
    assert (
        CliRunner().invoke(cli, ["shrink", str(path), "-t", "1e-6", "--out", str(out), "--force"]).exit_code
        == 0
    )
    assert keras.saving.load_model(out, safe_mode=True, compile=False).get_layer("conv1").filters == 8


def test_shrink_refuses_to_overwrite_without_force(model_file, tmp_path):
    out = tmp_path / "small.keras"
    out.write_bytes(b"precious")
    result = CliRunner().invoke(cli, ["shrink", str(model_file), "-t", "1e-6", "--out", str(out)])
    assert result.exit_code == 2
    assert "--force" in result.output
    assert out.read_bytes() == b"precious"
    result = CliRunner().invoke(cli, ["shrink", str(model_file), "-t", "1e-6", "--out", str(out), "--force"])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() != b"precious"


def test_shrink_refuses_a_lambda_model(tmp_path):
    inp = keras.Input((4,))
    model = keras.Model(inp, L.Lambda(lambda t: t * 2.0)(L.Dense(3)(inp)))
    path = tmp_path / "lambda.keras"
    model.save(path)
    result = CliRunner().invoke(cli, ["shrink", str(path), "-t", "1e-3", "--dry-run"])
    assert result.exit_code == 2
    assert "Lambda" in result.output and "Traceback" not in result.output


def test_loader_refuses_wrong_suffix_and_truncated_files(model_file, tmp_path):
    h5 = tmp_path / "x.h5"
    h5.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="not a .keras file"):
        load_keras_model(h5)
    cut = tmp_path / "cut.keras"
    cut.write_bytes(model_file.read_bytes()[:200])
    with pytest.raises(ModelLoadError, match="truncated"):
        load_keras_model(cut)
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_keras_model(tmp_path / "missing.keras")


def test_loader_refuses_an_unregistered_custom_layer(tmp_path):
    @keras.saving.register_keras_serializable(package="asp_gone")
    class Gone(L.Layer):
        def call(self, x):
            return x

    inp = keras.Input((4,))
    path = tmp_path / "custom.keras"
    keras.Model(inp, Gone()(L.Dense(3)(inp))).save(path)
    del keras.saving.get_custom_objects()["asp_gone>Gone"]
    with pytest.raises(ModelLoadError, match="custom layer"):
        load_keras_model(path)


def test_unbuilt_sequential_is_a_user_error():
    with pytest.raises(UserInputError, match="build it first"):
        surgery.plan(keras.Sequential([L.Dense(3)]), 1e-3)
