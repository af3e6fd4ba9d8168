"""asp_export.surgery.flops: MACs, FLOPs (= 2 x MACs) and params against hand computations."""

from __future__ import annotations

import logging

import keras
import pytest
from keras import layers

from asp_export.errors import UserInputError
from asp_export.surgery.flops import count, format_count


def _single(layer, input_shape):
    """A functional model around one layer, and the report row of that layer."""
    inputs = keras.Input(shape=input_shape, name="input")
    model = keras.Model(inputs, layer(inputs))
    report = count(model)
    (row,) = [r for r in report.per_layer if r.name == layer.name]
    return report, row


# ----------------------------------------------------------------------------- single layers


@pytest.mark.parametrize(
    ("kwargs", "macs", "out_shape"),
    [
        ({"padding": "same"}, 8 * 8 * 4 * (3 * 3 * 3), (8, 8, 4)),
        ({"padding": "valid"}, 6 * 6 * 4 * (3 * 3 * 3), (6, 6, 4)),
        ({"padding": "same", "strides": 2}, 4 * 4 * 4 * (3 * 3 * 3), (4, 4, 4)),
        ({"padding": "valid", "strides": 2}, 3 * 3 * 4 * (3 * 3 * 3), (3, 3, 4)),
    ],
    ids=["same", "valid", "same-stride2", "valid-stride2"],
)
@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "nobias"])
def test_conv2d_macs_are_output_pixels_times_filters_times_kernel_volume(kwargs, macs, out_shape, use_bias):
    report, row = _single(layers.Conv2D(4, 3, use_bias=use_bias, name="conv", **kwargs), (8, 8, 3))
    assert row.macs == macs
    assert row.flops == 2 * macs
    assert row.output_shape == out_shape
    # Bias adds are not counted; bias weights are.
    assert row.params == 3 * 3 * 3 * 4 + (4 if use_bias else 0)
    assert report.macs == macs and report.flops == 2 * macs


def test_grouped_conv_divides_input_channels_by_groups():
    _, row = _single(layers.Conv2D(6, 3, padding="same", groups=2, name="gconv"), (8, 8, 4))
    assert row.macs == 8 * 8 * 6 * (3 * 3 * 2)
    assert row.params == 3 * 3 * 2 * 6 + 6


