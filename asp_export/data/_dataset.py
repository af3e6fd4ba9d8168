"""The `Dataset` object: deterministic splits plus tf.data pipelines over one stored source.

Every source (digits, IDX, CIFAR binary, image folder, numpy arrays) is reduced to a *store*:
either small uint8 arrays held in memory (`ArrayStore`) or a list of image files streamed from
disk (`FileStore`). A split is a store plus an index array, so train and validation share one
store and never copy images. Pixels stay in their stored dtype (uint8 for every file source)
until a batch is formed; only then are they converted to float32 in [0, 1], mapped to the model's
input range (`asp_export.input_range`: 0-1, 0-255 or -1-1), changed to the model's channel count
and resized to its height and width.

TensorFlow is imported inside methods so that `import asp_export.data` stays light (the CLI's
`--help` must not import TensorFlow).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from asp_export.data._preprocess import augment_batch, decode_file, to_model_input
from asp_export.errors import DataError, UserInputError
from asp_export.input_range import DEFAULT_RANGE, INPUT_RANGES, bounds, check_input_range

log = logging.getLogger(__name__)

# Held-out test fractions for sources without an official test split (digits, image folders).
# The test split uses a fixed seed, independent of the user's `seed`, so that every run on the
# same data is evaluated on the same images and changing `seed` can never leak test images
# into training.
TEST_FRACTION = 0.2
TEST_SPLIT_SEED = 0


# --- stores -------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ArrayStore:
    """Images held in memory: x is [N, H, W, C] (uint8 or float32), y is [N] int32."""

    x: np.ndarray
    y: np.ndarray
    scale: float  # stored * scale + offset is the pixel in [0, 1]
    offset: float = 0.0

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True, eq=False)
class FileStore:
    """Image files streamed from disk; y is [N] int32 aligned with `paths`."""

    paths: np.ndarray  # of bytes (os.fsencode)
    y: np.ndarray

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True)
class SourceData:
    """What a source loader returns: train and test stores plus metadata."""

    train: ArrayStore | FileStore
    test: ArrayStore | FileStore
    native_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    augmentable: bool = False  # CIFAR-style crop+flip makes sense for this source
    classes_from_labels: bool = False  # the class count is max label + 1 (no names given)
    resolved_data_dir: str | None = None


# --- validation helpers -------------------------------------------------------------------


def check_input_shape(input_shape: Any) -> tuple[int, int, int] | None:
    """Validate a user-given (H, W, C) and return it as a tuple of ints (None passes through)."""
    if input_shape is None:
        return None
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise UserInputError(f"input_shape must be (height, width, channels), got {input_shape!r}.") from None
    if len(shape) != 3 or shape[0] <= 0 or shape[1] <= 0 or shape[2] not in (1, 3):
        raise UserInputError(
            f"input_shape must be (height, width, channels) with positive sizes and 1 or 3 channels, "
            f"got {input_shape!r}."
        )
    return shape


def check_val_fraction(val_fraction: Any) -> float:
    """A fraction in [0, 1) or UserInputError."""
    try:
        value = float(val_fraction)
    except (TypeError, ValueError):
        raise UserInputError(f"val_fraction must be a number in [0, 1), got {val_fraction!r}.") from None
    if not 0.0 <= value < 1.0:
        raise UserInputError(f"val_fraction must be in [0, 1), got {val_fraction!r}.")
    return value


def check_seed(seed: Any) -> int:
    """A non-negative int or UserInputError."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UserInputError(f"seed must be a non-negative integer, got {seed!r}.")
    return int(seed)


def check_arrays(x: np.ndarray, y: np.ndarray, num_classes: int, *, what: str) -> None:
    """Refuse empty data, mismatched counts, non-finite pixels and out-of-range labels."""
    if x.ndim != 4:
        raise DataError(f"{what}: images must be [N, height, width, channels], got shape {x.shape}.")
    if x.shape[0] == 0:
        raise DataError(f"{what}: the dataset is empty (0 images).")
    if y.shape != (x.shape[0],):
        raise DataError(
            f"{what}: {x.shape[0]} images but labels of shape {y.shape}; expected ({x.shape[0]},)."
        )
    if np.issubdtype(x.dtype, np.floating):
        bad = ~np.isfinite(x)
        if bad.any():
            first = int(np.argwhere(bad)[0][0])
            raise DataError(
                f"{what}: {int(bad.sum())} pixel value(s) are NaN or Inf (first in image {first}); "
                "clean the data or drop those images."
            )
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{what}: labels must be integers, got dtype {y.dtype}.")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        bad_label = int(y.min() if y.min() < 0 else y.max())
        raise DataError(f"{what}: label {bad_label} is out of range; expected 0..{num_classes - 1}.")


