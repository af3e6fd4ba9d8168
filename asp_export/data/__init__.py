"""Datasets for asp: offline digits, MNIST/Fashion-MNIST (IDX), CIFAR (binary), image folders.

One entry point, `load_dataset(name, ...)`, returns a `Dataset` with deterministic train / val /
test splits and tf.data pipelines whose batches are already preprocessed to the model's input
shape. Each source lives in its own module (`digits`, `idx`, `cifar`, `folder`) and registers a
loader in `_SOURCES`. Files are validated against their official format and a bad file is
reported by path with what was expected; nothing is ever unpickled. See docs/data.md.

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
    ArrayStore,
    Dataset,
    SourceData,
    build_dataset,
    check_arrays,
    check_input_shape,
)
from asp_export.errors import DataError, UserInputError, unknown_name_error

log = logging.getLogger(__name__)

FOLDER_PREFIX = "folder:"

__all__ = [
    "Dataset",
    "DataError",
    "FOLDER_PREFIX",
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


def list_datasets(*, include_folder: bool = True) -> list[str]:
    """Names `load_dataset` accepts: the built-in datasets, then the `folder:PATH` form.

    Example:
        >>> list_datasets()
        ['cifar10', 'cifar100', 'digits', 'fashion-mnist', 'mnist', 'folder:PATH']
    """
    names = sorted(_SOURCES)
    return names + [FOLDER_PREFIX + "PATH"] if include_folder else names


def load_dataset(
    name: str,
    *,
    data_dir: str | Path | None = None,
    input_shape: Sequence[int] | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    augment: bool = False,
) -> Dataset:
    """Load a dataset with deterministic splits, preprocessed to `input_shape`.

    Args:
        name: one of `list_datasets()`, or "folder:/path/to/root" (one subfolder per class).
        data_dir: directory (or CIFAR .tar.gz) holding the official files; None uses the embedded
            digits or the Keras download cache for mnist / fashion-mnist / cifar.
        input_shape: (H, W, C) the model expects, C in {1, 3}; None keeps the data's own shape.
        val_fraction: fraction of each training class held out for validation, in [0, 1).
        seed: chooses the validation split and the default shuffle/augmentation order.
        augment: random 4-px-padded crop + horizontal flip on training batches (CIFAR only).

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
    try:
        val_fraction = float(val_fraction)
    except (TypeError, ValueError):
        raise UserInputError(f"val_fraction must be a number in [0, 1), got {val_fraction!r}.") from None
    if not 0.0 <= val_fraction < 1.0:
        raise UserInputError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UserInputError(f"seed must be a non-negative integer, got {seed!r}.")
    data_dir = None if data_dir in (None, "") else str(Path(data_dir).expanduser())

    if name.startswith(FOLDER_PREFIX):
        from asp_export.data.folder import load_folder_source

        folder = name[len(FOLDER_PREFIX) :].strip()
        if not folder:
            raise UserInputError("folder dataset needs a path: --data folder:/path/to/root.")
        source = load_folder_source(folder, data_dir)
        # the resolved path makes describe() reload the same folder from any working directory
        canonical = FOLDER_PREFIX + str(Path(folder).expanduser().resolve())
    else:
        canonical = _ALIASES.get(name.strip().lower(), name.strip().lower())
        if canonical not in _SOURCES:
            raise unknown_name_error("dataset", name, list_datasets())
        source = _SOURCES[canonical](data_dir)
    ds = build_dataset(
        canonical, source, input_shape=shape, val_fraction=val_fraction, seed=int(seed), augment=augment
    )
    log.info("loaded %r", ds)
    return ds


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
) -> Dataset:
    """Wrap in-memory numpy data (e.g. a user's own arrays) in a `Dataset`.

    Images are [N, H, W] or [N, H, W, C] with C in {1, 3}: uint8 in 0..255 or floats in [0, 1].
    Non-finite pixels, empty splits and labels outside 0..num_classes-1 raise DataError.
    The result cannot be reloaded by name: its `describe()` is informative only.
    """
    arrays = []
    for what, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim == 3:
            x = x[..., None]
        arrays.append((what, x, y.astype(np.int64) if np.issubdtype(y.dtype, np.integer) else y))
    if class_names is not None:
        num_classes = len(class_names)
    else:
        int_labels = [y for _, _, y in arrays if y.size and np.issubdtype(y.dtype, np.integer)]
        num_classes = max((int(y.max()) for y in int_labels), default=0) + 1
    stores = {}
    for what, x, y in arrays:
        check_arrays(x, y, num_classes, what=f"{name} {what}")
        if x.shape[-1] not in (1, 3):
            raise DataError(f"{name} {what}: images have {x.shape[-1]} channels; expected 1 or 3.")
        if np.issubdtype(x.dtype, np.floating):
            stores[what] = ArrayStore(x.astype(np.float32), y.astype(np.int32), scale=1.0)
        elif x.dtype == np.uint8:
            stores[what] = ArrayStore(x, y.astype(np.int32), scale=1 / 255)
        else:
            raise DataError(f"{name} {what}: images must be uint8 or float, got {x.dtype}.")
    if stores["train"].x.shape[1:] != stores["test"].x.shape[1:]:
        raise DataError(
            f"{name}: train images {stores['train'].x.shape[1:]} and test images "
            f"{stores['test'].x.shape[1:]} differ in shape."
        )
    source = SourceData(
        train=stores["train"],
        test=stores["test"],
        native_shape=tuple(int(d) for d in stores["train"].x.shape[1:]),
        class_names=tuple(class_names)
        if class_names is not None
        else tuple(str(i) for i in range(num_classes)),
    )
    return build_dataset(
        name,
        source,
        input_shape=check_input_shape(input_shape),
        val_fraction=val_fraction,
        seed=seed,
        augment=False,
    )
