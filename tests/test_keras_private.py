"""Each Keras internal asp uses (asp_export/_keras_private.py) still means what asp assumes.

A failure here means the installed Keras changed one of them: update asp_export/_keras_private.py
(and the keras bound in pyproject.toml), not the test. Oracles are public: the model config, and
Adam's update rule computed by hand.
"""

from __future__ import annotations

import logging

import keras
import numpy as np
import pytest
from keras import layers

from asp_export import _keras_private as kp
from asp_export.errors import KerasInternalsChanged


def changed(what: str) -> str:
    return f"Keras {keras.__version__} changed {what}; update asp_export/_keras_private.py"


def test_output_layer_names_are_the_configs_output_layers():
    x = keras.Input((4,), name="x")
    head_a = layers.Dense(2, name="head_a")(x)
    head_b = layers.Dense(3, name="head_b")(layers.Dense(4, name="trunk")(x))
    model = keras.Model(x, [head_a, head_b])
    public = {ref[0] for ref in model.get_config()["output_layers"]}
    assert kp.output_layer_names(model) == public == {"head_a", "head_b"}, changed(
        "KerasTensor._keras_history"
    )


def test_adam_second_moments_are_the_squared_gradients_after_one_step():
    first = keras.Variable(np.array([1.0, -2.0, 3.0], dtype="float32"))
    second = keras.Variable(np.array([[0.5], [4.0]], dtype="float32"))
    grads = [np.array([0.5, -1.0, 2.0], dtype="float32"), np.array([[3.0], [-0.25]], dtype="float32")]
    optimizer = keras.optimizers.Adam(learning_rate=0.1, beta_2=0.9)
    pairs = zip(grads, [first, second], strict=True)
    optimizer.apply_gradients([(keras.ops.convert_to_tensor(g), v) for g, v in pairs])

    assert kp.has_adam_moments(optimizer), changed("Adam._velocities / beta_1 / beta_2 / epsilon")
    for variable, grad in zip([first, second], grads, strict=True):
        v = keras.ops.convert_to_numpy(kp.adam_second_moments(optimizer, variable))
        # Adam from v = 0: v <- beta_2 * v + (1 - beta_2) * g^2
        np.testing.assert_allclose(
            v, (1 - 0.9) * grad**2, rtol=1e-6, err_msg=changed("Adam._velocities order")
        )


def test_sgd_has_no_adam_moments():
    optimizer = keras.optimizers.SGD(learning_rate=0.1)
    optimizer.build([keras.Variable(np.zeros(2, dtype="float32"))])
    assert not kp.has_adam_moments(optimizer)


def test_saved_configs_name_layers_and_ops_with_the_modules_asp_reads():
    from asp_export.surgery.layers import get_handler

    x = keras.Input((8, 8, 3))
    model = keras.Model(x, keras.ops.relu(layers.Conv2D(4, 3, name="conv")(x)))
    modules = {entry["class_name"]: entry.get("module") for entry in model.get_config()["layers"]}
    conv, relu = modules["Conv2D"], modules["Relu"]
    assert conv in kp.PUBLIC_LAYER_MODULES or conv.startswith(kp.LAYER_MODULES), changed(
        f"layer module {conv}"
    )
    assert relu.startswith(kp.OP_MODULES), changed(f"op module {relu}")
    assert get_handler("Conv2D", conv) is not None and get_handler("Relu", relu) is not None


# --- the Adam fallback is an explicit, logged choice (prune/sparsity.py) -----------------------------


def _built(optimizer):
    optimizer.build([keras.Variable(np.zeros(2, dtype="float32"))])
    return optimizer


def test_the_proximal_scaling_is_chosen_explicitly_and_logged(caplog):
    from asp_export.prune.sparsity import proximal_scaling

    with caplog.at_level(logging.INFO, logger="asp_export.prune.sparsity"):
        assert proximal_scaling(_built(keras.optimizers.Adam())) == "adam"
        assert proximal_scaling(_built(keras.optimizers.SGD())) == "lr"
    lines = [r.getMessage() for r in caplog.records if "proximal step" in r.getMessage()]
    assert len(lines) == 2 and "Adam" in lines[0] and "SGD" in lines[1], lines


def test_an_adam_whose_moments_cannot_be_read_stops_instead_of_switching_algorithm(monkeypatch):
    from asp_export.prune.sparsity import proximal_scaling

    monkeypatch.setattr(kp, "has_adam_moments", lambda optimizer: False)  # as if Keras renamed them
    with pytest.raises(KerasInternalsChanged, match="_keras_private"):
        proximal_scaling(_built(keras.optimizers.Adam()))
