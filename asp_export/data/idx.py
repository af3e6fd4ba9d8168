"""`mnist` and `fashion-mnist` from the official IDX files (gzipped or not).

The IDX format is a big-endian header followed by raw bytes: images start with the magic
number 2051 (unsigned bytes, 3 dimensions) then count, rows, cols; labels start with 2049
(unsigned bytes, 1 dimension) then count. Every file is checked against its header before
its bytes are used, and a bad file is reported by path together with what was expected.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import struct
import zlib
from pathlib import Path

import numpy as np

from asp_export.data._dataset import ArrayStore, SourceData, check_arrays
from asp_export.errors import DataError, one_line

log = logging.getLogger(__name__)

IMAGES_MAGIC = 2051  # 0x00000803: unsigned byte, 3 dimensions
LABELS_MAGIC = 2049  # 0x00000801: unsigned byte, 1 dimension
_MAX_BYTES = 8 << 30  # refuse headers that promise more than 8 GiB (corrupt or hostile)

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_EXPECTED_LAYOUT = ", ".join(f"{n}[.gz]" for n in FILES.values())

# The official files, by checksum -> (dataset, file). md5 of the .gz files as published (torchvision's
# MNIST and FashionMNIST resource lists), and sha256 of the *uncompressed* MNIST files (computed from
# the official files; the same whatever gzip produced a .gz). No checksum of uncompressed Fashion-MNIST
# files is published, so raw Fashion-MNIST files are accepted unverified (docs/data.md).
KNOWN_FILES: dict[str, tuple[str, str]] = {
    "f68b3c2dcbeaaa9fbdd348bbdeb94873": ("mnist", "train_images"),
    "d53e105ee54ea40749a09fcbcd1e9432": ("mnist", "train_labels"),
    "9fb629c4189551a2d022fa330f9573f3": ("mnist", "test_images"),
    "ec29112dd5afa0611ce80d1b7f02629c": ("mnist", "test_labels"),
    "8d4fb7e6c68d591d4c3dfef9ec88bf0d": ("fashion-mnist", "train_images"),
    "25c81989df183df01b3e8a0aad5dffbe": ("fashion-mnist", "train_labels"),
    "bef4ecab320f06d8554ea6380940ec79": ("fashion-mnist", "test_images"),
    "bb300cfdad3c16e7a12a480ee83cd310": ("fashion-mnist", "test_labels"),
    "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db": ("mnist", "train_images"),
    "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5": ("mnist", "train_labels"),
    "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7": ("mnist", "test_images"),
    "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2": ("mnist", "test_labels"),
}
_TITLES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}

CLASS_NAMES = {
    "mnist": tuple(str(d) for d in range(10)),
    "fashion-mnist": (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
}


def _open(path: Path):
    with open(path, "rb") as handle:
        gzipped = handle.read(2) == b"\x1f\x8b"  # decide by content, not by the file name
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def read_idx(path: str | Path, *, kind: str) -> np.ndarray:
    """Read one IDX file of unsigned bytes, validating it against its header.

    Args:
        path: the file, raw or gzip-compressed.
        kind: "images" (magic 2051, [N, rows, cols]) or "labels" (magic 2049, [N]).

    Returns:
        uint8 array [N, rows, cols] or [N].

    Raises:
        DataError: naming the file when the magic number, dimensions or length are wrong.
    """
    path = Path(path)
    magic_expected, header_ints = (IMAGES_MAGIC, 3) if kind == "images" else (LABELS_MAGIC, 1)
    layout = "[N, rows, cols] images" if kind == "images" else "[N] labels"
    expected = f"expected an IDX file of unsigned-byte {layout} (magic number {magic_expected})"
    try:
        with _open(path) as handle:
            head = handle.read(4 + 4 * header_ints)
            if len(head) < 4:
                raise DataError(f"{path}: file is too short to be IDX; {expected}.")
            (magic,) = struct.unpack(">i", head[:4])
            if magic != magic_expected:
                raise DataError(f"{path}: wrong magic number {magic}; {expected}.")
            if len(head) < 4 + 4 * header_ints:
                raise DataError(f"{path}: truncated header; {expected}.")
            dims = struct.unpack(f">{header_ints}i", head[4:])
            if any(d < 0 for d in dims) or (kind == "images" and (dims[1] == 0 or dims[2] == 0)):
                raise DataError(f"{path}: invalid dimensions {dims} in the header; {expected}.")
            n_bytes = int(np.prod(dims, dtype=np.int64))
            if n_bytes > _MAX_BYTES:
                raise DataError(
                    f"{path}: header promises {n_bytes} bytes, more than asp accepts; {expected}."
                )
            body = handle.read(n_bytes + 1)  # one extra byte detects trailing garbage
    except (OSError, EOFError, zlib.error) as err:
        if isinstance(err, FileNotFoundError):
            raise DataError(f"{path}: file not found; {expected}.") from None
        problem = (
            "corrupt or truncated gzip"
            if isinstance(err, (gzip.BadGzipFile, EOFError, zlib.error))
            else "cannot read"
        )
        raise DataError(f"{path}: {problem} ({err}); {expected}.") from None
    if len(body) != n_bytes:
        how = "truncated" if len(body) < n_bytes else "longer than its header says"
        raise DataError(
            f"{path}: file is {how} (header {dims} needs {n_bytes} data bytes, found "
            f"{len(body) if len(body) <= n_bytes else 'more'}); {expected}."
        )
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def find_idx_files(data_dir: str | Path) -> dict[str, Path]:
    """Locate the four official files (raw or .gz) in `data_dir`."""
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory; --data-dir must hold the IDX files {_EXPECTED_LAYOUT}.")
    found: dict[str, Path] = {}
    for key, base in FILES.items():
        alt = base.replace("-idx", ".idx")  # some mirrors name them train-images.idx3-ubyte
        for candidate in (base, base + ".gz", alt, alt + ".gz"):
            if (root / candidate).is_file():
                found[key] = root / candidate
                break
        else:
            raise DataError(
                f"{root}: missing {base} (or {base}.gz); expected the IDX files {_EXPECTED_LAYOUT}."
            )
    return found


def _read_pair(images_path: Path, labels_path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path, kind="images")
    labels = read_idx(labels_path, kind="labels")
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{labels_path}: holds {labels.shape[0]} labels but {images_path.name} holds "
            f"{images.shape[0]} images; the counts must agree (expected the official IDX files)."
        )
    if images.shape[0] == 0:
        raise DataError(
            f"{images_path}: holds 0 images; the dataset is empty (expected the official IDX files)."
        )
    if labels.max() >= num_classes:
        raise DataError(
            f"{labels_path}: label {int(labels.max())} is out of range; "
            f"expected IDX labels 0..{num_classes - 1}."
        )
    return images[..., None], labels.astype(np.int32)


def load_idx_source(name: str, data_dir: str | None) -> SourceData:
    """Load MNIST or Fashion-MNIST from `data_dir`, or from the Keras download when it is None."""
    class_names = CLASS_NAMES[name]
    if data_dir is None:
        (x_train, y_train), (x_test, y_test) = _keras_download(name)
        resolved = None
    else:
        files = find_idx_files(data_dir)
        x_train, y_train = _read_pair(files["train_images"], files["train_labels"], len(class_names))
        x_test, y_test = _read_pair(files["test_images"], files["test_labels"], len(class_names))
        verify_files(name, files)  # after the format checks, which name a broken file precisely
        if x_train.shape[1:] != x_test.shape[1:]:
            raise DataError(
                f"{files['test_images']}: images are {x_test.shape[1:3]} but the training images are "
                f"{x_train.shape[1:3]}; both must have the same size."
            )
        resolved = str(Path(data_dir).resolve())
    return SourceData(
        train=ArrayStore(x_train, y_train, scale=1 / 255),
        test=ArrayStore(x_test, y_test, scale=1 / 255),
        native_shape=tuple(int(d) for d in x_train.shape[1:]),
        class_names=class_names,
        resolved_data_dir=resolved,
    )


def identify(path: Path) -> tuple[str, str] | None:
    """(dataset, file key) when `path` is an official MNIST/Fashion-MNIST file, else None."""
    data = path.read_bytes()
    found = KNOWN_FILES.get(hashlib.md5(data, usedforsecurity=False).hexdigest())
    if found is None and data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)  # read_idx has already accepted the file
    return found or KNOWN_FILES.get(hashlib.sha256(data).hexdigest())


def verify_files(name: str, files: dict[str, Path]) -> None:
    """Refuse official files of another dataset (or in the wrong place); warn when none is official."""
    unknown = []
    for key, path in files.items():
        found = identify(path)
        if found is None:
            unknown.append(path.name)
        elif found[0] != name:
            raise DataError(
                f"{path}: is the official {_TITLES[found[0]]} file {FILES[found[1]]}, not {_TITLES[name]}; "
                f"point --data-dir at the {_TITLES[name]} files, or use --data {found[0]}."
            )
        elif found[1] != key:
            raise DataError(
                f"{path}: is the official {_TITLES[name]} file {FILES[found[1]]}, found where "
                f"{FILES[key]} belongs; give each file its official name."
            )
    if unknown:
        where = next(iter(files.values())).parent
        log.warning(
            "%s: %s match no published %s checksum (not the official files, or uncompressed "
            "Fashion-MNIST); using them as %s",
            where,
            ", ".join(unknown),
            _TITLES[name],
            name,
        )


def _keras_download(name: str):
    """keras.datasets download (cached in ~/.keras/datasets); a network failure becomes a DataError.

    Keras 3 reads mnist.npz with allow_pickle=False and Fashion-MNIST from its IDX .gz files,
    so nothing here unpickles.
    """
    import keras

    loader = keras.datasets.mnist if name == "mnist" else keras.datasets.fashion_mnist
    try:
        (x_train, y_train), (x_test, y_test) = loader.load_data()
    except Exception as err:  # noqa: BLE001 -- urllib, ssl, http and keras wrap failures differently
        raise DataError(
            f"Could not download {name} ({one_line(err)}); "
            f"without network pass --data-dir DIR holding the official IDX files {_EXPECTED_LAYOUT}."
        ) from None
    x_train, x_test = np.asarray(x_train, np.uint8)[..., None], np.asarray(x_test, np.uint8)[..., None]
    y_train, y_test = np.asarray(y_train, np.int32), np.asarray(y_test, np.int32)
    check_arrays(x_train, y_train, 10, what=f"{name} (keras download, train)")
    check_arrays(x_test, y_test, 10, what=f"{name} (keras download, test)")
    return (x_train, y_train), (x_test, y_test)