def check_classes(name: str, source: SourceData) -> None:
    """Refuse classes a model cannot learn honestly; warn, with counts per class, about the rest.

    Refused (DataError): a class the test split has but training lacks (it would be scored as if
    learned), and, when the class count comes from the labels (`npz:`, arrays), an empty class:
    labels numbered 1..10 make 11 classes with an empty class 0. Warned: a class without training
    images (a subset of a fixed-class dataset; its output is never trained) or without test images
    (its accuracy is not measured).
    """
    names = source.class_names
    train = np.bincount(source.train.y, minlength=len(names))
    test = np.bincount(source.test.y, minlength=len(names))
    untrained = np.flatnonzero(train == 0)
    only_in_test = untrained[test[untrained] > 0]
    empty = untrained[test[untrained] == 0] if source.classes_from_labels else untrained[:0]
    if only_in_test.size or empty.size:
        bad = only_in_test if only_in_test.size else empty
        present = np.flatnonzero(train + test)
        if not only_in_test.size and bad[0] == 0 and present[0] > 0:
            fix = f"labels run {present[0]}..{present[-1]}: number the classes from 0 (subtract {present[0]})"
        elif only_in_test.size:
            fix = "the test split has it, so it would be scored as if learned: add training images or drop it"
        else:
            fix = "labels skip it: number the classes 0..K-1 without gaps"
        raise DataError(
            f"{name}: class {_which(bad, names)} has no training images "
            f"(train images per class: {_counts(train)}); {fix}."
        )
    for count, what, why in (
        (train, "training", "their outputs are never trained"),
        (test, "test", "their accuracy is not measured"),
    ):
        missing = np.flatnonzero(count == 0)
        if missing.size:
            log.warning(
                "%s: class %s has no %s images, so %s (%s images per class: %s)",
                name,
                _which(missing, names),
                what,
                why,
                what,
                _counts(count),
            )


def _which(classes: np.ndarray, names: tuple[str, ...]) -> str:
    shown = ", ".join(str(c) if names[c] == str(c) else f"{c} ({names[c]})" for c in classes[:5])
    return shown + (f" and {classes.size - 5} more" if classes.size > 5 else "")


