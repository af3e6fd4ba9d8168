"""GASL: the loss terms match METHOD.md, the guiding term spreads groups apart,
and the proximal step makes whole groups exactly zero."""

from __future__ import annotations

import numpy as np
import pytest

from asp_export.errors import UserInputError
from asp_export.prune import sparsity


def _tiny_model():
    import keras

    inputs = keras.Input((6, 6, 2), name="input")
    x = keras.layers.Conv2D(3, 3, name="conv")(inputs)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(x)
    x = keras.layers.SeparableConv2D(4, 1, name="sep")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(5, name="fc")(x)
    outputs = keras.layers.Dense(3, name="logits")(x)
    return keras.Model(inputs, outputs)


def test_groups_are_output_channels_and_the_classifier_is_skipped():
    model = _tiny_model()
    kernels = {k.name: k for k in sparsity.grouped_kernels(model)}
    assert list(kernels) == ["conv", "dw", "sep", "fc"]
    assert len(kernels["conv"].norms()) == 3
    assert len(kernels["dw"].norms()) == 3  # one group per input channel, across its multipliers
    assert len(kernels["sep"].norms()) == 4  # the pointwise filters
    assert len(kernels["fc"].norms()) == 5
    assert kernels["conv"].group_size == 3 * 3 * 2
    with_classifier = sparsity.grouped_kernels(model, include_classifier=True)
    assert [k.name for k in with_classifier][-1] == "logits"


def test_penalty_matches_a_hand_computation():
    import keras

    kernel = np.zeros((1, 1, 2, 3), dtype=np.float32)
    kernel[0, 0, :, 0] = [3.0, 4.0]  # ||g0|| = 5,  s0 = 25
    kernel[0, 0, :, 1] = [1.0, 0.0]  # ||g1|| = 1,  s1 = 1
    kernel[0, 0, :, 2] = [0.0, 0.0]  # ||g2|| = 0,  s2 = 0
    group_lasso, inverse_var = sparsity.penalty_terms(
        keras.ops.convert_to_tensor(kernel), (0, 1, 2), eps=1e-6
    )
    squared = np.array([25.0, 1.0, 0.0])
    expected_var = np.mean((squared - squared.mean()) ** 2)  # population variance, no sqrt on s_g
    assert float(group_lasso) == pytest.approx(6.0, rel=1e-5)
    assert float(inverse_var) == pytest.approx(1.0 / (expected_var + 1e-6), rel=1e-5)

    regularizer = sparsity.GASLRegularizer((0, 1, 2), lambda_group=1e-3, lambda_var=1e-2, eps=1e-6)
    total = float(regularizer(keras.ops.convert_to_tensor(kernel)))
    assert total == pytest.approx(1e-3 * 6.0 + 1e-2 / (expected_var + 1e-6), rel=1e-5)


def test_guiding_term_gradient_spreads_group_energies_apart():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    kernel = tf.Variable(rng.normal(1.0, 0.05, size=(3, 3, 4, 8)).astype(np.float32))
    variances = [np.var(np.sum(kernel.numpy() ** 2, axis=(0, 1, 2)))]
    for _ in range(30):
        with tf.GradientTape() as tape:
            _, inverse_var = sparsity.penalty_terms(kernel, (0, 1, 2), eps=1e-6)
        grad = tape.gradient(inverse_var, kernel)
        kernel.assign_sub(1e-2 * grad / (tf.norm(grad) + 1e-12))  # normalised descent step
        variances.append(np.var(np.sum(kernel.numpy() ** 2, axis=(0, 1, 2))))
    assert all(b > a for a, b in zip(variances, variances[1:], strict=False))
    assert variances[-1] > 2 * variances[0]


def test_soft_threshold_zeroes_small_groups_and_shrinks_large_ones():
    import keras

    kernel = np.zeros((1, 1, 2, 2), dtype=np.float32)
    kernel[0, 0, :, 0] = [0.3, 0.4]  # norm 0.5 < threshold: dies
    kernel[0, 0, :, 1] = [3.0, 4.0]  # norm 5: shrinks to 4
    out, _ = sparsity.soft_threshold_groups(keras.ops.convert_to_tensor(kernel), (0, 1, 2), 1.0)
    out = np.asarray(out)
    assert np.all(out[..., 0] == 0.0)
    np.testing.assert_allclose(out[0, 0, :, 1], [2.4, 3.2], rtol=1e-6)


def test_soft_threshold_can_spare_the_strongest_group():
    import keras

    kernel = np.full((1, 1, 1, 3), 0.5, dtype=np.float32)
    kernel[..., 2] = 0.6
    out, _ = sparsity.soft_threshold_groups(
        keras.ops.convert_to_tensor(kernel), (0, 1, 2), 1.0, spare_strongest=True
    )
    np.testing.assert_allclose(np.asarray(out)[0, 0, 0], [0.0, 0.0, 0.6], rtol=1e-6)


def test_a_group_includes_its_bias_and_the_batch_norm_after_it():
    """A zero filter with a bias or a BN beta still carries a constant: not prunable."""
    import keras

    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="logits")(x))
    (grouped,) = sparsity.grouped_kernels(model)
    names = sorted(v.path.split("/")[-2] + "/" + v.name for v in grouped.companions)
    assert names == ["bn/beta", "bn/gamma", "conv/bias"]

    kernel = np.zeros((1, 1, 1, 2), dtype=np.float32)
    kernel[..., 1] = 5.0
    bias = np.array([0.5, 0.0], dtype=np.float32)
    new_kernel, (new_bias,) = sparsity.soft_threshold_groups(
        keras.ops.convert_to_tensor(kernel), (0, 1, 2), 1.0, companions=[keras.ops.convert_to_tensor(bias)]
    )
    assert float(np.asarray(new_bias)[0]) == 0.0  # the joint norm 0.5 < 1: the whole group dies
    assert float(np.asarray(new_kernel)[0, 0, 0, 1]) == 4.0


