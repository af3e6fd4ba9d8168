"""The model zoo: every registered model builds, runs and follows the zoo's contract; `asp models`."""

from __future__ import annotations

import functools
import json

import keras
import numpy as np
import pytest
from asp_export.models import create_model, get_model_entry, list_models, register_model
from click.testing import CliRunner

from asp_export.cli import cli
from asp_export.errors import UserInputError
from asp_export.surgery.flops import count

PAPER_MODELS = [
    "gasl-mnist",
    "lenet5",
    "lenet-300-100",
    "vgg16-cifar",
    "resnet20",
    "resnet56",
    "mobilenetv2-cifar",
]
TINY_MODELS = ["tiny_cnn", "tiny_resnet", "tiny_mobilenet", "tiny_concat", "tiny_separable", "tiny_se"]


@functools.cache
def _default_model(name: str):
    """Each model at its defaults, built once per session (resnet56 and vgg16 take a while)."""
    return create_model(name)


def _layers_of(model, cls) -> list:
    return [layer for layer in model.layers if type(layer) is cls]


def test_the_zoo_has_the_issue_models_and_the_tiny_test_models():
    assert set(PAPER_MODELS + TINY_MODELS) <= set(list_models())
    assert list_models("tiny_*") == sorted(TINY_MODELS)


@pytest.mark.parametrize("name", list_models())
def test_every_model_builds_at_its_default_input_and_runs_a_forward_pass(name):
    entry = get_model_entry(name)
    model = _default_model(name)
    x = np.random.default_rng(0).random((2, *entry.default_input_shape), dtype=np.float32)
    y = np.asarray(model(x, training=False))
    assert y.shape == (2, entry.default_num_classes)
    assert np.isfinite(y).all()
    # The zoo contract: an input named "input", a final Dense "logits" without softmax.
    assert model.inputs[0].name == "input"
    assert tuple(model.inputs[0].shape[1:]) == entry.default_input_shape
    last = model.layers[-1]
    assert isinstance(last, keras.layers.Dense) and last.name == "logits"
    assert last.activation is keras.activations.linear
    # Layer names are unique and unnumbered (no Keras auto-names like "conv2d_3").
    names = [layer.name for layer in model.layers]
    assert len(names) == len(set(names))
    assert not [
        n for n in names if n.split("_")[0] in {"conv2d", "dense", "batch", "re", "add", "activation"}
    ]
    # The FLOPs counter agrees with Keras on params and sees every layer type of the zoo.
    report = count(model)
    assert report.params == model.count_params()
    assert report.uncounted == ()
    assert report.flops == 2 * report.macs > 0


@pytest.mark.parametrize("name", TINY_MODELS)
def test_tiny_models_are_small_and_build_with_the_same_layer_names_twice(name):
    first, second = create_model(name), create_model(name)
    assert first.count_params() < 50_000
    assert [layer.name for layer in first.layers] == [layer.name for layer in second.layers]
    assert get_model_entry(name).default_input_shape == (16, 16, 3)


@pytest.mark.parametrize(
    ("name", "input_shape", "num_classes"),
    [("lenet5", (32, 32, 3), 7), ("resnet20", (16, 16, 3), 100), ("tiny_se", (24, 24, 1), 3)],
)
def test_input_shape_and_num_classes_are_honoured(name, input_shape, num_classes):
    model = create_model(name, input_shape=input_shape, num_classes=num_classes)
    assert tuple(model.inputs[0].shape[1:]) == input_shape
    y = model(np.zeros((1, *input_shape), dtype=np.float32))
    assert tuple(y.shape) == (1, num_classes)


def test_lenet5_is_the_caffe_20_50_500_network():
    model = _default_model("lenet5")
    convs = _layers_of(model, keras.layers.Conv2D)
    assert [(c.filters, c.kernel_size, c.padding) for c in convs] == [
        (20, (5, 5), "valid"),
        (50, (5, 5), "valid"),
    ]
    assert [d.units for d in _layers_of(model, keras.layers.Dense)] == [500, 10]
    assert model.count_params() == 431_080


def test_lenet_300_100_is_an_mlp():
    model = _default_model("lenet-300-100")
    assert [d.units for d in _layers_of(model, keras.layers.Dense)] == [300, 100, 10]
    assert model.count_params() == (784 * 300 + 300) + (300 * 100 + 100) + (100 * 10 + 10)


def test_gasl_mnist_is_the_paper_network():
    model = _default_model("gasl-mnist")
    assert [c.filters for c in _layers_of(model, keras.layers.Conv2D)] == [64, 128]
    assert [d.units for d in _layers_of(model, keras.layers.Dense)] == [512, 256, 10]
    assert [d.rate for d in _layers_of(model, keras.layers.Dropout)] == [0.2, 0.2]


