"""Surgery on real architectures: keras.applications CNNs built with weights=None.

For each: kill 30% of every group's removable channels, plan, apply; the smaller model
must equal the masked original within 1e-5 relative on random inputs, and params and
FLOPs must drop. Inputs are the smallest each architecture accepts, to keep this fast.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from asp_export import surgery
from asp_export.surgery.flops import count

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
    killed = surgery.make_dead_channels(model, 0.3, seed=0)

    p = surgery.plan(model, threshold=1e-6)
    small = surgery.apply(model, p)

    assert p.dropped == killed
    x = np.random.default_rng(0).normal(size=(2, side, side, 3)).astype("float32")
    want = surgery.mask(model, p)(x).numpy()
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
    killed = surgery.make_dead_channels(model, 0.3, seed=0)
    p = surgery.plan(model, threshold=1e-6)
    small = surgery.apply(model, p)
    assert p.dropped == killed > 0
    x = np.random.default_rng(0).normal(size=(2, *model.inputs[0].shape[1:])).astype("float32")
    want = surgery.mask(model, p)(x).numpy()
    got = small(x).numpy()
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    assert count(small).flops < count(model).flops and small.count_params() < model.count_params()
    path = tmp_path / "small.keras"
    small.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    np.testing.assert_allclose(loaded(x).numpy(), got, rtol=1e-5, atol=1e-7)
