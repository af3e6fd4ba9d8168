"""Channel-dependency graph: every topology the surgery must honour, one small test each.

Each test builds a tiny model, kills random channels (zeroed kernels/biases, BN set to
output zero), plans with a tiny threshold, and checks that (1) exactly the killed channels
are dropped, (2) the rebuilt model equals the masked original within 1e-5 relative,
(3) params and FLOPs go down, (4) the file saves and loads in safe mode.
"""

from __future__ import annotations

import logging

import keras
import numpy as np
import pytest
from keras import layers as L

from asp_export import surgery
from asp_export.surgery.flops import count
from asp_export.surgery.graph import build_graph


def _x(model, n=3, seed=0):
    shape = (n,) + tuple(model.inputs[0].shape[1:])
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _rel(a, b) -> float:
    if isinstance(a, (list, tuple)):  # multi-output models
        return max(_rel(x, y) for x, y in zip(a, b, strict=True))
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def shrink_and_check(model, tmp_path=None, fraction=0.3, seed=0):
    """Kill channels, plan, apply; assert the surgery contract; return (plan, small)."""
    killed = surgery.make_dead_channels(model, fraction, seed=seed)
    p = surgery.plan(model, threshold=1e-6)
    assert p.dropped == killed > 0
    small = surgery.apply(model, p)
    masked = surgery.mask(model, p)
    x = _x(model)
    assert _rel(small(x), masked(x)) < 1e-5
    assert _rel(masked(x), model(x)) < 1e-5  # the killed channels really were dead
    assert small.count_params() < model.count_params()
    assert count(small).flops < count(model).flops
    if tmp_path is not None:
        path = tmp_path / "small.keras"
        small.save(path)
        loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
        assert _rel(loaded(x), small(x)) < 1e-6
    return p, small


def _group_of(g, layer):
    return next(grp for grp in g.groups if layer in grp.producers or layer in grp.members)


def test_residual_add_couples_both_branches(tmp_path):
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", name="conv1")(inp)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU(name="relu1")(x)
    y = L.Conv2D(8, 3, padding="same", name="conv3")(x)
    x = L.Add(name="add1")([x, y])
    x = L.Conv2D(4, 1, name="conv2")(x)
    out = L.Dense(3, name="logits")(L.GlobalAveragePooling2D()(x))
    model = keras.Model(inp, out)

    g = build_graph(model)
    grp = _group_of(g, "add1")
    assert set(grp.producers) == {"conv1", "conv3"}
    assert {"bn1", "relu1", "add1"} <= set(grp.members)
    assert str(grp) == "Group(conv1 + conv3 -> bn1 -> relu1 -> add1 | into conv3, conv2; 8 ch)"
    p, small = shrink_and_check(model, tmp_path)
    assert small.get_layer("conv1").filters == small.get_layer("conv3").filters


def test_channel_dies_only_if_dead_in_every_producer():
    inp = keras.Input((8, 8, 3))
    a = L.Conv2D(4, 1, name="a")(inp)
    b = L.Conv2D(4, 1, name="b")(inp)
    x = L.Add(name="add")([a, b])
    model = keras.Model(inp, L.Dense(2, name="logits")(L.Flatten()(x)))
    w = model.get_layer("a").get_weights()
    w[0][..., 1] = 0.0
    w[1][1] = 0.0
    model.get_layer("a").set_weights(w)
    assert surgery.plan(model, 1e-6).dropped == 0  # channel 1 still alive in b
    w = model.get_layer("b").get_weights()
    w[0][..., 1] = 0.0
    w[1][1] = 0.0
    model.get_layer("b").set_weights(w)
    p = surgery.plan(model, 1e-6)
    assert p.dropped == 1 and p.groups[_group_of(build_graph(model), "add").id].drop == [1]