def test_vgg16_cifar_has_13_bn_convs_and_a_512_head():
    model = _default_model("vgg16-cifar")
    convs = _layers_of(model, keras.layers.Conv2D)
    assert [c.filters for c in convs] == [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    assert len(_layers_of(model, keras.layers.BatchNormalization)) == 14  # 13 convs + fc1
    assert len(_layers_of(model, keras.layers.MaxPooling2D)) == 5
    assert [d.units for d in _layers_of(model, keras.layers.Dense)] == [512, 10]


@pytest.mark.parametrize(("name", "n"), [("resnet20", 3), ("resnet56", 9)])
def test_cifar_resnets_have_6n_plus_2_layers_and_two_projection_shortcuts(name, n):
    model = _default_model(name)
    convs = _layers_of(model, keras.layers.Conv2D)
    shortcuts = [c for c in convs if c.name.endswith("_shortcut")]
    assert len(convs) - len(shortcuts) + 1 == 6 * n + 2  # stem + 2 per block + the classifier
    assert [(s.name, s.kernel_size, s.strides) for s in shortcuts] == [
        ("stage2_block1_shortcut", (1, 1), (2, 2)),
        ("stage3_block1_shortcut", (1, 1), (2, 2)),
    ]
    assert len(_layers_of(model, keras.layers.Add)) == 3 * n
    assert sorted({c.filters for c in convs}) == [16, 32, 64]
    assert tuple(model.get_layer("gap").input.shape[1:]) == (8, 8, 64)


def test_mobilenetv2_cifar_strides_and_residuals():
    model = _default_model("mobilenetv2-cifar")
    assert model.get_layer("stem").strides == (1, 1)
    assert len(_layers_of(model, keras.layers.DepthwiseConv2D)) == 17
    # Residual Adds where stride is 1 and channels match: 24x1, 32x2, 64x3, 96x2, 160x2.
    assert len(_layers_of(model, keras.layers.Add)) == 10
    assert tuple(model.get_layer("head").input.shape[1:]) == (4, 4, 320)
    assert model.get_layer("head").filters == 1280


@pytest.mark.parametrize(
    ("name", "kinds"),
    [
        ("tiny_resnet", {keras.layers.Add}),
        ("tiny_mobilenet", {keras.layers.DepthwiseConv2D, keras.layers.Add}),
        ("tiny_concat", {keras.layers.Concatenate}),
        ("tiny_separable", {keras.layers.SeparableConv2D}),
        ("tiny_se", {keras.layers.Multiply, keras.layers.Reshape, keras.layers.GlobalAveragePooling2D}),
        ("tiny_cnn", {keras.layers.Flatten, keras.layers.BatchNormalization, keras.layers.MaxPooling2D}),
    ],
)
def test_each_tiny_model_has_the_topology_it_is_named_for(name, kinds):
    model = _default_model(name)
    assert kinds <= {type(layer) for layer in model.layers}


def test_tiny_resnet_second_block_has_a_projection_shortcut():
    model = create_model("tiny_resnet")
    add = model.get_layer("block2_add")
    producers = {t._keras_history.operation.name for t in add.input}
    assert producers == {"block2_shortcut_bn", "block2_conv2_bn"}


def test_tiny_models_round_trip_through_a_keras_file_in_safe_mode(tmp_path):
    for name in TINY_MODELS:
        model = create_model(name)
        path = tmp_path / f"{name}.keras"
        model.save(path)
        loaded = keras.saving.load_model(path, safe_mode=True)
        x = np.random.default_rng(1).random((1, 16, 16, 3), dtype=np.float32)
        np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------- registry errors


def test_duplicate_registration_is_refused():
    with pytest.raises(ValueError, match="already registered"):

        @register_model("LeNet5", input_shape=(28, 28, 1))
        def another_lenet(input_shape, num_classes):  # pragma: no cover - never built
            raise AssertionError

    assert get_model_entry("lenet5").build.__name__ == "lenet5"


def test_unknown_model_name_suggests_the_closest():
    with pytest.raises(UserInputError, match=r"Did you mean 'resnet20'\?") as err:
        create_model("resnet2")
    assert "lenet5" in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"input_shape": (28, 28)}, "input_shape"), ({"num_classes": 1}, "num_classes")]
)
def test_bad_build_options_are_user_errors(kwargs, match):
    with pytest.raises(UserInputError, match=match):
        create_model("lenet5", **kwargs)


# ----------------------------------------------------------------------------- asp models


def test_asp_models_lists_models_with_params_and_flops():
    result = CliRunner().invoke(cli, ["models", "--filter", "lenet*"])
    assert result.exit_code == 0, result.output
    lenet = next(line for line in result.output.splitlines() if line.startswith("lenet5 "))
    assert "28x28x1" in lenet and "431.08K" in lenet and "4.59M" in lenet
    assert "lenet-300-100" in result.output
    assert "FLOPs = 2 x multiply-accumulates" in result.output


def test_asp_models_hides_tiny_models_unless_all():
    hidden = CliRunner().invoke(cli, ["models", "--filter", "tiny_s*"])
    assert hidden.exit_code == 0 and "tiny_se" not in hidden.output
    assert "No model matches" in hidden.output
    shown = CliRunner().invoke(cli, ["models", "--filter", "tiny_s*", "--all"])
    assert shown.exit_code == 0
    assert "tiny_se " in shown.output and "tiny_separable " in shown.output


def test_asp_models_json_at_a_given_shape_with_tiny_models():
    args = [
        "models",
        "--all",
        "--filter",
        "tiny_c*",
        "--input-shape",
        "8,8,1",
        "--num-classes",
        "4",
        "--format",
        "json",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    rows = {row["name"]: row for row in data["models"]}
    assert set(rows) == {"tiny_cnn", "tiny_concat"}
    cnn = create_model("tiny_cnn", input_shape=(8, 8, 1), num_classes=4)
    assert rows["tiny_cnn"]["params"] == cnn.count_params()
    assert rows["tiny_cnn"]["flops"] == count(cnn).flops
    assert rows["tiny_cnn"]["input_shape"] == [8, 8, 1]


def test_asp_models_reports_a_model_that_does_not_build_at_the_shape():
    result = CliRunner().invoke(cli, ["models", "--filter", "lenet5", "--input-shape", "8,8,1"])
    assert result.exit_code == 0, result.output
    assert "does not build at this input" in result.output


@pytest.mark.parametrize("shape", ["32,32", "a,b,c", "0,32,3"])
def test_asp_models_rejects_a_bad_input_shape(shape):
    result = CliRunner().invoke(cli, ["models", "--input-shape", shape])
    assert result.exit_code == 2
    assert "H,W,C" in result.output
