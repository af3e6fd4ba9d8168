"""`cifar10` and `cifar100` from the official *binary* version; the pickle version is refused.

Binary records are fixed length: CIFAR-10 is 1 label byte + 3,072 pixel bytes (1,024 red, then
green, then blue, each 32x32 row-major); CIFAR-100 is 1 coarse + 1 fine label byte + 3,072 pixel
bytes (asp uses the fine label). The files are read from a directory or straight out of the
official .tar.gz (members are read in memory, never extracted, so a hostile archive cannot write
files). The python version of CIFAR is a pickle, which can execute code when loaded: asp
recognises it and refuses it without opening it with pickle.
"""

from __future__ import annotations

import hashlib
import logging
import tarfile
from pathlib import Path

import numpy as np

from asp_export.data._dataset import ArrayStore, SourceData
from asp_export.errors import DataError, one_line

log = logging.getLogger(__name__)

_PIXELS = 32 * 32 * 3

# name -> layout of the official binary release
LAYOUTS = {
    "cifar10": {
        "folder": "cifar-10-batches-bin",
        "archive": "cifar-10-binary.tar.gz",
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
        "md5": "c32a1d4ab5d03f1284b67883e8d87530",  # of the archive, as published on the CIFAR page
        "train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
        "test": ("test_batch.bin",),
        "label_bytes": 1,
        "names_file": "batches.meta.txt",
        "pickle_markers": ("cifar-10-batches-py", "data_batch_1"),
    },
    "cifar100": {
        "folder": "cifar-100-binary",
        "archive": "cifar-100-binary.tar.gz",
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
        "md5": "03b5dce01913d631647c71ecec9e9cb8",
        "train": ("train.bin",),
        "test": ("test.bin",),
        "label_bytes": 2,
        "names_file": "fine_label_names.txt",
        "pickle_markers": ("cifar-100-python", "train"),
    },
}

CLASS_NAMES = {
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    "cifar100": tuple(
        "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus "
        "butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch "
        "crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house "
        "kangaroo keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle "
        "mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree "
        "plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark "
        "shrew skunk skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table "
        "tank telephone television tiger tractor train trout tulip turtle wardrobe whale "
        "willow_tree wolf woman worm".split()
    ),
}


_TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}


def _other(name: str) -> str:
    return "cifar100" if name == "cifar10" else "cifar10"


