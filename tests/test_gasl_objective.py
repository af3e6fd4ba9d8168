"""The whole GASL objective of a two-layer model, computed by hand in numpy (issue 13 item 4).

    L = CE + lambda_group * sum_l w_l * sum_g ||W_g||  +  lambda_var * sum_l 1 / (Var_l + eps)

w_l = 1 (``none``) or sqrt(group size) (``sqrt``); Var_l is the population variance of the
squared group norms. The proximal solver puts only the guiding term in the loss and applies
the group lasso by soft-thresholding (threshold lambda_group * w_l * lr with SGD, kernel slice
+ bias + BN gamma/beta as one group, each layer's strongest group spared); the subgradient
solver puts both terms in the loss. Nothing below calls asp's arithmetic for the oracle.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from asp_export.prune import sparsity

LAMBDA_GROUP, LAMBDA_VAR, EPS, LR = 0.03, 0.02, 1e-6, 0.5


def _two_layer_model():
    """conv (3x3x2 -> 3 filters, bias, BN after it) -> fc (12 -> 4) -> logits (not regularised)."""
    rng = np.random.default_rng(1)
    inputs = keras.Input((4, 4, 2))
    x = keras.layers.Conv2D(3, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Dense(4, name="fc")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, keras.layers.Dense(2, name="logits")(x))
    for layer in model.layers:  # distinct, non-trivial values everywhere (BN starts at gamma 1, beta 0)
        layer.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in layer.get_weights()])
    bn = model.get_layer("bn")
    bn.set_weights([*bn.get_weights()[:3], np.abs(bn.get_weights()[3]) + 0.5])
    return model


def _hand_terms(model, weighting):
    """Per regularised layer: (w_l * sum_g ||W_g||, 1/(Var_l + eps)), by numpy."""
    conv = model.get_layer("conv").kernel.numpy().astype(np.float64)  # (3, 3, 2, 3): a group is [..., c]
    fc = model.get_layer("fc").kernel.numpy().astype(np.float64)  # (12, 4): a group is [:, c]
    out = []
    for kernel, size in ((conv, 3 * 3 * 2), (fc, 12)):
        squared = np.array([np.sum(kernel[..., c] ** 2) for c in range(kernel.shape[-1])])
        w = np.sqrt(size) if weighting == "sqrt" else 1.0
        out.append((w * np.sum(np.sqrt(squared)), 1.0 / (np.mean((squared - squared.mean()) ** 2) + EPS)))
    return out


def _config(solver, weighting):
    return sparsity.SparsityConfig(
        method="gasl",
        lambda_group=LAMBDA_GROUP,
        lambda_var=LAMBDA_VAR,
        solver=solver,
        group_weighting=weighting,
        eps=EPS,
    )


@pytest.mark.parametrize("weighting", ["none", "sqrt"])
@pytest.mark.parametrize("solver", ["proximal", "subgradient"])
def test_loss_terms_equal_the_hand_computed_objective(solver, weighting):
    model = _two_layer_model()
    terms = _hand_terms(model, weighting)
    guide = LAMBDA_VAR * sum(inv for _, inv in terms)
    lasso = LAMBDA_GROUP * sum(gl for gl, _ in terms)
    with sparsity.attach(model, _config(solver, weighting)):
        in_loss = sum(float(v) for v in model.losses)
        assert len(model.losses) == 2  # conv and fc; the classifier is not regularised
    want = guide + (lasso if solver == "subgradient" else 0.0)
    assert in_loss == pytest.approx(want, rel=1e-5)
    assert sparsity.penalty_value(model, _config(solver, weighting))["weighted"] == pytest.approx(
        lasso + guide, rel=1e-5
    )
    # the two weightings really differ here (conv: sqrt(18), fc: sqrt(12)), so a dropped w_l shows
    assert _hand_terms(model, "sqrt")[0][0] > 4 * _hand_terms(model, "none")[0][0]


@pytest.mark.parametrize("weighting", ["none", "sqrt"])
def test_proximal_step_equals_a_hand_soft_threshold(weighting):
    """One SGD step with zero gradients (weights unchanged, iterations + 1), then the callback."""
    model = _two_layer_model()
    config = _config("proximal", weighting)
    before = {v.path: v.numpy().astype(np.float64) for v in model.weights}
    optimizer = keras.optimizers.SGD(LR)
    model.compile(optimizer, "mse")
    with sparsity.attach(model, config) as kernels:
        callback = sparsity.make_proximal_callback(kernels, config)
        callback.set_model(model)
        callback.on_train_begin()
        optimizer.apply_gradients([(np.zeros(v.shape, "float32"), v) for v in model.trainable_variables])
        callback.on_train_batch_end(0)

    def soft(kernel, companions, size):
        """Shrink every group (kernel[..., c] + companions[c]) by t; spare the strongest."""
        t = LAMBDA_GROUP * (np.sqrt(size) if weighting == "sqrt" else 1.0) * LR
        channels = range(kernel.shape[-1])
        norms = np.sqrt([np.sum(kernel[..., c] ** 2) + sum(v[c] ** 2 for v in companions) for c in channels])
        scale = np.where(norms >= norms.max(), 1.0, np.maximum(0.0, 1.0 - t / norms))
        return kernel * scale, [v * scale for v in companions]

    conv, (bias, gamma, beta) = soft(
        before["conv/kernel"], [before["conv/bias"], before["bn/gamma"], before["bn/beta"]], 18
    )
    fc, (fc_bias,) = soft(before["fc/kernel"], [before["fc/bias"]], 12)
    want = {
        "conv/kernel": conv,
        "conv/bias": bias,
        "bn/gamma": gamma,
        "bn/beta": beta,
        "fc/kernel": fc,
        "fc/bias": fc_bias,
    }
    for v in model.weights:
        expected = want.get(v.path, before[v.path])  # logits, BN statistics: untouched
        np.testing.assert_allclose(v.numpy(), expected, rtol=1e-5, atol=1e-7, err_msg=v.path)
    shrunk = [p for p in want if not np.allclose(want[p], before[p])]
    assert len(shrunk) == len(want)  # the step really changed every group member (not a no-op)
