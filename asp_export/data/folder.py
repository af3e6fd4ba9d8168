"""`folder:PATH`: an image folder with one subfolder per class, streamed from disk.

    PATH/cat/0001.png  PATH/dog/a.jpg  ...            (split here: fixed 20 % test, then val)
    PATH/train/cat/... PATH/test/cat/...              (pre-split: test taken as given)

Only the sorted file list and labels are kept in memory; tf.data reads and decodes each image
when its batch is formed, so a folder larger than memory trains fine. Class names are the
sorted subfolder names. Each file's signature is checked up front (a few bytes per file), so a
stray non-image file is reported by name before training starts.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from asp_export.data._dataset import TEST_FRACTION, TEST_SPLIT_SEED, FileStore, SourceData, stratified_split
from asp_export.errors import DataError

log = logging.getLogger(__name__)

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
_SIGNATURES = {
    ".png": (b"\x89PNG\r\n\x1a\n",),
    ".jpg": (b"\xff\xd8\xff",),
    ".jpeg": (b"\xff\xd8\xff",),
    ".bmp": (b"BM",),
    ".gif": (b"GIF87a", b"GIF89a"),
}
_LAYOUT = (
    "expected one subfolder per class holding .png/.jpg/.bmp/.gif images "
    "(or train/ and test/ folders of those)"
)


def _subdirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_in(folder: Path) -> list[Path]:
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    for path in files:
        _check_image_file(path)
    return files


def _check_image_file(path: Path) -> None:
    """Cheap structural checks (a few bytes at each end) so broken files fail before training.

    The signature catches non-images; PNG's mandatory IEND chunk and BMP's declared file size
    catch truncated copies. JPEG and GIF get only the signature check: valid files of both are
    often followed by extra bytes after their end marker.
    """
    kind = path.suffix.lower()
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
        handle.seek(max(size - 64, 0))
        tail = handle.read(64)
    label = kind[1:].upper()
    if not head.startswith(_SIGNATURES[kind]):
        raise DataError(f"{path}: not a {label} image (bad file signature); {_LAYOUT}.")
    truncated = (kind == ".png" and b"IEND" not in tail) or (
        kind == ".bmp" and (size < 6 or int.from_bytes(head[2:6], "little") > size)
    )
    if truncated:
        raise DataError(f"{path}: truncated {label} image (its end is missing); {_LAYOUT}.")


def scan_classes(
    root: Path, class_names: list[str] | None = None
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Sorted class subfolders of `root` -> (class names, file paths as bytes, int32 labels)."""
    folders = _subdirs(root)
    names = [f.name for f in folders]
    if class_names is not None:
        unknown = sorted(set(names) - set(class_names))
        if unknown:
            raise DataError(f"{root}: class folders {unknown} do not exist in the train folder; {_LAYOUT}.")
    else:
        if len(folders) < 2:
            raise DataError(f"{root}: found {len(folders)} class folder(s), need at least 2; {_LAYOUT}.")
        class_names = names
    paths: list[bytes] = []
    labels: list[int] = []
    for folder in folders:
        images = _images_in(folder)
        if not images:
            raise DataError(f"{folder}: class folder holds no images; {_LAYOUT}.")
        # file-system bytes: 1 byte per character (numpy str would take 4) and any file name round-trips
        paths += [os.fsencode(p) for p in images]
        labels += [class_names.index(folder.name)] * len(images)
    return class_names, np.array(paths), np.array(labels, dtype=np.int32)


def _native_shape(path: str) -> tuple[int, int, int]:
    """Height, width and channels (1 for gray, else 3) of the first image."""
    import tensorflow as tf

    try:
        image = tf.io.decode_image(tf.io.read_file(path), expand_animations=False)
    except tf.errors.OpError as err:
        raise DataError(f"{path}: cannot decode image ({err.message.splitlines()[0]}).") from None
    height, width, channels = (int(d) for d in image.shape)
    return height, width, 1 if channels in (1, 2) else 3


def load_folder_source(path: str, data_dir: str | None = None) -> SourceData:
    """Scan an image folder (see module docstring) and make the split."""
    if data_dir is not None:
        raise DataError("folder:PATH datasets take their location from PATH; drop --data-dir.")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: not a directory; {_LAYOUT}.")
    top = {p.name for p in _subdirs(root)}
    if {"train", "test"} <= top <= {"train", "val", "test"}:
        if "val" in top:
            log.warning(
                "%s/val is ignored: asp holds the validation split out of train/ (val_fraction)", root
            )
        class_names, train_paths, train_y = scan_classes(root / "train")
        _, test_paths, test_y = scan_classes(root / "test", class_names)
    else:
        class_names, paths, labels = scan_classes(root)
        train_idx, test_idx = stratified_split(labels, TEST_FRACTION, TEST_SPLIT_SEED)
        train_paths, train_y, test_paths, test_y = (
            paths[train_idx],
            labels[train_idx],
            paths[test_idx],
            labels[test_idx],
        )
    if test_y.size == 0:
        raise DataError(
            f"{root}: too few images to hold out a test split (each class needs at least 2); {_LAYOUT}."
        )
    log.info(
        "%s: %d classes, %d train+val and %d test images", root, len(class_names), train_y.size, test_y.size
    )
    return SourceData(
        train=FileStore(train_paths, train_y),
        test=FileStore(test_paths, test_y),
        native_shape=_native_shape(os.fsdecode(train_paths[0])),
        class_names=tuple(class_names),
        resolved_data_dir=None,
    )
