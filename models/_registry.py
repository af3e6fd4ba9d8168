"""A plain dict of model builders, filled by a decorator (timm-style)."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass

from asp_export.errors import UserInputError, unknown_name_error


@dataclass(frozen=True)
class ModelEntry:
    name: str
    build: Callable
    default_input_shape: tuple[int, ...]
    default_num_classes: int
    summary: str


_MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, *, input_shape: tuple[int, ...], num_classes: int = 10):
    """Register `fn(input_shape, num_classes) -> keras.Model` under a lowercase name."""

    def decorator(fn: Callable) -> Callable:
        key = name.lower()
        if key in _MODELS:
            raise ValueError(f"model {key!r} is already registered")
        doc = (fn.__doc__ or "").strip().splitlines()
        _MODELS[key] = ModelEntry(key, fn, tuple(input_shape), num_classes, doc[0] if doc else "")
        return fn

    return decorator


def list_models(pattern: str = "*") -> list[str]:
    return sorted(name for name in _MODELS if fnmatch.fnmatch(name, pattern))


def get_model_entry(name: str) -> ModelEntry:
    key = name.lower()
    if key not in _MODELS:
        raise unknown_name_error("model", name, _MODELS)
    return _MODELS[key]


def create_model(name: str, *, input_shape: tuple[int, ...] | None = None, num_classes: int | None = None):
    """Build a registered model; input shape and class count default to the entry's."""
    entry = get_model_entry(name)
    shape = tuple(input_shape) if input_shape is not None else entry.default_input_shape
    classes = num_classes if num_classes is not None else entry.default_num_classes
    if len(shape) != 3 or any(int(d) <= 0 for d in shape):
        raise UserInputError(
            f"input_shape must be (height, width, channels) with positive sizes, got {shape}."
        )
    if classes < 2:
        raise UserInputError(f"num_classes must be at least 2, got {classes}.")
    return entry.build(input_shape=shape, num_classes=classes)
