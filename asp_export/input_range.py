"""The pixel range a model expects: 0-1, 0-255 or -1-1, given by the user or read from the model.

Why a module of its own: training, evaluation, export parity, int8 calibration and the
synthetic inputs of a bare `.keras` file must all feed the model the same range, and the
range is a property of the model, not of the data. A keras.io model that starts with
`Rescaling(1/255)` (because `image_dataset_from_directory` yields 0..255) and the
keras.applications nets with built-in preprocessing expect 0..255; fed 0..1, they train at
chance. asp's data loaders read pixels as 0..1 and map them to the chosen range last
(`asp_export.data`).

Leaf module: imports nothing from the package but `errors`, and no TensorFlow.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from asp_export.errors import UserInputError

__all__ = [
    "DEFAULT_RANGE",
    "INPUT_RANGES",
    "affine",
    "bounds",
    "check_input_range",
    "detect_input_range",
    "resolve_input_range",
]

# name -> (low, high) of the model's input; a pixel p in [0, 1] becomes low + (high - low) * p
INPUT_RANGES: dict[str, tuple[float, float]] = {"0-1": (0.0, 1.0), "0-255": (0.0, 255.0), "-1-1": (-1.0, 1.0)}
DEFAULT_RANGE = "0-1"
# preprocessing layers that may sit between the input and the layer that tells the range
_PASS_THROUGH = {"Resizing", "CenterCrop", "RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation"}


def check_input_range(value: Any) -> str:
    """A valid range name, or UserInputError naming the valid ones."""
    if value not in INPUT_RANGES:
        raise UserInputError(f"Unknown input range {value!r}; valid: {', '.join(INPUT_RANGES)}.")
    return value


def bounds(input_range: str) -> tuple[float, float]:
    """(low, high) of a range name."""
    return INPUT_RANGES[check_input_range(input_range)]


def affine(input_range: str) -> tuple[float, float]:
    """(multiplier, offset) that map a pixel in [0, 1] to the range."""
    low, high = bounds(input_range)
    return high - low, low


def detect_input_range(model) -> tuple[str | None, str]:
    """Read the range from the model's leading preprocessing layers, or (None, why not).

    A leading `Rescaling` whose scale maps 255 to about 1 or 2 (Rescaling(1/255), or
    Rescaling(1/127.5, offset=-1) as in MobileNetV3) means the model expects 0..255; a leading
    `Normalization` whose mean is above 2 (ConvNeXt's ImageNet mean x 255) means 0..255, one
    with a mean in [0, 1] means 0..1. Resizing/cropping/augmentation layers in front are skipped,
    a nested model in front is looked into. Anything else says nothing.

    Returns:
        (range name or None, a short reason naming the layer).
    """
    layer = _first_layer(model)
    while layer is not None and type(layer).__name__ in _PASS_THROUGH:
        layer = _next_layer(model, layer)
    if layer is None:
        return None, "no layer after the input"
    kind = type(layer).__name__
    config = layer.get_config()
    if kind == "Rescaling":
        scale = float(np.max(np.abs(np.asarray(config.get("scale", 1.0), dtype=np.float64))))
        offset = config.get("offset")
        described = f"its first layer {layer.name!r} is Rescaling(scale={scale:.6g}, offset={offset})"
        if 0.9 <= scale * 255 <= 2.1:
            return "0-255", f"{described}, which maps 0..255 to a unit range"
        return None, f"{described}, which does not say"
    if kind == "Normalization":
        mean = config.get("mean")
        if mean is None and getattr(layer, "mean", None) is not None:  # adapted: the mean is a weight
            mean = layer.mean
        if mean is None:
            return None, f"its first layer {layer.name!r} is a Normalization with no mean yet"
        top = float(np.max(np.abs(np.asarray(mean, dtype=np.float64))))
        described = f"its first layer {layer.name!r} is a Normalization with mean up to {top:.4g}"
        if top > 2.0:
            return "0-255", described
        return "0-1", described
    return None, f"its first layer {layer.name!r} is a {kind}, not a Rescaling or Normalization"


def resolve_input_range(explicit: str | None, model=None) -> tuple[str, str]:
    """The range to use and why: the explicit one wins, then the model's own, then 0-1.

    Returns:
        (range name, reason) where reason reads after "input range X: ".
    """
    detected, why = detect_input_range(model) if model is not None else (None, "")
    if explicit is not None:
        check_input_range(explicit)
        if detected is not None and detected != explicit:
            return explicit, f"--input-range (the model suggests {detected}: {why})"
        return explicit, "--input-range"
    if detected is not None:
        return detected, f"detected: {why}; --input-range overrides"
    reason = f"the default ({why})" if why else "the default"
    return DEFAULT_RANGE, f"{reason}; pass --input-range 0-255 or -1-1 if the model expects that"


def _first_layer(model):
    layers = [layer for layer in getattr(model, "layers", []) if type(layer).__name__ != "InputLayer"]
    if not layers:
        return None
    first = layers[0]
    return _first_layer(first) if hasattr(first, "layers") else first


def _next_layer(model, layer):
    """The layer after `layer` in the (innermost) model's layer list, or None."""
    for holder in _holders(model):
        layers = [item for item in holder.layers if type(item).__name__ != "InputLayer"]
        if layer in layers:
            index = layers.index(layer)
            if index + 1 < len(layers):
                after = layers[index + 1]
                return _first_layer(after) if hasattr(after, "layers") else after
            return None
    return None


def _holders(model):
    yield model
    for item in getattr(model, "layers", []):
        if hasattr(item, "layers"):
            yield from _holders(item)