def _check_archive(name: str, path: Path) -> None:
    """Refuse the other CIFAR's official archive by its published md5; note an unofficial one."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    other = _other(name)
    if digest.hexdigest() == LAYOUTS[other]["md5"]:
        raise DataError(
            f"{path}: is the official {_TITLES[other]} binary archive, not {_TITLES[name]}; "
            f"use --data {other}, or pass {LAYOUTS[name]['archive']}."
        )
    if digest.hexdigest() != LAYOUTS[name]["md5"]:
        log.warning("%s: md5 differs from the published %s archive; reading it anyway", path, _TITLES[name])


def _expected(name: str) -> str:
    lay = LAYOUTS[name]
    files = ", ".join(lay["train"] + lay["test"])
    return (
        f"expected the official CIFAR binary version: a directory {lay['folder']}/ with {files} "
        f"(or its parent, or {lay['archive']})"
    )


def _is_pickle(head: bytes) -> bool:
    # pickle protocols 2..5 start with PROTO (0x80) and the protocol number
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def _head(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(2)


def _pickle_refusal(name: str, where: str) -> DataError:
    return DataError(
        f"{where} is the python (pickle) version of {name}; asp never unpickles data files because "
        f"loading a pickle can run arbitrary code. Download {LAYOUTS[name]['archive']} "
        f"({LAYOUTS[name]['url']}) and pass it or its extracted folder as --data-dir."
    )


def parse_records(data: bytes, *, name: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode CIFAR binary records -> (uint8 [N, 32, 32, 3], int32 [N]) with labels validated."""
    label_bytes = LAYOUTS[name]["label_bytes"]
    num_classes = len(CLASS_NAMES[name])
    record = label_bytes + _PIXELS
    if _is_pickle(data[:2]):
        raise _pickle_refusal(name, where)
    if len(data) == 0:
        raise DataError(f"{where}: file is empty; {_expected(name)}.")
    if len(data) % record:
        raise DataError(
            f"{where}: length {len(data)} bytes is not a whole number of {record}-byte records "
            f"(truncated or not {name}); {_expected(name)}."
        )
    rows = np.frombuffer(data, dtype=np.uint8).reshape(-1, record)
    labels = rows[:, label_bytes - 1].astype(np.int32)  # CIFAR-100: byte 0 coarse, byte 1 fine
    if label_bytes == 2 and rows[:, 0].max() >= 20:
        raise DataError(
            f"{where}: coarse label {int(rows[:, 0].max())} is out of range 0..19; {_expected(name)}."
        )
    if labels.max() >= num_classes:
        bad = int(np.argmax(labels >= num_classes))
        raise DataError(
            f"{where}: label {int(labels[bad])} in record {bad} is out of range 0..{num_classes - 1}; "
            f"{_expected(name)}."
        )
    images = rows[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


class _DirReader:
    def __init__(self, root: Path) -> None:
        self.root = root

    def read(self, member: str) -> bytes | None:
        path = self.root / member
        return path.read_bytes() if path.is_file() else None

    def where(self, member: str) -> str:
        return str(self.root / member)

    def close(self) -> None:
        pass


class _TarReader:
    """Reads members of an archive by base name, in memory only."""

    def __init__(self, path: Path, name: str) -> None:
        self.path = path
        try:
            self.tar = tarfile.open(path, "r:*")
            self.members = {Path(m.name).name: m for m in self.tar.getmembers() if m.isfile()}
            self.dirs = {Path(m.name).name for m in self.tar.getmembers() if m.isdir()}
            self.dirs |= {Path(m.name).parent.name for m in self.tar.getmembers()}
        except (tarfile.TarError, OSError, EOFError) as err:
            raise DataError(f"{path}: not a readable tar archive ({err}); {_expected(name)}.") from None

    def read(self, member: str) -> bytes | None:
        info = self.members.get(member)
        if info is None:
            return None
        handle = self.tar.extractfile(info)
        return handle.read() if handle is not None else None

    def where(self, member: str) -> str:
        return (
            f"{self.path}!{self.members[member].name}" if member in self.members else f"{self.path}!{member}"
        )

    def close(self) -> None:
        self.tar.close()


def _locate(name: str, data_dir: Path):
    """Find the binary files under data_dir (the batches dir, a parent, or the archive)."""
    lay = LAYOUTS[name]
    if not data_dir.exists():
        raise DataError(f"{data_dir}: does not exist; {_expected(name)}.")
    if data_dir.is_file():
        if _is_pickle(_head(data_dir)):
            raise _pickle_refusal(name, str(data_dir))
        _check_archive(name, data_dir)
        reader = _TarReader(data_dir, name)
        if lay["pickle_markers"][0] in reader.dirs and lay["train"][0] not in reader.members:
            reader.close()
            raise _pickle_refusal(name, str(data_dir))
        return reader
    for candidate in (data_dir, data_dir / lay["folder"]):
        if (candidate / lay["train"][0]).is_file() or (candidate / lay["test"][0]).is_file():
            return _DirReader(candidate)
    if (data_dir / lay["archive"]).is_file():
        _check_archive(name, data_dir / lay["archive"])
        return _TarReader(data_dir / lay["archive"], name)
    other = LAYOUTS[_other(name)]
    for candidate in (data_dir, data_dir / other["folder"]):
        if (candidate / other["train"][0]).is_file() and (candidate / other["test"][0]).is_file():
            raise DataError(
                f"{candidate}: holds the {_TITLES[_other(name)]} binary files ({other['train'][0]}, "
                f"{other['test'][0]}), not {_TITLES[name]}; use --data {_other(name)}."
            )
    for marker in lay["pickle_markers"]:
        found = data_dir / marker
        if found.is_dir() or (found.is_file() and _is_pickle(_head(found))):
            raise _pickle_refusal(name, str(found))
    raise DataError(f"{data_dir}: no {lay['train'][0]} found; {_expected(name)}.")


def _read_split(name: str, reader, members: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for member in members:
        data = reader.read(member)
        if data is None:
            raise DataError(f"{reader.where(member)}: file missing; {_expected(name)}.")
        x, y = parse_records(data, name=name, where=reader.where(member))
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def _class_names(name: str, reader) -> tuple[str, ...]:
    default = CLASS_NAMES[name]
    raw = reader.read(LAYOUTS[name]["names_file"])
    if raw is None:
        return default
    names = tuple(line.strip() for line in raw.decode("utf-8", "replace").splitlines() if line.strip())
    if len(names) != len(default):
        log.warning(
            "%s lists %d class names, expected %d; using the standard names",
            reader.where(LAYOUTS[name]["names_file"]),
            len(names),
            len(default),
        )
        return default
    return names


def load_cifar_source(name: str, data_dir: str | None) -> SourceData:
    """Load CIFAR-10/100 (binary) from `data_dir`, or download the binary archive when None."""
    if data_dir is None:
        path = _download(name)
        resolved = None
    else:
        path = Path(data_dir).expanduser()
        resolved = str(path.resolve())
    reader = _locate(name, path)
    try:
        x_train, y_train = _read_split(name, reader, LAYOUTS[name]["train"])
        x_test, y_test = _read_split(name, reader, LAYOUTS[name]["test"])
        class_names = _class_names(name, reader)
    finally:
        reader.close()
    return SourceData(
        train=ArrayStore(x_train, y_train, scale=1 / 255),
        test=ArrayStore(x_test, y_test, scale=1 / 255),
        native_shape=(32, 32, 3),
        class_names=class_names,
        augmentable=True,
        resolved_data_dir=resolved,
    )


def _download(name: str) -> Path:
    """Fetch the official binary archive through keras.utils.get_file (cached in ~/.keras/datasets).

    keras.datasets.cifar10/100 would download the pickle version and unpickle it, so asp fetches
    the binary archive itself and parses it like a user-given file.
    """
    import keras

    lay = LAYOUTS[name]
    try:
        return Path(keras.utils.get_file(lay["archive"], origin=lay["url"], file_hash=lay["md5"]))
    except Exception as err:  # noqa: BLE001 -- urllib, ssl, http and keras wrap failures differently
        raise DataError(
            f"Could not download {lay['url']} ({one_line(err)}); "
            f"without network pass --data-dir with {_expected(name)[len('expected ') :]}."
        ) from None