def test_depthwise_with_multiplier_two():
    _, row = _single(layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw"), (8, 8, 3))
    assert row.output_shape == (8, 8, 6)
    assert row.macs == 8 * 8 * 6 * 9
    assert row.params == 3 * 3 * 3 * 2 + 6


def test_separable_is_depthwise_plus_pointwise():
    _, row = _single(layers.SeparableConv2D(5, 3, padding="same", name="sep"), (8, 8, 3))
    assert row.macs == 8 * 8 * 3 * 9 + 8 * 8 * 3 * 5
    assert row.params == 3 * 3 * 3 + 3 * 5 + 5


def test_separable_with_depth_multiplier_and_stride():
    _, row = _single(
        layers.SeparableConv2D(5, 3, strides=2, padding="same", depth_multiplier=2, name="sep"), (8, 8, 3)
    )
    assert row.macs == 4 * 4 * 6 * 9 + 4 * 4 * 6 * 5


def test_conv_transpose_counts_every_input_pixel_times_the_kernel():
    _, row = _single(layers.Conv2DTranspose(5, 3, strides=2, padding="same", name="up"), (4, 4, 3))
    assert row.output_shape == (8, 8, 5)
    assert row.macs == 4 * 4 * 3 * 9 * 5
    assert row.params == 3 * 3 * 5 * 3 + 5


def test_dense_on_a_vector_and_on_a_rank3_input():
    _, row = _single(layers.Dense(4, name="fc"), (10,))
    assert (row.macs, row.params) == (10 * 4, 10 * 4 + 4)
    _, row = _single(layers.Dense(7, name="fc3"), (5, 6))
    assert row.macs == 5 * 6 * 7  # Dense on the last axis, repeated over the 5 leading positions
    assert row.output_shape == (5, 7)


def test_conv1d_and_conv3d_use_the_same_rule():
    _, row = _single(layers.Conv1D(4, 3, padding="valid", name="c1"), (10, 2))
    assert row.macs == 8 * 4 * 3 * 2
    _, row = _single(layers.Conv3D(2, 3, padding="same", name="c3"), (4, 4, 4, 1))
    assert row.macs == 4 * 4 * 4 * 2 * 27


@pytest.mark.parametrize(
    "layer",
    [
        layers.BatchNormalization(name="x"),
        layers.LayerNormalization(name="x"),
        layers.ReLU(name="x"),
        layers.Activation("sigmoid", name="x"),
        layers.MaxPooling2D(2, name="x"),
        layers.AveragePooling2D(2, name="x"),
        layers.GlobalAveragePooling2D(name="x"),
        layers.GlobalMaxPooling2D(name="x"),
        layers.Flatten(name="x"),
        layers.Reshape((16, 8, 3), name="x"),
        layers.Dropout(0.5, name="x"),
        layers.ZeroPadding2D(1, name="x"),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_layers_without_weight_products_cost_zero_and_do_not_warn(layer, caplog):
    with caplog.at_level(logging.WARNING, logger="asp_export.surgery.flops"):
        report, row = _single(layer, (8, 16, 3))
    assert row.macs == 0 and report.flops == 0
    assert report.uncounted == ()
    assert not caplog.records


def test_bn_and_layer_norm_params_are_counted():
    _, row = _single(layers.BatchNormalization(name="bn"), (4, 4, 3))
    assert row.params == 4 * 3  # gamma, beta, moving mean, moving variance
    _, row = _single(layers.LayerNormalization(name="ln"), (4, 4, 3))
    assert row.params == 2 * 3


def test_merges_cost_zero():
    inputs = keras.Input(shape=(4, 4, 2), name="input")
    a = layers.Conv2D(2, 1, use_bias=False, name="a")(inputs)
    added = layers.Add(name="add")([inputs, a])
    multiplied = layers.Multiply(name="mul")([added, a])
    out = layers.Concatenate(name="cat")([added, multiplied])
    report = count(keras.Model(inputs, out))
    assert report.macs == 4 * 4 * 2 * 2  # only the 1x1 conv
    assert {r.name: r.output_shape for r in report.per_layer}["cat"] == (4, 4, 4)


# ----------------------------------------------------------------------------- graphs


def test_shared_layer_is_counted_once_per_call_and_its_params_once():
    shared = layers.Dense(3, name="shared")
    a = keras.Input(shape=(4,), name="a")
    b = keras.Input(shape=(4,), name="b")
    out = layers.Add(name="add")([shared(a), shared(b)])
    report = count(keras.Model([a, b], out))
    rows = [r for r in report.per_layer if r.name == "shared"]
    assert [r.macs for r in rows] == [12, 12]
    assert report.macs == 24
    assert [r.params for r in rows] == [15, 0]
    assert report.params == 15


def test_calls_of_a_shared_layer_in_another_model_are_not_counted():
    x = keras.Input(shape=(4,), name="x")
    shared = layers.Dense(4, name="shared")
    model = keras.Model(x, shared(shared(x)))
    keras.Model(x, shared(x))  # a third call, in another model
    report = count(model)
    assert [r.name for r in report.per_layer] == ["x", "shared", "shared"]
    assert report.macs == 2 * 16


def test_nested_model_is_recursed_and_its_layers_are_prefixed():
    inner_in = keras.Input(shape=(8, 8, 3), name="inner_input")
    inner_out = layers.Conv2D(4, 3, padding="valid", name="conv")(inner_in)
    inner = keras.Model(inner_in, inner_out, name="inner")
    inputs = keras.Input(shape=(8, 8, 3), name="input")
    x = inner(inputs)
    x = layers.Flatten(name="flatten")(x)
    out = layers.Dense(2, name="logits")(x)
    model = keras.Model(inputs, out)
    report = count(model)
    by_name = {r.name: r for r in report.per_layer}
    assert by_name["inner/conv"].macs == 6 * 6 * 4 * 27
    assert report.macs == 6 * 6 * 4 * 27 + 6 * 6 * 4 * 2
    assert report.params == model.count_params() == (27 * 4 + 4) + (144 * 2 + 2)


def test_nested_model_called_twice_is_counted_twice():
    inner_in = keras.Input(shape=(4,), name="inner_input")
    inner = keras.Model(inner_in, layers.Dense(4, name="fc")(inner_in), name="block")
    inputs = keras.Input(shape=(4,), name="input")
    model = keras.Model(inputs, inner(inner(inputs)))
    report = count(model)
    assert report.macs == 2 * 16
    assert report.params == 20


def test_sequential_model_is_counted_and_unbuilt_one_is_refused():
    seq = keras.Sequential([keras.Input(shape=(6,)), layers.Dense(5, name="a"), layers.Dense(2, name="b")])
    assert count(seq).macs == 6 * 5 + 5 * 2
    with pytest.raises(UserInputError, match="not built"):
        count(keras.Sequential([layers.Dense(2)]))


def test_undefined_spatial_size_is_a_clear_error():
    inputs = keras.Input(shape=(None, None, 3), name="input")
    model = keras.Model(inputs, layers.Conv2D(2, 3, name="conv")(inputs))
    with pytest.raises(UserInputError, match="undefined size"):
        count(model)


class _Scale(layers.Layer):
    """A custom layer with weights that asp knows nothing about."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

    def call(self, x):
        return x * self.scale


def test_unknown_layer_counts_zero_macs_with_a_warning_naming_it_but_keeps_its_params(caplog):
    inputs = keras.Input(shape=(4, 4, 3), name="input")
    x = _Scale(name="mystery")(inputs)
    model = keras.Model(inputs, layers.Conv2D(2, 1, use_bias=False, name="conv")(x))
    with caplog.at_level(logging.WARNING, logger="asp_export.surgery.flops"):
        report = count(model)
    assert report.uncounted == ("mystery",)
    assert "mystery (_Scale)" in caplog.text
    assert report.macs == 4 * 4 * 2 * 3
    assert report.params == 3 + 6


# ----------------------------------------------------------------------------- zoo and helpers


def test_lenet5_macs_and_params_match_the_hand_count():
    from asp_export.models import create_model

    report = count(create_model("lenet5", input_shape=(28, 28, 1), num_classes=10))
    assert report.macs == 20 * 24 * 24 * 25 + 50 * 8 * 8 * 20 * 25 + 800 * 500 + 500 * 10 == 2_293_000
    assert report.flops == 2 * report.macs
    # conv1 20*25+20, conv2 50*20*25+50, fc1 800*500+500, logits 500*10+10
    assert report.params == 520 + 25_050 + 400_500 + 5_010 == 431_080
    assert report.trainable_params == report.params


def test_gasl_mnist_params_and_macs_match_the_hand_count():
    from asp_export.models import create_model

    report = count(create_model("gasl-mnist"))
    conv1 = 5 * 5 * 1 * 64 + 64
    conv2 = 5 * 5 * 64 * 128 + 128
    fc1 = 7 * 7 * 128 * 512 + 512
    fc2 = 512 * 256 + 256
    logits = 256 * 10 + 10
    assert report.params == conv1 + conv2 + fc1 + fc2 + logits == 3_552_266
    assert report.macs == 28 * 28 * 64 * 25 + 14 * 14 * 128 * 25 * 64 + 6272 * 512 + 512 * 256 + 256 * 10


def test_report_rows_sum_to_the_totals_and_serialise():
    from asp_export.models import create_model

    report = count(create_model("tiny_resnet"))
    assert sum(r.macs for r in report.per_layer) == report.macs
    assert sum(r.params for r in report.per_layer) == report.params
    data = report.to_dict()
    assert data["flops"] == report.flops and len(data["per_layer"]) == len(report.per_layer)
    assert "total:" in report.table()


def test_bn_statistics_are_params_but_not_trainable():
    from asp_export.models import create_model

    model = create_model("tiny_cnn")
    report = count(model)
    bn_stats = 2 * (8 + 16)  # moving mean and variance of conv1_bn and conv2_bn
    assert report.params == model.count_params()
    assert report.trainable_params == report.params - bn_stats


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0"), (999, "999"), (1000, "1.00K"), (431_080, "431.08K"), (1_234_567, "1.23M"), (2.5e9, "2.50G")],
)
def test_format_count(n, text):
    assert format_count(n) == text


def test_keras_ops_in_a_functional_graph_are_counted_without_warnings(caplog):
    inputs = keras.Input(shape=(4, 4, 3), name="input")
    x = layers.Conv2D(3, 1, use_bias=False, name="conv")(inputs)
    y = keras.ops.relu(x + inputs) * 2.0
    flat = keras.ops.reshape(y, (-1, 48))
    z = keras.ops.matmul(flat, keras.ops.ones((48, 5)))
    with caplog.at_level(logging.WARNING, logger="asp_export.surgery.flops"):
        report = count(keras.Model(inputs, z))
    assert report.uncounted == ()
    assert not caplog.records
    assert report.macs == 4 * 4 * 3 * 3 + 48 * 5  # the 1x1 conv and the matmul


def test_keras_applications_mobilenetv2_matches_the_papers_300m_multiply_adds():
    model = keras.applications.MobileNetV2(weights=None)  # 224x224x3, 1000 classes, width 1.0
    report = count(model)
    # Sandler et al. 2018, Table 4: 300M multiply-adds, 3.4M parameters.
    assert abs(report.macs - 300e6) / 300e6 < 0.01
    assert report.params == model.count_params() == 3_538_984
    assert report.uncounted == ()


def test_a_model_loaded_from_a_keras_file_counts_the_same(tmp_path):
    from asp_export.models import create_model

    model = create_model("tiny_mobilenet")
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    assert count(loaded).to_dict() == count(model).to_dict()


def test_the_documented_public_path_is_the_counter_itself():
    """DESIGN.md and docs/models.md name `asp_export.flops.count`: the facade must be the same objects."""
    import asp_export.flops as public
    import asp_export.surgery.flops as impl

    assert public.__all__ == impl.__all__
    for name in impl.__all__:
        assert getattr(public, name) is getattr(impl, name), name
    model = keras.Sequential([keras.Input((4, 4, 1)), layers.Conv2D(2, 3, name="c")])
    assert public.count(model).macs == (2 * 2) * 2 * (3 * 3 * 1)  # 2x2 outputs x 2 filters x 3x3x1 taps