def _counts(per_class: np.ndarray) -> str:
    if per_class.size > 20:  # CIFAR-100: a range, not 100 numbers
        return f"{int(per_class.min())}..{int(per_class.max())} over {per_class.size} classes"
    return " ".join(f"{c}:{int(n)}" for c, n in enumerate(per_class))


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split positions 0..N-1 into (kept, held) with `fraction` of each class held out.

    Deterministic for a given seed. Each class keeps at least one item when it has one, and
    holds out round(fraction * count) items. Both returned index arrays are sorted.
    """
    rng = np.random.default_rng(seed)
    kept: list[np.ndarray] = []
    held: list[np.ndarray] = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        members = members[rng.permutation(members.size)]
        n_held = min(int(round(fraction * members.size)), members.size - 1)
        held.append(members[:n_held])
        kept.append(members[n_held:])
    kept_idx = np.sort(np.concatenate(kept)) if kept else np.zeros(0, np.int64)
    held_idx = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
    return kept_idx.astype(np.int64), held_idx.astype(np.int64)


# --- the Dataset --------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Dataset:
    """A loaded dataset: metadata, deterministic splits, and tf.data pipelines.

    Build it with `asp_export.data.load_dataset`; `load_dataset(**ds.describe())` rebuilds it.
    Batches are `(x, y)` with x float32 [B, H, W, C] in `input_range` (0-1 unless told otherwise)
    at `input_shape`, y int32 [B].
    """

    name: str
    num_classes: int
    input_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    native_shape: tuple[int, int, int]
    data_dir: str | None
    val_fraction: float
    seed: int
    augment: bool
    input_range: str
    _splits: dict[str, tuple[ArrayStore | FileStore, np.ndarray]] = field(repr=False)
    _tensors: dict[int, Any] = field(default_factory=dict, repr=False, compare=False)

    # sizes -------------------------------------------------------------------------------
    @property
    def n_train(self) -> int:
        return int(self._splits["train"][1].size)

    @property
    def n_val(self) -> int:
        return int(self._splits["val"][1].size)

    @property
    def n_test(self) -> int:
        return int(self._splits["test"][1].size)

    def labels(self, split: str = "test") -> np.ndarray:
        """The int32 labels of a split, in the order `val()`/`test()` yield them."""
        store, idx = self._split(split)
        return store.y[idx].astype(np.int32)

    def describe(self) -> dict[str, Any]:
        """JSON-able arguments of `load_dataset` that reload exactly this data.

        Example:
            >>> ds = load_dataset("digits", input_shape=(28, 28, 1))
            >>> load_dataset(**ds.describe()).n_train == ds.n_train
            True
        """
        return {
            "name": self.name,
            "data_dir": self.data_dir,
            "input_shape": list(self.input_shape),
            "val_fraction": self.val_fraction,
            "seed": self.seed,
            "augment": self.augment,
            "input_range": self.input_range,
        }

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, classes={self.num_classes}, input_shape={self.input_shape}, "
            f"train/val/test={self.n_train}/{self.n_val}/{self.n_test})"
        )

    # pipelines ---------------------------------------------------------------------------
    def train(
        self,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int | None = None,
        repeat: bool = False,
        drop_remainder: bool = False,
        start_step: int = 0,
    ):
        """Training batches, shuffled and (CIFAR with `augment`) augmented deterministically.

        Two modes:

        * `repeat=False`: one pass per iteration, reshuffled each time the dataset is iterated
          (what `model.fit(ds.train(b), epochs=E)` wants). The order follows `seed` and
          TensorFlow's global seed (tf.data combines both).
        * `repeat=True`: an endless stream (use `steps_per_epoch`). Pass k over the data is the
          permutation stateless_shuffle(seed, k) and batch i is augmented with seed (seed, i), so
          the stream depends on `seed` alone, and `start_step=s` yields exactly the batches an
          uninterrupted stream yields from batch s on: resuming after a crash replays nothing.

        Args:
            batch_size: images per batch.
            shuffle: shuffle the order (a full-split shuffle of positions, not of images).
            seed: shuffle/augmentation seed; None uses the dataset's `seed`.
            repeat: repeat forever (then pass `steps_per_epoch` to `fit`).
            drop_remainder: drop a last partial batch (only matters with `repeat=False`).
            start_step: with `repeat=True`, the number of batches already consumed.

        Returns:
            A `tf.data.Dataset` of `(x float32 [B, H, W, C], y int32 [B])`.
        """
        seed = self.seed if seed is None else check_seed(seed)
        if isinstance(start_step, bool) or not isinstance(start_step, (int, np.integer)) or start_step < 0:
            raise UserInputError(f"start_step must be a non-negative integer, got {start_step!r}.")
        if start_step and not repeat:
            raise UserInputError("start_step needs repeat=True (a resumable endless stream).")
        return self._pipeline(
            "train",
            batch_size,
            shuffle=shuffle,
            seed=seed,
            repeat=repeat,
            augment=self.augment,
            drop_remainder=drop_remainder,
            start_step=int(start_step),
        )

    def val(self, batch_size: int):
        """Validation batches in a fixed order (held out from the training data)."""
        if self.n_val == 0:
            raise DataError(f"{self.name} has no validation split (val_fraction={self.val_fraction}).")
        return self._pipeline("val", batch_size, shuffle=False, seed=0, repeat=False, augment=False)

    def test(self, batch_size: int):
        """Test batches in a fixed order."""
        return self._pipeline("test", batch_size, shuffle=False, seed=0, repeat=False, augment=False)

    def sample(self, n: int, *, split: str = "test", with_labels: bool = False, seed: int = 0):
        """Real, preprocessed images for export parity checks and int8 calibration.

        Deterministic for a given seed; never augmented. Returns at most `n` images (the whole
        split if it is smaller, with a warning).

        Args:
            n: number of images wanted.
            split: "train", "val" or "test".
            with_labels: also return the int32 labels.
            seed: which images are picked.

        Returns:
            float32 numpy [n, H, W, C] in `input_range`, or `(x, y)` when `with_labels`.
        """
        import tensorflow as tf

        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
            raise UserInputError(f"sample size must be a positive integer, got {n!r}.")
        store, idx = self._split(split)
        if idx.size == 0:
            raise DataError(f"{self.name} has no {split} images to sample from.")
        if n > idx.size:
            log.warning(
                "asked for %d %s samples of %s; only %d exist, returning all", n, split, self.name, idx.size
            )
            n = idx.size
        pick = idx[np.sort(np.random.default_rng(seed).choice(idx.size, size=int(n), replace=False))]
        if isinstance(store, ArrayStore):
            x = to_model_input(store.x[pick], store.scale, self.input_shape, self.input_range, store.offset)
        else:
            images = []
            for path in store.paths[pick]:
                try:
                    image = decode_file(path, self.native_shape)[None]
                    images.append(to_model_input(image, 1 / 255, self.input_shape, self.input_range))
                except tf.errors.OpError as err:
                    reason = re.sub(r"\{\{.*?\}\}\s*|\s*\[Op:.*", "", err.message.splitlines()[0])
                    raise DataError(f"{os.fsdecode(path)}: cannot decode image ({reason}).") from None
            x = tf.concat(images, axis=0)
        x = np.asarray(x, dtype=np.float32)
        return (x, store.y[pick].astype(np.int32)) if with_labels else x

    # internals ---------------------------------------------------------------------------
    def _split(self, split: str) -> tuple[ArrayStore | FileStore, np.ndarray]:
        if split not in self._splits:
            raise UserInputError(f"Unknown split {split!r}; expected one of train, val, test.")
        return self._splits[split]

    def _store_tensor(self, store: ArrayStore):
        # one constant per store, shared by all pipelines of this Dataset (train and val share it)
        import tensorflow as tf

        key = id(store)
        if key not in self._tensors:
            self._tensors[key] = tf.constant(store.x)
        return self._tensors[key]

    def _pipeline(
        self, split, batch_size, *, shuffle, seed, repeat, augment, drop_remainder=False, start_step=0
    ):
        import tensorflow as tf

        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
            raise UserInputError(f"batch_size must be a positive integer, got {batch_size!r}.")
        store, idx = self._split(split)
        if idx.size == 0:
            raise DataError(f"{self.name} has an empty {split} split.")
        labels = tf.constant(store.y[idx].astype(np.int32))
        rows = tf.constant(idx)  # position in this split -> row of the store
        shape = self.input_shape
        input_range = self.input_range
        positions = _positions(
            idx.size, batch_size, shuffle=shuffle, seed=seed, repeat=repeat, start_step=start_step
        )

        if isinstance(store, ArrayStore):
            x_all = self._store_tensor(store)
            scale, offset = store.scale, store.offset
            ds = positions.batch(batch_size, drop_remainder=drop_remainder)  # gather whole batches at once
            if augment:
                ds = tf.data.Dataset.zip((ds, _batch_seeds(seed, repeat=repeat, start_step=start_step)))

                def fetch(pos, batch_seed):
                    x = augment_batch(tf.gather(x_all, tf.gather(rows, pos)), batch_seed)
                    return to_model_input(x, scale, shape, input_range, offset), tf.gather(labels, pos)
            else:

                def fetch(pos):
                    x = tf.gather(x_all, tf.gather(rows, pos))
                    return to_model_input(x, scale, shape, input_range, offset), tf.gather(labels, pos)

            ds = ds.map(fetch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        else:
            native = self.native_shape
            paths = tf.constant(store.paths[idx])

            def load(pos):  # images differ in size: decode and resize one at a time, then batch
                image = decode_file(tf.gather(paths, pos), native)
                return to_model_input(image[None], 1 / 255, shape, input_range)[0], tf.gather(labels, pos)

            ds = positions.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        options = tf.data.Options()
        options.deterministic = True
        return ds.prefetch(tf.data.AUTOTUNE).with_options(options)


def _positions(n: int, batch_size: int, *, shuffle: bool, seed: int, repeat: bool, start_step: int):
    """The order in which positions 0..n-1 of a split are visited (see `Dataset.train`)."""
    import tensorflow as tf

    if not repeat:
        ds = tf.data.Dataset.range(n)
        # shuffling positions, not images: the buffer holds integers only
        return ds.shuffle(n, seed=seed, reshuffle_each_iteration=True) if shuffle else ds
    first_pass, offset = divmod(start_step * batch_size, n)

    def one_pass(k):
        order = tf.range(n, dtype=tf.int64)
        if shuffle:
            order = tf.random.experimental.stateless_shuffle(
                order, seed=tf.stack([tf.constant(seed, tf.int64), k])
            )
        return tf.data.Dataset.from_tensor_slices(order)

    stream = tf.data.Dataset.range(first_pass, np.iinfo(np.int64).max).flat_map(one_pass).skip(offset)
    # tell consumers it never ends: Keras then insists on steps_per_epoch instead of hanging
    return stream.apply(tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY))


def _batch_seeds(seed: int, *, repeat: bool, start_step: int):
    """One [2] int64 seed per batch for the stateless augmentation ops."""
    import tensorflow as tf

    if not repeat:  # new augmentations each time the one-pass dataset is iterated
        return tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    return tf.data.Dataset.range(start_step, np.iinfo(np.int64).max).map(
        lambda i: tf.stack([tf.constant(seed, tf.int64), i])
    )


def build_dataset(
    name: str,
    source: SourceData,
    *,
    input_shape: tuple[int, int, int] | None,
    val_fraction: float,
    seed: int,
    augment: bool,
    input_range: str = DEFAULT_RANGE,
) -> Dataset:
    """Hold out the validation split from train and wrap everything in a `Dataset`."""
    input_range = check_input_range(input_range)
    source = _float_pixels_in_range(name, source, input_range)
    if len(source.train) == 0 or len(source.test) == 0:
        raise DataError(
            f"{name}: the dataset is empty (train {len(source.train)}, test {len(source.test)} images)."
        )
    if len(source.class_names) < 2:
        raise DataError(
            f"{name}: found {len(source.class_names)} class(es); classification needs at least 2."
        )
    if augment and not source.augmentable:
        raise UserInputError(f"augment=True is only available for CIFAR datasets, not {name!r}.")
    check_classes(name, source)
    train_idx, val_idx = stratified_split(source.train.y, val_fraction, seed)
    splits = {
        "train": (source.train, train_idx),
        "val": (source.train, val_idx),
        "test": (source.test, np.arange(len(source.test), dtype=np.int64)),
    }
    return Dataset(
        name=name,
        num_classes=len(source.class_names),
        input_shape=input_shape or source.native_shape,
        class_names=tuple(source.class_names),
        native_shape=source.native_shape,
        data_dir=source.resolved_data_dir,
        val_fraction=float(val_fraction),
        seed=int(seed),
        augment=bool(augment),
        input_range=input_range,
        _splits=splits,
    )


def _float_pixels_in_range(name: str, source: SourceData, input_range: str) -> SourceData:
    """Float images are read as 0..1 pixels, or as given when they already lie in `input_range`.

    Anything else is refused: float pixels in 0..255 fed to a 0..1 model train badly without
    a word (issue 17.5), and which of the two the user meant cannot be guessed.
    """
    stores = {}
    for split in ("train", "test"):
        store = getattr(source, split)
        if not isinstance(store, ArrayStore) or not np.issubdtype(store.x.dtype, np.floating):
            continue
        low, high = float(store.x.min()), float(store.x.max())
        if low >= 0.0 and high <= 1.0:
            continue
        range_low, range_high = bounds(input_range)
        if range_low <= low and high <= range_high:  # already the model's input: use as given
            span = range_high - range_low
            stores[split] = replace(store, scale=1.0 / span, offset=-range_low / span)
            continue
        fits = [r for r, (a, b) in INPUT_RANGES.items() if a <= low and high <= b and r != input_range]
        hint = ""
        if fits:
            fit_low, fit_high = INPUT_RANGES[fits[0]]
            hint = (
                f"if they are the model's input ({fit_low:g}..{fit_high:g}), pass --input-range {fits[0]}; "
            )
        raise DataError(
            f"{name} ({split}): float pixels span {low:.4g}..{high:.4g}, but asp reads float images as "
            f"0..1 (uint8 as 0..255) and the input range is {input_range}; {hint}"
            f"{'else ' if hint else ''}store uint8 0..255 or floats divided by 255."
        )
    return replace(source, **stores) if stores else source