def test_concat_maps_channel_offsets(tmp_path):
    inp = keras.Input((8, 8, 3))
    a = L.Conv2D(5, 1, name="branch_a")(inp)
    b = L.Conv2D(3, 3, padding="same", name="branch_b")(inp)
    x = L.Concatenate(name="cat")([a, b])
    x = L.BatchNormalization(name="cat_bn")(x)
    out = L.Dense(2, name="logits")(L.GlobalAveragePooling2D()(L.Conv2D(4, 1, name="after")(x)))
    model = keras.Model(inp, out)
    # kill channel 1 of branch_b = channel 5 + 1 of the concatenation
    w = model.get_layer("branch_b").get_weights()
    w[0][..., 1], w[1][1] = 0.0, 0.0
    model.get_layer("branch_b").set_weights(w)
    p = surgery.plan(model, 1e-6)
    grp = p.groups[_group_of(build_graph(model), "cat").id]
    assert grp.total == 8 and grp.drop == [6]
    small = surgery.apply(model, p)
    assert (
        small.get_layer("branch_b").filters == 2 and small.get_layer("after").get_weights()[0].shape[2] == 7
    )
    x = _x(model)
    assert _rel(small(x), surgery.mask(model, p)(x)) < 1e-5
    shrink_and_check(model, tmp_path, seed=1)


def test_depthwise_chain_couples_input_and_output(tmp_path):
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(6, 1, name="expand")(inp)
    x = L.DepthwiseConv2D(3, padding="same", name="dw1")(x)
    x = L.BatchNormalization(name="dw1_bn")(x)
    x = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw2")(x)
    x = L.Conv2D(4, 1, name="project")(x)
    model = keras.Model(inp, L.Dense(2, name="logits")(L.GlobalAveragePooling2D()(x)))
    g = build_graph(model)
    grp = _group_of(g, "dw1")
    assert grp.producers[:2] == ["expand", "dw1"] and grp.total == 6  # dw2's 12 outputs: 2 per channel
    p, small = shrink_and_check(model, tmp_path)
    kept = small.get_layer("expand").filters
    assert small.get_layer("dw2").get_weights()[0].shape[2] == kept
    assert small.get_layer("project").get_weights()[0].shape[2] == 2 * kept


def test_separable_input_sliced_output_produced(tmp_path):
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(6, 3, padding="same", name="stem")(inp)
    x = L.SeparableConv2D(8, 3, padding="same", depth_multiplier=2, name="sep1")(x)
    x = L.BatchNormalization(name="sep1_bn")(x)
    x = L.SeparableConv2D(5, 3, padding="same", name="sep2")(x)
    model = keras.Model(inp, L.Dense(2, name="logits")(L.GlobalAveragePooling2D()(x)))
    g = build_graph(model)
    assert _group_of(g, "sep1").producers == ["sep1"]
    assert "sep1" in _group_of(g, "stem").consumers
    shrink_and_check(model, tmp_path)


@pytest.mark.parametrize("style", ["dense_reshape", "conv_keepdims"])
def test_squeeze_excitation_gate_multiply_broadcast(tmp_path, style):
    c = 8
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(c, 3, padding="same", name="stem")(inp)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.Activation("swish", name="stem_act")(x)
    if style == "dense_reshape":
        s = L.GlobalAveragePooling2D(name="squeeze")(x)
        s = L.Dense(3, activation="relu", name="reduce")(s)
        s = L.Dense(c, activation="sigmoid", name="expand")(s)
        s = L.Reshape((1, 1, c), name="se_reshape")(s)
    else:
        s = L.GlobalAveragePooling2D(keepdims=True, name="squeeze")(x)
        s = L.Conv2D(3, 1, activation="relu", name="reduce")(s)
        s = L.Conv2D(c, 1, activation="sigmoid", name="expand")(s)
    x = L.Multiply(name="excite")([x, s])
    x = L.Conv2D(4, 1, name="after")(x)
    model = keras.Model(inp, L.Dense(2, name="logits")(L.GlobalAveragePooling2D()(x)))
    grp = _group_of(build_graph(model), "excite")
    assert set(grp.producers) == {"stem", "expand"} and grp.total == c
    p, small = shrink_and_check(model, tmp_path)
    if style == "dense_reshape":
        assert small.get_layer("se_reshape").target_shape[-1] == small.get_layer("stem").filters


