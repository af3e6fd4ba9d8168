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

from asp_export.errors import ModelLoadError

__all__ = ["load_keras_model"]


def load_keras_model(path: str | os.PathLike):
    """Load a ``.keras`` model with ``safe_mode=True`` and ``compile=False``.

    Args:
        path: path to a Keras 3 ``.keras`` file.

    Returns:
        The ``keras.Model``.

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
        return keras.saving.load_model(p, safe_mode=True, compile=False)
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
