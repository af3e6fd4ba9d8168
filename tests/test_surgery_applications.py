"""Surgery on real architectures: keras.applications CNNs built with weights=None.

For each: kill 30% of every group's removable channels, plan, apply; the smaller model
must equal the ORIGINAL Keras model within 1e-5 relative on random inputs, and params and
FLOPs must drop. Inputs are the smallest each architecture accepts, to keep this fast.

The oracle is independent of the code under test: the channels are killed by `_kill`
below (plain numpy on the original layers' weights: kernel slice, bias, BN gamma and beta
set to 0), not by `surgery.mask` / `make_dead_channels` / the layer handlers, and the
expected output is the original model's own forward pass, not a model asp rebuilt. Only
the choice of WHICH channels are coupled (the channel groups) comes from asp's graph.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from asp_export import surgery
from asp_export.surgery.flops import count
from asp_export.surgery.graph import build_graph


def _kill(model, fraction: float, seed: int = 0) -> int:
    """Zero a random `fraction` of each group's removable channels in `model`'s own weights.

    BN statistics are randomised first (a fresh BN is the identity, which would hide a wrong
    slice). For each chosen channel c, by hand: Conv2D/Dense kernel[..., c] and bias[c];
    DepthwiseConv2D kernel[:, :, c // m, c % m] and bias[c]; SeparableConv2D pointwise
    kernel[..., c] and bias[c]; BatchNormalization gamma[c] = beta[c] = 0 (without gamma:
    moving_mean[c] = beta[c] = 0, its input being 0), so the channel is exactly 0 after it.
    Returns how many channels were killed.
    """
    rng = np.random.default_rng(seed)
    g = build_graph(model, warn=False)
    dead = np.zeros(g.n_comp, dtype=bool)
    for grp in g.groups:
        free = grp.comps[~g.comp_frozen[grp.comps]]
        k = min(int(round(fraction * free.size)), free.size - 1)
        if k > 0:
            dead[rng.choice(free, size=k, replace=False)] = True
    for rec in g.flat.layers.values():
        layer = rec.obj
        if layer is None or not layer.weights:
            continue
        kind = layer.__class__.__name__
        if kind == "BatchNormalization":  # gamma, var ~ U(0.5, 1.5); beta, mean ~ N(0, 0.1)
            for v in (layer.gamma, layer.moving_variance):
                if v is not None:
                    v.assign(rng.uniform(0.5, 1.5, v.shape).astype("float32"))
            for v in (layer.beta, layer.moving_mean):
                if v is not None:
                    v.assign(rng.normal(0, 0.1, v.shape).astype("float32"))
        if g.kinds.get(rec.name) not in ("producer", "depthwise", "channelwise") or not rec.calls:
            continue
        c = np.nonzero(dead[g.comp[g.ids(g.outs_of[(rec.name, 0)][0])]])[0]
        if not c.size:
            continue
        if kind == "BatchNormalization":  # its input channel is 0: (0 - mean) * gamma / sd + beta
            zeroed = (layer.gamma, layer.beta) if layer.scale else (layer.moving_mean, layer.beta)
            for v in zeroed:
                if v is not None:
                    value = v.numpy()
                    value[c] = 0.0
                    v.assign(value)
            continue
        w = [np.array(x) for x in layer.get_weights()]
        if kind in ("Conv2D", "Dense"):
            w[0][..., c] = 0.0
        elif kind == "DepthwiseConv2D":
            m = w[0].shape[-1]
            w[0][..., c // m, c % m] = 0.0
        elif kind == "SeparableConv2D":
            w[1][..., c] = 0.0
        else:
            raise AssertionError(f"{rec.name}: the test cannot zero a {kind} channel; add it to _kill")
        if getattr(layer, "use_bias", False):
            w[-1][c] = 0.0
        layer.set_weights(w)
    return int(dead.sum())


# name -> (input side, also save -> load in safe mode); saving the 90 MB ones costs seconds
APPLICATIONS = {
    "ResNet50": (32, False),
    "MobileNetV2": (32, True),
    "VGG16": (32, False),
    "InceptionV3": (75, False),
    "DenseNet121": (32, False),
    "EfficientNetB0": (32, True),
}
# Beyond the four the issue names; ~6 s CPU each, so they run with the slow tests.
_SLOW = {"DenseNet121", "EfficientNetB0"}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in _SLOW else n for n in APPLICATIONS]
)
def test_application_shrinks_exactly(name, tmp_path, keras_seed):
    side, save = APPLICATIONS[name]
    model = getattr(keras.applications, name)(weights=None, input_shape=(side, side, 3), classes=10)
    killed = _kill(model, 0.3, seed=0)

    p = surgery.plan(model, threshold=1e-6)
    small = surgery.apply(model, p)

    assert p.dropped == killed
    x = np.random.default_rng(0).normal(size=(2, side, side, 3)).astype("float32")
    want = model(x).numpy()  # the original model, its dead channels zeroed in its own weights
    got = small(x).numpy()
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    before, after = count(model), count(small)
    assert after.params < 0.8 * before.params
    assert after.flops < 0.8 * before.flops
    assert after.params == small.count_params()
    if save:
        path = tmp_path / f"{name}.keras"
        small.save(path)
        loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
        np.testing.assert_allclose(loaded(x).numpy(), got, rtol=1e-5, atol=1e-7)


def _zoo_names():
    from asp_export.models import list_models

    return [n for n in list_models() if not n.startswith("tiny_")]  # tiny_* are in test_graph.py


@pytest.mark.parametrize("name", _zoo_names())
def test_zoo_model_shrinks_exactly(name, tmp_path, keras_seed):
    from asp_export.models import create_model

    model = create_model(name)
    killed = _kill(model, 0.3, seed=0)
    p = surgery.plan(model, threshold=1e-6)
    small = surgery.apply(model, p)
    assert p.dropped == killed > 0
    x = np.random.default_rng(0).normal(size=(2, *model.inputs[0].shape[1:])).astype("float32")
    want = model(x).numpy()  # the original model, its dead channels zeroed in its own weights
    got = small(x).numpy()
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    assert count(small).flops < count(model).flops and small.count_params() < model.count_params()
    path = tmp_path / "small.keras"
    small.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    np.testing.assert_allclose(loaded(x).numpy(), got, rtol=1e-5, atol=1e-7)