def test_sigmoid_after_dead_conv_is_not_removable():
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 1, activation="sigmoid", name="gate")(inp)  # a dead channel outputs 0.5
    x = L.Conv2D(2, 1, name="after")(x)
    model = keras.Model(inp, L.Flatten()(x))
    w = model.get_layer("gate").get_weights()
    w[0][..., 0], w[1][0] = 0.0, 0.0
    model.get_layer("gate").set_weights(w)
    p = surgery.plan(model, 1e-6)
    assert p.dropped == 0
    assert "not zero where consumed" in p.groups[_group_of(build_graph(model), "gate").id].frozen_reason


def test_branch_one_tensor_feeds_two_convs(tmp_path):
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", name="trunk")(inp)
    x = L.ReLU(name="trunk_relu")(x)
    a = L.Conv2D(4, 1, name="left")(x)
    b = L.Conv2D(4, 3, padding="same", name="right")(x)
    out = L.Dense(2, name="logits")(L.GlobalAveragePooling2D()(L.Add()([a, b])))
    model = keras.Model(inp, out)
    grp = _group_of(build_graph(model), "trunk")
    assert grp.consumers == ["left", "right"]
    p, small = shrink_and_check(model, tmp_path)
    kept = small.get_layer("trunk").filters
    assert (
        small.get_layer("left").get_weights()[0].shape[2]
        == kept
        == small.get_layer("right").get_weights()[0].shape[2]
    )


def test_shared_layer_couples_its_calls(tmp_path):
    shared = L.Conv2D(6, 3, padding="same", name="shared")
    inp = keras.Input((8, 8, 6))
    a = shared(inp)
    b = shared(L.Conv2D(6, 1, name="mix")(inp))
    x = L.Concatenate(name="cat")([a, b])
    x = L.Conv2D(4, 1, name="after")(x)
    model = keras.Model(inp, L.Dense(2, name="logits")(L.GlobalAveragePooling2D()(x)))
    g = build_graph(model)
    assert len(g.flat.layers["shared"].calls) == 2
    grp = _group_of(g, "shared")
    assert grp.total == 6  # both calls' outputs are one group: same kernel
    p, small = shrink_and_check(model, tmp_path)
    assert small.get_layer("after").get_weights()[0].shape[2] == 2 * small.get_layer("shared").filters


def test_flatten_dense_rows_follow_channel_last_layout(tmp_path):
    inp = keras.Input((3, 3, 2))
    x = L.Conv2D(4, 1, name="conv")(inp)
    x = L.Flatten(name="flat")(x)
    out = L.Dense(2, name="logits")(x)
    model = keras.Model(inp, out)
    w = model.get_layer("conv").get_weights()
    w[0][..., 2], w[1][2] = 0.0, 0.0
    model.get_layer("conv").set_weights(w)
    p = surgery.plan(model, 1e-6)
    small = surgery.apply(model, p)
    dense_before = model.get_layer("logits").get_weights()[0]
    dense_after = small.get_layer("logits").get_weights()[0]
    rows = [(h * 3 + w_) * 4 + c for h in range(3) for w_ in range(3) for c in (0, 1, 3)]
    np.testing.assert_array_equal(dense_after, dense_before[rows])
    shrink_and_check(keras.Model(inp, L.Dense(2)(L.Flatten()(L.Conv2D(6, 1)(inp)))), tmp_path)


