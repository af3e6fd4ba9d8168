"""Datasets from numpy arrays: in memory (`dataset_from_arrays`) or a `.npz` file (`npz:PATH`).

The `.npz` layout is the one Keras uses for mnist.npz: `x_train`, `y_train`, `x_test`, `y_test`
(plus an optional `class_names` string array). It is opened with `allow_pickle=False`, so an
archive holding pickled object arrays is refused instead of executed. Unlike the fixed-format
sources, arrays may hold floats, so this is where NaN / Inf pixels are caught.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from asp_export.data._dataset import ArrayStore, SourceData, check_arrays
from asp_export.errors import DataError

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
_NPZ_LAYOUT = (
    "expected a .npz with arrays x_train [N,H,W(,C)], y_train [N], x_test, y_test "
    "(uint8 0..255 or float 0..1 images, integer labels; optional class_names)"
)


def arrays_source(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    what: str,
    class_names: Sequence[str] | None = None,
) -> SourceData:
    """Validate four arrays and wrap them as train/test stores."""
    arrays = []
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim == 3:
            x = x[..., None]
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]  # keras-style [N, 1] labels
        arrays.append((split, x, y))
    if class_names is not None:
        num_classes = len(class_names)
    else:
        int_labels = [y for _, _, y in arrays if y.size and np.issubdtype(y.dtype, np.integer)]
        num_classes = max((int(y.max()) for y in int_labels), default=0) + 1
    stores = {}
    for split, x, y in arrays:
        where = f"{what} ({split})"
        check_arrays(x, y, num_classes, what=where)
        if x.shape[-1] not in (1, 3):
            raise DataError(f"{where}: images have {x.shape[-1]} channels; expected 1 or 3.")
        if np.issubdtype(x.dtype, np.floating):
            stores[split] = ArrayStore(x.astype(np.float32), y.astype(np.int32), scale=1.0)
        elif x.dtype == np.uint8:
            stores[split] = ArrayStore(x, y.astype(np.int32), scale=1 / 255)
        else:
            raise DataError(f"{where}: images must be uint8 (0..255) or float (0..1), got {x.dtype}.")
    if stores["train"].x.shape[1:] != stores["test"].x.shape[1:]:
        raise DataError(
            f"{what}: train images {stores['train'].x.shape[1:]} and test images "
            f"{stores['test'].x.shape[1:]} differ in shape."
        )
    names = tuple(str(n) for n in class_names) if class_names is not None else None
    return SourceData(
        train=stores["train"],
        test=stores["test"],
        native_shape=tuple(int(d) for d in stores["train"].x.shape[1:]),
        class_names=names or tuple(str(i) for i in range(num_classes)),
        classes_from_labels=names is None,
    )


def load_npz_source(path: str, data_dir: str | None = None) -> SourceData:
    """Read `x_train, y_train, x_test, y_test` from a .npz without allowing pickles."""
    if data_dir is not None:
        raise DataError("npz:PATH datasets take their location from PATH; drop --data-dir.")
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"{file}: file not found; {_NPZ_LAYOUT}.")
    with open(file, "rb") as handle:
        head = handle.read(4)
    if head != b"PK\x03\x04":  # without this, np.load would treat any other file as a pickle
        raise DataError(f"{file}: not a readable .npz (no zip header); {_NPZ_LAYOUT}.")
    try:
        with np.load(file, allow_pickle=False) as npz:
            missing = [k for k in NPZ_KEYS if k not in npz.files]
            if missing:
                raise DataError(f"{file}: missing arrays {missing} (has {sorted(npz.files)}); {_NPZ_LAYOUT}.")
            arrays = {k: npz[k] for k in NPZ_KEYS}
            class_names = npz["class_names"].tolist() if "class_names" in npz.files else None
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise DataError(
                f"{file}: holds pickled object arrays; asp never unpickles data files "
                f"(loading a pickle can run arbitrary code); {_NPZ_LAYOUT}."
            ) from None
        raise DataError(f"{file}: not a readable .npz ({err}); {_NPZ_LAYOUT}.") from None
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"{file}: not a readable .npz ({err}); {_NPZ_LAYOUT}.") from None
    return arrays_source(**arrays, what=str(file), class_names=class_names)
