"""Every use of Keras internals asp makes, in one place; tests/test_keras_private.py pins each one.

Keras 3 offers no public API for these facts, and a Keras release may rename them. Each entry has a
test that fails naming the entry ("Keras X.Y changed ...; update asp_export/_keras_private.py"), and
pyproject.toml bounds keras to the minor the suite ran on, so a change is loud, never a silent
change of behaviour. Keras is imported inside the functions only.

- `output_layer_names` (prune/sparsity.py, skip the classifier): `KerasTensor._keras_history`.
- `has_adam_moments`, `adam_second_moments` (prune/sparsity.py, proximal step): `Adam._velocities`,
  `Optimizer._get_variable_index`.
- `LAYER_MODULES`, `OP_MODULES` (surgery/layers.py, which handler table a config entry uses): the
  `keras.src.*` package layout written into saved configs.
"""

from __future__ import annotations

__all__ = [
    "LAYER_MODULES",
    "OP_MODULES",
    "PUBLIC_LAYER_MODULES",
    "adam_second_moments",
    "has_adam_moments",
    "output_layer_names",
]

# The config `module` of a built-in layer: the public spellings, and the prefix of Keras' private
# package layout that Keras 3 writes instead for some classes.
PUBLIC_LAYER_MODULES = ("keras", "keras.layers")
LAYER_MODULES = ("keras.src.layers",)
# Keras ops applied to symbolic tensors (`a + b`, `keras.ops.relu(x)`) are saved as operations of
# these modules; no public name exists for them.
OP_MODULES = ("keras.src.ops", "keras.ops")

_ADAM_SLOTS = ("_velocities", "beta_1", "beta_2", "epsilon")


def output_layer_names(model) -> set[str]:
    """Names of the (top-level) layers producing the model's outputs."""
    names = set()
    for tensor in model.outputs:
        history = getattr(tensor, "_keras_history", None)
        if history is not None:
            names.add(history[0].name)
    return names


def has_adam_moments(optimizer) -> bool:
    """Whether the optimizer keeps Adam's second moments (Adam, AdamW, Nadam, ...), once built."""
    return all(hasattr(optimizer, name) for name in _ADAM_SLOTS)


def adam_second_moments(optimizer, variable):
    """Adam's second-moment estimate `v` of `variable` (a Keras variable, same shape)."""
    return optimizer._velocities[optimizer._get_variable_index(variable)]
