"""Load a user's ``.keras`` file safely: no code from the file runs, errors are one line.

Why a module of its own: `asp shrink`, `asp prune` (a user model) and `asp export` all
take a path from the user, and each must refuse the same things the same way -- a
Lambda layer (arbitrary Python in the file), a custom class we cannot see, a file that is
not a ``.keras`` archive or was cut short.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from asp_export._io import atomic_path
from asp_export.errors import ModelLoadError

__all__ = ["load_keras_model", "save_model", "to_functional"]


def load_keras_model(path: str | os.PathLike):
    """Load a ``.keras`` model with ``safe_mode=True`` and ``compile=False``.

    Args:
        path: path to a Keras 3 ``.keras`` file.

    Returns:
        The ``keras.Model``; a Sequential model comes back as the equivalent functional
        model (`to_functional`), so the rest of asp only ever sees functional graphs.

    Raises:
        ModelLoadError: missing file, wrong suffix, not a zip archive (e.g. truncated),
            a Lambda layer or other code that safe mode refuses, or an unknown custom object.
    """
    p = Path(path)
    if not p.exists():
        raise ModelLoadError(f"Model file {str(p)!r} does not exist.")
    if p.is_dir() or p.suffix != ".keras":
        raise ModelLoadError(
            f"{str(p)!r} is not a .keras file; asp reads Keras 3 .keras archives "
            "(re-save with model.save('model.keras'))."
        )
    if not zipfile.is_zipfile(p):
        raise ModelLoadError(
            f"{str(p)!r} is not a valid .keras archive (truncated or corrupt?); re-save the model."
        )
    import keras

    try:
        model = keras.saving.load_model(p, safe_mode=True, compile=False)
    except Exception as err:  # noqa: BLE001 - every failure becomes one clear line
        text = " ".join(str(err).split())
        if "Lambda" in text or "safe_mode" in text or "unsafe" in text.lower():
            raise ModelLoadError(
                f"{str(p)!r} contains a Lambda layer or other code that would run on load; asp loads models "
                "in safe mode only. Replace the Lambda with a standard Keras layer and re-save."
            ) from None
        if "Could not locate" in text or "Unknown" in text or "custom" in text.lower():
            raise ModelLoadError(
                f"{str(p)!r} uses a custom layer or object that is not registered: {text[:200]}. asp accepts "
                "models made of standard Keras layers."
            ) from None
        raise ModelLoadError(f"Cannot load {str(p)!r}: {type(err).__name__}: {text[:200]}") from None
    return to_functional(model)


def to_functional(model):
    """The functional model equivalent to a Sequential one; any other model is returned as is.

    Why: a Sequential model's config has no graph (`keras.Model.from_config` refuses it,
    tf2onnx needs a symbolic input), and pruning rebuilds models from configs. Converting once,
    where a model is loaded, keeps every later stage on functional graphs. The layers are fresh
    copies (same names, configs and weights), so the input model is not modified.

    Raises:
        ModelLoadError: a Sequential model without an input shape (never built).
    """
    import keras

    if not isinstance(model, keras.Sequential):
        return model
    try:
        batch_shape = tuple(model.input_shape)
    except (AttributeError, ValueError):
        batch_shape = None
    if batch_shape is None:
        raise ModelLoadError(
            f"Sequential model {model.name!r} has no input shape; start it with keras.Input(shape=...) "
            "and re-save."
        )
    first = model.get_config()["layers"][0]
    name = first["config"]["name"] if first["class_name"] == "InputLayer" else f"{model.name}_input"
    dtype = first["config"].get("dtype", "float32") if first["class_name"] == "InputLayer" else "float32"
    inputs = keras.Input(batch_shape=batch_shape, dtype=dtype, name=name)
    x = inputs
    for layer in model.layers:
        twin = type(layer).from_config(layer.get_config())
        x = twin(x)
        twin.set_weights(layer.get_weights())
    return keras.Model(inputs, x, name=model.name)


def save_model(model, path: Path) -> None:
    """Save weights and architecture only: Keras 3 writes a compiled model's
    optimizer slots into .keras files (tripling an Adam-trained file)."""
    import keras

    inference_copy = keras.Model.from_config(model.get_config())
    inference_copy.set_weights(model.get_weights())
    with atomic_path(path) as tmp:
        inference_copy.save(tmp)
