"""Datasets for asp: offline digits, MNIST/Fashion-MNIST (IDX), CIFAR (binary), folders, .npz.

One entry point, `load_dataset(name, ...)`, returns a `Dataset` with deterministic train / val /
test splits and tf.data pipelines whose batches are already preprocessed to the model's input
shape. Each source lives in its own module (`digits`, `idx`, `cifar`, `folder`, `arrays`) and has
a loader in `_SOURCES` (fixed names) or `_PATH_SOURCES` ("folder:PATH", "npz:PATH"). Files are
validated against their official format and a bad file is reported by path with what was
expected; nothing is ever unpickled. See docs/data.md.

Importing this package does not import TensorFlow (the CLI lists dataset names at start-up).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from asp_export.data._dataset import (
    TEST_FRACTION,
    TEST_SPLIT_SEED,
    Dataset,
    SourceData,
    build_dataset,
    check_input_shape,
    check_seed,
    check_val_fraction,
)
from asp_export.errors import DataError, UserInputError, unknown_name_error
from asp_export.input_range import DEFAULT_RANGE

log = logging.getLogger(__name__)

FOLDER_PREFIX = "folder:"
NPZ_PREFIX = "npz:"

__all__ = [
    "Dataset",
    "DataError",
    "FOLDER_PREFIX",
    "NPZ_PREFIX",
    "TEST_FRACTION",
    "TEST_SPLIT_SEED",
    "dataset_from_arrays",
    "list_datasets",
    "load_dataset",
]


def _digits(data_dir):
    from asp_export.data.digits import load_digits_source

    return load_digits_source(data_dir)


def _idx(name):
    def load(data_dir):
        from asp_export.data.idx import load_idx_source

        return load_idx_source(name, data_dir)

    return load


def _cifar(name):
    def load(data_dir):
        from asp_export.data.cifar import load_cifar_source

        return load_cifar_source(name, data_dir)

    return load


# name -> loader(data_dir) -> SourceData. Source modules are imported on first use.
_SOURCES: dict[str, Callable[[str | None], SourceData]] = {
    "digits": _digits,
    "mnist": _idx("mnist"),
    "fashion-mnist": _idx("fashion-mnist"),
    "cifar10": _cifar("cifar10"),
    "cifar100": _cifar("cifar100"),
}
_ALIASES = {"fashion_mnist": "fashion-mnist", "cifar-10": "cifar10", "cifar-100": "cifar100"}


def _folder(location, data_dir):
    from asp_export.data.folder import load_folder_source

    return load_folder_source(location, data_dir)


def _npz(location, data_dir):
    from asp_export.data.arrays import load_npz_source

    return load_npz_source(location, data_dir)


# "prefix:" -> loader(location, data_dir) for datasets named by their path
_PATH_SOURCES: dict[str, Callable[[str, str | None], SourceData]] = {
    FOLDER_PREFIX: _folder,
    NPZ_PREFIX: _npz,
}


def list_datasets(*, include_paths: bool = True) -> list[str]:
    """Names `load_dataset` accepts: the built-in datasets, then the `folder:PATH` / `npz:PATH` forms.

    Example:
        >>> list_datasets()
        ['cifar10', 'cifar100', 'digits', 'fashion-mnist', 'mnist', 'folder:PATH', 'npz:PATH']
    """
    names = sorted(_SOURCES)
    return names + [prefix + "PATH" for prefix in _PATH_SOURCES] if include_paths else names


def load_dataset(
    name: str,
    *,
    data_dir: str | Path | None = None,
    input_shape: Sequence[int] | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    augment: bool = False,
    input_range: str = DEFAULT_RANGE,
) -> Dataset:
    """Load a dataset with deterministic splits, preprocessed to `input_shape` and `input_range`.

    Args:
        name: one of `list_datasets()`: a built-in name, "folder:/path/to/root" (one subfolder per
            class) or "npz:/path/data.npz" (x_train, y_train, x_test, y_test).
        data_dir: directory (or CIFAR .tar.gz) holding the official files; None uses the embedded
            digits or the Keras download cache for mnist / fashion-mnist / cifar.
        input_shape: (H, W, C) the model expects, C in {1, 3}; None keeps the data's own shape.
        val_fraction: fraction of each training class held out for validation, in [0, 1).
        seed: chooses the validation split and the default shuffle/augmentation order.
        augment: random 4-px-padded crop + horizontal flip on training batches (CIFAR only).
        input_range: the pixel range the model expects, "0-1", "0-255" or "-1-1"
            (`asp_export.input_range`); pixels are read as 0..1 and mapped to it. Float arrays
            (npz) must hold 0..1 pixels or values already in this range.

    Returns:
        A `Dataset`; `load_dataset(**ds.describe())` reloads the same data.

    Raises:
        UserInputError: unknown name (with did-you-mean) or invalid option.
        DataError: missing, corrupt or empty data, naming the file and the expected format.

    Example:
        >>> ds = load_dataset("digits", input_shape=(28, 28, 1))
        >>> x, y = next(iter(ds.train(32)))
        >>> tuple(x.shape), ds.num_classes
        ((32, 28, 28, 1), 10)
    """
    if not isinstance(name, str) or not name.strip():
        raise UserInputError(f"dataset name must be a non-empty string, got {name!r}.")
    shape = check_input_shape(input_shape)
    val_fraction = check_val_fraction(val_fraction)
    seed = check_seed(seed)
    data_dir = None if data_dir in (None, "") else str(Path(data_dir).expanduser())

    prefix, _, location = name.strip().partition(":")
    if location and prefix.lower() + ":" in _PATH_SOURCES:
        prefix = prefix.lower() + ":"
        location = location.strip()
        source = _read_source(name, lambda: _PATH_SOURCES[prefix](location, data_dir))
        # the resolved path makes describe() reload the same data from any working directory
        canonical = prefix + str(Path(location).expanduser().resolve())
    else:
        canonical = _ALIASES.get(name.strip().lower(), name.strip().lower())
        if canonical not in _SOURCES:
            if canonical in _PATH_SOURCES:
                raise UserInputError(f"{name!r} needs a path: --data {canonical}/path/to/data.")
            raise unknown_name_error("dataset", name, list_datasets())
        source = _read_source(name, lambda: _SOURCES[canonical](data_dir))
    ds = build_dataset(
        canonical,
        source,
        input_shape=shape,
        val_fraction=val_fraction,
        seed=seed,
        augment=augment,
        input_range=input_range,
    )
    log.info("loaded %r", ds)
    return ds


def _read_source(name: str, read: Callable[[], SourceData]) -> SourceData:
    # loaders name the file for every format problem; this catches the rest of what a file system
    # can do (permissions, I/O errors, a directory where a file should be) in one place
    try:
        return read()
    except OSError as err:
        where = err.filename or name
        raise DataError(
            f"{where}: cannot read ({err.strerror or err}); check the path and its permissions."
        ) from None


def dataset_from_arrays(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    name: str = "arrays",
    class_names: Sequence[str] | None = None,
    input_shape: Sequence[int] | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    input_range: str = DEFAULT_RANGE,
) -> Dataset:
    """Wrap in-memory numpy data (e.g. a user's own arrays) in a `Dataset`.

    Images are [N, H, W] or [N, H, W, C] with C in {1, 3}: uint8 in 0..255 or floats in [0, 1]
    (or floats already in `input_range`, used as given). Non-finite pixels, other floats, empty
    splits and labels outside 0..num_classes-1 raise DataError. The result cannot be reloaded by
    name (save the arrays with `np.savez` and use "npz:PATH" for that).

    Example:
        >>> x = np.zeros((20, 8, 8), np.uint8); y = np.arange(20) % 2
        >>> dataset_from_arrays(x, y, x, y).num_classes
        2
    """
    from asp_export.data.arrays import arrays_source

    source = arrays_source(x_train, y_train, x_test, y_test, what=name, class_names=class_names)
    return build_dataset(
        name,
        source,
        input_shape=check_input_shape(input_shape),
        val_fraction=check_val_fraction(val_fraction),
        seed=check_seed(seed),
        augment=False,
        input_range=input_range,
    )