def test_nested_models_are_flattened(tmp_path):
    block_in = keras.Input((8, 8, 6))
    y = L.Conv2D(6, 3, padding="same", name="inner_conv")(block_in)
    y = L.BatchNormalization(name="inner_bn")(y)
    block = keras.Model(block_in, L.Add(name="inner_add")([block_in, y]), name="block")
    head = keras.Sequential([L.GlobalAveragePooling2D(name="gap"), L.Dense(3, name="logits")], name="head")
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(6, 3, padding="same", name="stem")(inp)
    x = block(x)
    x = block(x)  # a nested model used twice is a shared layer too
    model = keras.Model(inp, head(x))
    g = build_graph(model)
    assert g.flat.nested == ["block", "head"]
    assert len(g.flat.layers["inner_conv"].calls) == 2
    p, small = shrink_and_check(model, tmp_path)
    assert all(not isinstance(layer, keras.Model) for layer in small.layers)


def test_a_nested_model_called_twice_can_be_the_output():
    # Keras numbers a nested functional model's calls from 1 in output_layers, from 0 elsewhere.
    block_in = keras.Input((8, 8, 6))
    y = L.Conv2D(6, 3, padding="same", name="inner_conv")(block_in)
    block = keras.Model(block_in, L.Add(name="inner_add")([block_in, y]), name="block")
    inp = keras.Input((8, 8, 3))
    model = keras.Model(inp, block(block(L.Conv2D(6, 3, padding="same", name="stem")(inp))))
    g = build_graph(model)
    assert list(g.flat.outputs) == ["inner_add", 1, 0]  # the second call's output
    assert count(model).macs == 8 * 8 * 6 * 27 + 2 * 8 * 8 * 6 * 54
    flat = surgery.apply(model, surgery.plan(model, threshold=1e-6))  # every channel feeds the output
    assert _rel(flat(_x(model)), model(_x(model))) < 1e-6


def test_sequential_model_is_converted(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            L.Conv2D(8, 3, name="c1"),
            L.BatchNormalization(),
            L.ReLU(),
            L.Conv2D(6, 3, name="c2"),
            L.Flatten(),
            L.Dense(4, name="logits"),
        ]
    )
    shrink_and_check(model, tmp_path)


@keras.saving.register_keras_serializable(package="asp_tests")
class Scale(L.Layer):
    """A custom layer the channel graph does not know."""

    def call(self, x):
        return 2.0 * x


def test_unknown_layer_is_frozen_with_a_warning(caplog):
    inp = keras.Input((8, 8, 3))
    a = L.Conv2D(4, 1, name="before")(inp)
    x = Scale(name="mystery")(a)
    x = L.Conv2D(5, 1, name="after")(x)
    x = L.Conv2D(3, 1, name="free")(x)
    model = keras.Model(inp, L.Dense(2, name="logits")(L.GlobalAveragePooling2D()(x)))
    for name in ("before", "free"):
        w = model.get_layer(name).get_weights()
        w[0][..., 0], w[1][0] = 0.0, 0.0
        model.get_layer(name).set_weights(w)
    with caplog.at_level(logging.WARNING, logger="asp_export.surgery.graph"):
        p = surgery.plan(model, 1e-6)
    assert any("'mystery'" in r.getMessage() and "Scale" in r.getMessage() for r in caplog.records)
    g = build_graph(model)
    assert p.groups[_group_of(g, "before").id].drop == []  # feeds the unknown layer: kept
    assert p.groups[_group_of(g, "free").id].drop == [0]  # elsewhere pruning goes on
    small = surgery.apply(model, p)
    x = _x(model)
    assert _rel(small(x), surgery.mask(model, p)(x)) < 1e-5


def test_model_outputs_are_never_pruned():
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 1, name="features")(inp)
    logits = L.Dense(5, name="logits")(L.GlobalAveragePooling2D()(x))
    model = keras.Model(inp, [logits, x])
    w = model.get_layer("logits").get_weights()
    w[0][:, 2], w[1][2] = 0.0, 0.0
    model.get_layer("logits").set_weights(w)
    w = model.get_layer("features").get_weights()
    w[0][..., 1], w[1][1] = 0.0, 0.0
    model.get_layer("features").set_weights(w)
    p = surgery.plan(model, 1e-6)
    assert p.dropped == 0
    logits_group = next(g for g in p.groups if g.members.startswith("logits"))
    assert logits_group.frozen == logits_group.total == 5


