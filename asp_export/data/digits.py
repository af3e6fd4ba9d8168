"""`digits`: the 8x8 handwritten digits that ship inside scikit-learn (works offline).

1,797 grayscale images with pixel values 0..16. They are the embedded default so that
`asp prune` runs on a fresh machine without network or downloads.
"""

from __future__ import annotations

import numpy as np

from asp_export.data._dataset import (
    TEST_FRACTION,
    TEST_SPLIT_SEED,
    ArrayStore,
    SourceData,
    check_arrays,
    stratified_split,
)
from asp_export.errors import DataError


def load_digits_source(data_dir: str | None = None) -> SourceData:
    """Load scikit-learn's digits and make the fixed, stratified 80/20 train/test split."""
    if data_dir is not None:
        raise DataError("digits ships inside scikit-learn and takes no data_dir; drop --data-dir.")
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float64)[..., None]  # [N, 8, 8, 1], 0..16
    labels = np.asarray(bunch.target, dtype=np.int32)
    check_arrays(images, labels, 10, what="scikit-learn digits")
    if images.min() < 0 or images.max() > 16:
        raise DataError(f"scikit-learn digits: pixel values outside 0..16 ({images.min()}..{images.max()}).")
    pixels = images.astype(np.uint8)  # values are whole numbers 0..16; keep them compact until batched
    train_idx, test_idx = stratified_split(labels, TEST_FRACTION, TEST_SPLIT_SEED)
    return SourceData(
        train=ArrayStore(pixels[train_idx], labels[train_idx], scale=1 / 16),
        test=ArrayStore(pixels[test_idx], labels[test_idx], scale=1 / 16),
        native_shape=(8, 8, 1),
        class_names=tuple(str(d) for d in range(10)),
    )