def test_a_sequential_models_batch_norm_joins_the_group_and_a_nested_ones_does_not():
    """BN companions come from the flat graph: a Sequential is a chain; nested models stay out (as before)."""
    import keras

    seq = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, name="conv"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Flatten(),
            keras.layers.Dense(2, name="logits"),
        ]
    )
    (grouped,) = sparsity.grouped_kernels(seq)
    assert sorted(v.path.split("/")[-2] + "/" + v.name for v in grouped.companions) == [
        "bn/beta",
        "bn/gamma",
        "conv/bias",
    ]
    inner_in = keras.Input((8, 8, 1))
    inner = keras.Model(
        inner_in,
        keras.layers.BatchNormalization(name="inner_bn")(keras.layers.Conv2D(4, 3, name="c")(inner_in)),
    )
    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, keras.layers.Dense(2, name="logits")(keras.layers.Flatten()(inner(inputs))))
    (grouped,) = sparsity.grouped_kernels(model)
    assert [v.name for v in grouped.companions] == ["bias"]


def test_proximal_training_makes_useless_groups_exactly_zero(keras_seed):
    """A linear toy regression needs one of 8 hidden neurons: most must collapse to exact zeros."""
    import keras

    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 4)).astype(np.float32)
    y = (x[:, :1] * 2.0 - x[:, 1:2]).astype(np.float32)
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(8, name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1, name="out")(hidden))
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    config = sparsity.SparsityConfig(method="ssl", lambda_group=1.0, group_weighting="none")
    with sparsity.attach(model, config) as kernels:
        model.fit(
            x,
            y,
            epochs=40,
            batch_size=64,
            verbose=0,
            callbacks=[sparsity.make_proximal_callback(kernels, config)],
        )
    norms = sparsity.grouped_kernels(model)[0].norms()
    assert np.sum(norms == 0.0) >= 5, norms
    assert np.sum(norms > 0.0) >= 1
    assert float(model.evaluate(x, y, verbose=0)) < 0.05


def test_attach_is_undone_so_saved_models_are_plain_keras(tmp_path):
    import keras

    model = _tiny_model()
    with sparsity.attach(model, sparsity.SparsityConfig(solver="subgradient")):
        assert model.get_layer("conv").kernel.regularizer is not None
        assert len(model.losses) == 4
    assert model.get_layer("conv").kernel.regularizer is None
    assert model.losses == []
    model.save(tmp_path / "m.keras")
    keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)


def test_proximal_solver_puts_only_the_guiding_term_in_the_loss():
    model = _tiny_model()
    config = sparsity.SparsityConfig(method="gasl", solver="proximal", lambda_var=1e-2)
    with sparsity.attach(model, config):
        in_loss = float(sum(float(v) for v in model.losses))
    terms = sparsity.penalty_value(model, sparsity.SparsityConfig(method="gasl", lambda_group=0.0))
    assert in_loss == pytest.approx(terms["weighted"], rel=1e-4)


def test_ssl_has_no_guiding_term_and_none_has_no_penalty():
    model = _tiny_model()
    with sparsity.attach(model, sparsity.SparsityConfig(method="ssl", solver="proximal")):
        assert model.losses == []
    with sparsity.attach(model, sparsity.SparsityConfig(method="none", solver="subgradient")):
        assert model.losses == []


def test_elementwise_sparsity_counts_small_weights():
    model = _tiny_model()
    for grouped in sparsity.grouped_kernels(model):
        weights = np.asarray(grouped.variable).copy()
        weights.reshape(-1)[: weights.size // 2] = 0.0
        grouped.variable.assign(weights)
    assert sparsity.elementwise_sparsity(model) == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize(
    "kwargs", [{"method": "lasso"}, {"solver": "adamw"}, {"lambda_group": -1.0}, {"group_weighting": "log"}]
)
def test_bad_config_is_refused_with_a_message(kwargs):
    with pytest.raises(UserInputError):
        sparsity.SparsityConfig(**kwargs)


def test_proximal_step_waits_for_a_step_the_loss_scale_optimizer_really_took(keras_seed):
    """Under mixed precision a LossScaleOptimizer skips steps whose scaled gradients overflow, and a
    skipped step does not advance the inner Adam's iterations: a proximal step then would divide by
    the bias correction 1 - beta_2**0 = 0 and write NaN into every group (issue 18). With an initial
    scale of 2**24 the first steps overflow on a CPU too."""
    import keras

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 3, size=64)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        inputs = keras.Input((8, 8, 1))
        hidden = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
        hidden = keras.layers.Dense(6, activation="relu", name="fc")(keras.layers.Flatten()(hidden))
        outputs = keras.layers.Dense(3, name="logits", dtype="float32")(hidden)
        model = keras.Model(inputs, outputs)
        optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(1e-3), initial_scale=2**24)
        model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        config = sparsity.SparsityConfig(method="gasl", lambda_group=1e-2)
        with sparsity.attach(model, config) as kernels:
            history = model.fit(
                x,
                y,
                epochs=2,
                batch_size=8,
                verbose=0,
                callbacks=[sparsity.make_proximal_callback(kernels, config)],
            )
    finally:
        keras.mixed_precision.set_global_policy("float32")
    for weight in model.weights:
        assert np.all(np.isfinite(np.asarray(weight))), weight.path
    assert all(np.isfinite(history.history["loss"]))
    taken = int(np.asarray(optimizer.iterations))
    assert 0 < taken < 16, taken  # some steps were really skipped, and some were taken