def test_layer_normalization_over_channels_is_kept():
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 1, name="conv")(inp)
    x = L.LayerNormalization(name="ln")(x)
    model = keras.Model(inp, L.Dense(2, name="logits")(L.GlobalAveragePooling2D()(L.Conv2D(3, 1)(x))))
    w = model.get_layer("conv").get_weights()
    w[0][..., 0], w[1][0] = 0.0, 0.0
    model.get_layer("conv").set_weights(w)
    p = surgery.plan(model, 1e-6)
    assert p.dropped == 0
    assert "LayerNormalization" in p.groups[_group_of(build_graph(model), "conv").id].frozen_reason


@pytest.mark.parametrize(
    "name", ["tiny_cnn", "tiny_resnet", "tiny_mobilenet", "tiny_concat", "tiny_separable", "tiny_se"]
)
def test_tiny_zoo_models(name, keras_seed):
    from asp_export.models import create_model

    shrink_and_check(create_model(name))


def test_transpose_conv_and_shape_layers(tmp_path):
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(6, 3, padding="same", name="down")(inp)
    x = L.ZeroPadding2D(1, name="pad")(x)
    x = L.MaxPooling2D(2, name="pool")(x)
    x = L.Cropping2D(((0, 1), (0, 1)), name="crop")(x)
    x = L.UpSampling2D(2, name="up")(x)
    x = L.Conv2DTranspose(5, 3, strides=2, padding="same", name="deconv")(x)
    x = L.PReLU(shared_axes=[1, 2], name="prelu")(x)
    x = L.Dropout(0.2, name="drop")(x)
    x = L.Conv1D(4, 3, name="conv1d")(L.Reshape((-1, 5), name="to_seq")(x))
    model = keras.Model(inp, L.Dense(2, name="logits")(L.GlobalAveragePooling1D()(x)))
    grp = _group_of(build_graph(model), "deconv")
    assert grp.producers == ["deconv"] and {"prelu", "to_seq"} <= set(grp.members)
    shrink_and_check(model, tmp_path)


def test_nested_layer_names_that_collide_are_renamed():
    inner_in = keras.Input((8, 8, 4))
    inner = keras.Model(inner_in, L.Conv2D(4, 1, name="conv")(inner_in), name="inner")
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 1, name="conv")(inp)
    model = keras.Model(inp, L.Dense(2, name="logits")(L.Flatten()(inner(x))))
    g = build_graph(model)
    assert {"conv", "inner_conv"} <= set(g.flat.layers)
    shrink_and_check(model)


def test_keras_ops_in_a_functional_model(tmp_path, caplog):
    inp = keras.Input((8, 8, 3))
    a = L.Conv2D(6, 1, name="a")(inp)
    b = L.Conv2D(6, 3, padding="same", name="b")(inp)
    x = keras.ops.relu(a + b)  # ops, not layers: class names "Add" and "Relu" of keras.src.ops
    x = L.Conv2D(4, 1, name="after")(x)
    y = keras.ops.mean(x, axis=-1, keepdims=True)  # mixes channels: unknown, so frozen
    model = keras.Model(inp, [L.Dense(2, name="logits")(L.GlobalAveragePooling2D()(x)), y])
    with caplog.at_level(logging.WARNING, logger="asp_export.surgery.graph"):
        g = build_graph(model)
    assert set(_group_of(g, "a").producers) == {"a", "b"}
    assert any("Mean" in r.getMessage() for r in caplog.records)
    assert all(g.comp_frozen[_group_of(g, "after").comps])
    shrink_and_check(model, tmp_path)
