"""asp_export.data: loaders for every source, on small files written in the official formats.

Every corrupt-input case must raise DataError naming the offending file; nothing is unpickled.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from asp_export.data import dataset_from_arrays, list_datasets, load_dataset
from asp_export.errors import DataError, UserInputError

RNG = np.random.default_rng(1234)
# real MNIST in this workplace (see conftest.SHARED_MNIST); absent on a user's machine
SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


# --- writers for the official formats -----------------------------------------------------


def write_idx(path: Path, array: np.ndarray, magic: int, *, gz: bool = False) -> Path:
    data = (
        struct.pack(">i", magic)
        + struct.pack(f">{array.ndim}i", *array.shape)
        + array.astype(np.uint8).tobytes()
    )
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def make_idx_dir(root: Path, *, gz: bool, n_train: int = 20, n_test: int = 10, rows: int = 6, cols: int = 5):
    root.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": RNG.integers(0, 256, (n_train, rows, cols)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": RNG.integers(0, 256, (n_test, rows, cols)),
        "t10k-labels-idx1-ubyte": np.arange(n_test) % 10,
    }
    for name, array in arrays.items():
        write_idx(root / name, array, 2051 if "images" in name else 2049, gz=gz)
    return arrays


def cifar_records(labels, *, coarse=None) -> tuple[bytes, np.ndarray]:
    """Binary CIFAR records; returns the bytes and the images as [N, 32, 32, 3]."""
    images = RNG.integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8)
    planes = images.transpose(0, 3, 1, 2).reshape(len(labels), -1)  # R plane, G plane, B plane
    label_cols = [np.array(labels, np.uint8)[:, None]]
    if coarse is not None:
        label_cols.insert(0, np.array(coarse, np.uint8)[:, None])
    return np.concatenate(label_cols + [planes], axis=1).tobytes(), images


def make_cifar10(root: Path) -> dict:
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    train = []
    for i in range(1, 6):
        data, images = cifar_records([(2 * i) % 10, (2 * i + 1) % 10])
        (folder / f"data_batch_{i}.bin").write_bytes(data)
        train.append(images)
    data, test_images = cifar_records([3, 1, 4])
    (folder / "test_batch.bin").write_bytes(data)
    (folder / "batches.meta.txt").write_text("\n".join(f"class{i}" for i in range(10)) + "\n\n")
    return {"folder": folder, "train": np.concatenate(train), "test": test_images}


def write_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.squeeze() if array.shape[-1] == 1 else array).save(path)


def make_folder(root: Path, classes=("cat", "dog", "emu"), per_class: int = 5, size=(6, 7)) -> Path:
    for c, name in enumerate(classes):
        for i in range(per_class):
            write_png(root / name / f"{i:03d}.png", np.full((*size, 3), 40 * c + i, np.uint8))
    return root


def first_batch(dataset):
    x, y = next(iter(dataset))
    return x.numpy(), y.numpy()


# --- names and options --------------------------------------------------------------------


def test_list_datasets_names_every_builtin_and_the_path_forms():
    assert list_datasets() == [
        "cifar10",
        "cifar100",
        "digits",
        "fashion-mnist",
        "mnist",
        "folder:PATH",
        "npz:PATH",
    ]
    assert list_datasets(include_paths=False) == list_datasets()[:5]


def test_unknown_dataset_suggests_the_closest_name():
    with pytest.raises(UserInputError, match=r"Did you mean 'mnist'\?.*Valid: .*cifar10"):
        load_dataset("mnsit")


@pytest.mark.parametrize(
    "kwargs",
    [{"input_shape": (28, 28, 2)}, {"input_shape": (0, 28, 1)}, {"val_fraction": 1.0}, {"seed": -1}],
)
def test_invalid_options_are_user_errors(kwargs):
    with pytest.raises(UserInputError):
        load_dataset("digits", **kwargs)


def test_importing_the_package_does_not_import_tensorflow():
    code = "import sys, asp_export.data; assert 'tensorflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


# --- digits -------------------------------------------------------------------------------


def test_digits_loads_offline_with_disjoint_stratified_splits():
    ds = load_dataset("digits")
    assert (ds.num_classes, ds.input_shape, ds.class_names[:2]) == (10, (8, 8, 1), ("0", "1"))
    assert ds.n_train + ds.n_val + ds.n_test == 1797
    assert ds.n_test == pytest.approx(0.2 * 1797, abs=10)
    assert ds.n_val == pytest.approx(0.1 * (1797 - ds.n_test), abs=10)
    train_idx, val_idx = ds._splits["train"][1], ds._splits["val"][1]  # positions in the same store
    assert not set(train_idx) & set(val_idx)
    assert (
        ds._splits["train"][0] is ds._splits["val"][0] and ds._splits["test"][0] is not ds._splits["train"][0]
    )
    assert set(np.unique(ds.labels("val"))) == set(range(10))  # every class is represented


def test_digits_test_split_is_fixed_while_seed_moves_the_validation_split():
    a, b = load_dataset("digits", seed=0), load_dataset("digits", seed=1)
    np.testing.assert_array_equal(a.sample(50, split="test"), b.sample(50, split="test"))
    assert not np.array_equal(a._splits["val"][1], b._splits["val"][1])


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3)])
def test_digits_are_resized_to_the_model_input(shape):
    ds = load_dataset("digits", input_shape=shape)
    x, y = first_batch(ds.train(16))
    assert x.shape == (16, *shape) and x.dtype == np.float32 and y.dtype == np.int32
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.5
    if shape[2] == 3:  # gray -> RGB repeats the plane
        np.testing.assert_array_equal(x[..., 0], x[..., 2])


def test_describe_round_trips_to_the_same_data():
    ds = load_dataset("digits", input_shape=(28, 28, 1), val_fraction=0.2, seed=3)
    described = ds.describe()
    assert set(described) == {
        "name",
        "data_dir",
        "input_shape",
        "val_fraction",
        "seed",
        "augment",
        "input_range",
    }
    again = load_dataset(**described)
    assert (again.n_train, again.n_val, again.n_test) == (ds.n_train, ds.n_val, ds.n_test)
    for a, b in zip(first_batch(ds.train(32)), first_batch(again.train(32)), strict=True):
        np.testing.assert_array_equal(a, b)


def test_same_seed_gives_the_same_batches_and_another_seed_another_order():
    ds = load_dataset("digits")
    x1, y1 = first_batch(ds.train(64, seed=7))
    x2, y2 = first_batch(load_dataset("digits").train(64, seed=7))
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(y1, first_batch(ds.train(64, seed=8))[1])


def test_one_pass_pipeline_reshuffles_each_time_it_is_iterated():
    train = load_dataset("digits").train(2000)  # one batch holds the whole split
    first, second = (y.numpy() for _, y in (next(iter(train)), next(iter(train))))
    assert sorted(first) == sorted(second) and not np.array_equal(first, second)


def test_endless_stream_visits_each_image_once_per_pass_and_resumes_exactly(keras_seed):
    ds = load_dataset("digits")
    batches = [y.numpy() for _, y in ds.train(100, repeat=True).take(30)]  # 3000 > 2 passes of 1295
    stream = np.concatenate(batches)
    for k in range(2):
        np.testing.assert_array_equal(
            np.sort(stream[k * ds.n_train : (k + 1) * ds.n_train]), np.sort(ds.labels("train"))
        )
    assert not np.array_equal(stream[: ds.n_train], stream[ds.n_train : 2 * ds.n_train])
    resumed = [y.numpy() for _, y in ds.train(100, repeat=True, start_step=17).take(13)]
    np.testing.assert_array_equal(np.concatenate(resumed), np.concatenate(batches[17:]))


def test_endless_stream_ignores_the_global_tensorflow_seed():
    import keras

    ds = load_dataset("digits")
    keras.utils.set_random_seed(1)
    a = first_batch(ds.train(64, repeat=True))[1]
    keras.utils.set_random_seed(2)
    np.testing.assert_array_equal(a, first_batch(ds.train(64, repeat=True))[1])
    with pytest.raises(UserInputError, match="start_step needs repeat=True"):
        ds.train(64, start_step=3)


def test_sample_is_deterministic_and_matches_the_labels():
    ds = load_dataset("digits", input_shape=(28, 28, 1))
    x, y = ds.sample(20, with_labels=True, seed=5)
    assert x.shape == (20, 28, 28, 1) and y.shape == (20,)
    np.testing.assert_array_equal(x, ds.sample(20, seed=5))
    assert ds.sample(10_000, split="val").shape[0] == ds.n_val  # capped at the split size


# --- MNIST / Fashion-MNIST IDX ------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_idx_files_load_exactly(tmp_path, gz):
    arrays = make_idx_dir(tmp_path, gz=gz)
    ds = load_dataset("fashion-mnist", data_dir=tmp_path)
    assert ds.input_shape == (6, 5, 1) and ds.class_names[0] == "T-shirt/top"
    assert (ds.n_train + ds.n_val, ds.n_test) == (20, 10)
    x, y = first_batch(ds.test(10))  # test order is the file order, no resize needed
    np.testing.assert_allclose(x[..., 0], arrays["t10k-images-idx3-ubyte"] / 255, atol=1e-7)
    np.testing.assert_array_equal(y, arrays["t10k-labels-idx1-ubyte"])
    assert ds.describe()["data_dir"] == str(tmp_path.resolve())


def _corrupt_idx(root: Path, case: str) -> str:
    """Damage one file of a valid IDX folder; return the name of the file the error must name."""
    make_idx_dir(root, gz=False)
    images, labels = root / "train-images-idx3-ubyte", root / "train-labels-idx1-ubyte"
    if case == "wrong magic":
        images.write_bytes(struct.pack(">i", 2049) + images.read_bytes()[4:])
        return images.name
    if case == "truncated":
        images.write_bytes(images.read_bytes()[:-7])
        return images.name
    if case == "trailing bytes":
        labels.write_bytes(labels.read_bytes() + b"\0")
        return labels.name
    if case == "count mismatch":
        write_idx(labels, np.zeros(19), 2049)
        return labels.name
    if case == "label out of range":
        write_idx(labels, np.full(20, 10), 2049)
        return labels.name
    if case == "empty file":
        images.write_bytes(b"")
        return images.name
    if case == "bad gzip":
        images.unlink()
        (root / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b" + b"not really gzip")
        return "train-images-idx3-ubyte.gz"
    if case == "missing file":
        labels.unlink()
        return labels.name
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    [
        "wrong magic",
        "truncated",
        "trailing bytes",
        "count mismatch",
        "label out of range",
        "empty file",
        "bad gzip",
        "missing file",
    ],
)
def test_corrupt_idx_files_name_the_file_and_the_format(tmp_path, case):
    expected_name = _corrupt_idx(tmp_path, case)
    with pytest.raises(DataError, match="IDX") as info:
        load_dataset("mnist", data_dir=tmp_path)
    assert expected_name in str(info.value)


def test_mnist_without_data_dir_and_without_network_says_to_pass_data_dir(monkeypatch):
    import keras

    def offline():
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- [Errno -3]")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    with pytest.raises(DataError, match="Could not download mnist.*--data-dir"):
        load_dataset("mnist")


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason=f"real MNIST not present at {SHARED_MNIST}")
def test_real_mnist_has_the_canonical_counts():
    ds = load_dataset("mnist", data_dir=SHARED_MNIST, val_fraction=0.0)
    assert (ds.n_train, ds.n_val, ds.n_test, ds.input_shape) == (60_000, 0, 10_000, (28, 28, 1))
    assert np.bincount(ds.labels("test")).tolist()[:3] == [980, 1135, 1032]


# --- checksums of the official IDX files (issue 17 item 7) ----------------------------------

_IDX_KEYS = {
    "train-images-idx3-ubyte": "train_images",
    "train-labels-idx1-ubyte": "train_labels",
    "t10k-images-idx3-ubyte": "test_images",
    "t10k-labels-idx1-ubyte": "test_labels",
}


def _digests(root: Path, *, uncompressed: bool) -> dict[str, str]:
    """Computed here, independently of asp: sha256 of each file's uncompressed bytes, or md5 of the
    file as stored (the published kind for .gz files)."""
    out = {}
    for base, key in _IDX_KEYS.items():
        path = next(root.glob(base + "*"))
        data = path.read_bytes()
        if uncompressed:
            out[key] = hashlib.sha256(gzip.decompress(data) if path.suffix == ".gz" else data).hexdigest()
        else:
            out[key] = hashlib.md5(data).hexdigest()
    return out


@pytest.mark.parametrize(("gz", "uncompressed"), [(False, True), (True, True), (True, False)])
def test_fashion_mnist_pointed_at_mnist_files_is_refused_naming_mnist(
    tmp_path, monkeypatch, gz, uncompressed
):
    """A .gz is recognised by the checksum of its content too: any gzip of the official files."""
    from asp_export.data import idx

    make_idx_dir(tmp_path, gz=gz)
    table = {digest: ("mnist", key) for key, digest in _digests(tmp_path, uncompressed=uncompressed).items()}
    monkeypatch.setattr(idx, "KNOWN_FILES", table)  # the files this test wrote play the official MNIST
    with pytest.raises(
        DataError, match=r"official MNIST file train-images-idx3-ubyte, not Fashion-MNIST.*--data mnist"
    ):
        load_dataset("fashion-mnist", data_dir=tmp_path)
    assert load_dataset("mnist", data_dir=tmp_path).n_test == 10


def test_official_files_in_the_wrong_place_and_unknown_files_are_named(tmp_path, monkeypatch, caplog):
    from asp_export.data import idx

    make_idx_dir(tmp_path, gz=False)
    with caplog.at_level("WARNING"):
        load_dataset("mnist", data_dir=tmp_path)  # files nobody published: used, with a warning
    assert "train-images-idx3-ubyte, train-labels-idx1-ubyte" in caplog.text
    assert "match no published MNIST checksum" in caplog.text
    digests = _digests(tmp_path, uncompressed=True)
    table = {digests["train_labels"]: ("mnist", "test_labels")}
    monkeypatch.setattr(idx, "KNOWN_FILES", table)
    with pytest.raises(
        DataError, match="official MNIST file t10k-labels-idx1-ubyte, found where train-labels"
    ):
        load_dataset("mnist", data_dir=tmp_path)


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason=f"real MNIST not present at {SHARED_MNIST}")
def test_real_mnist_files_given_as_fashion_mnist_are_refused():
    with pytest.raises(DataError, match="official MNIST file .* not Fashion-MNIST"):
        load_dataset("fashion-mnist", data_dir=SHARED_MNIST)


# --- CIFAR binary -------------------------------------------------------------------------


def test_cifar10_binary_loads_from_folder_parent_and_archive(tmp_path):
    made = make_cifar10(tmp_path / "extract")
    archive = tmp_path / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(made["folder"], arcname="cifar-10-batches-bin")
    for where in (made["folder"], made["folder"].parent, archive):
        ds = load_dataset("cifar10", data_dir=where, val_fraction=0.0)
        assert (ds.n_train, ds.n_test, ds.num_classes, ds.input_shape) == (10, 3, 10, (32, 32, 3))
        assert ds.class_names[0] == "class0"  # read from batches.meta.txt
        assert ds._splits["train"][0].x.dtype == np.uint8  # kept compact until a batch is formed
        x, y = first_batch(ds.test(3))
        np.testing.assert_allclose(x, made["test"] / 255, atol=1e-7)  # R, G, B planes -> HWC
        assert y.tolist() == [3, 1, 4]


def test_the_other_cifar_is_refused_by_name_and_its_archive_by_checksum(tmp_path, monkeypatch, caplog):
    """Issue 17 item 7 for CIFAR: the CIFAR-10 files given as cifar100 name CIFAR-10."""
    from asp_export.data import cifar

    made = make_cifar10(tmp_path / "extract")
    with pytest.raises(DataError, match="holds the CIFAR-10 binary files .* use --data cifar10"):
        load_dataset("cifar100", data_dir=made["folder"])
    archive = tmp_path / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(made["folder"], arcname="cifar-10-batches-bin")
    with caplog.at_level("WARNING"):
        load_dataset("cifar10", data_dir=archive)  # not the published archive: read, with a warning
    assert "md5 differs from the published CIFAR-10 archive" in caplog.text
    # this archive plays the official one (its md5, computed here, in the table)
    monkeypatch.setitem(cifar.LAYOUTS["cifar10"], "md5", hashlib.md5(archive.read_bytes()).hexdigest())
    with pytest.raises(DataError, match="is the official CIFAR-10 binary archive, not CIFAR-100"):
        load_dataset("cifar100", data_dir=archive)


def test_cifar100_uses_the_fine_label(tmp_path):
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    (folder / "train.bin").write_bytes(cifar_records([57, 99, 0, 1], coarse=[3, 19, 0, 1])[0])
    (folder / "test.bin").write_bytes(cifar_records([99, 57], coarse=[5, 6])[0])  # test classes are trained
    ds = load_dataset("cifar100", data_dir=tmp_path, val_fraction=0.0)
    assert ds.num_classes == 100 and ds.class_names[57] == "pear"
    assert sorted(ds.labels("train").tolist()) == [0, 1, 57, 99] and ds.labels("test").tolist() == [99, 57]


class _WouldRunCode:
    """Unpickling this creates a marker file: proof that a loader called pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("layout", ["bin file", "python folder", "python archive", "file as data_dir"])
def test_pickle_cifar_is_refused_without_unpickling(tmp_path, layout):
    marker = tmp_path / "UNPICKLED"
    payload = pickle.dumps({"data": _WouldRunCode(marker)}, protocol=2)
    assert payload[0] == 0x80
    data_dir = tmp_path / "data"
    if layout == "bin file":
        make_cifar10(data_dir)
        (data_dir / "cifar-10-batches-bin" / "data_batch_3.bin").write_bytes(payload)
    elif layout == "python folder":
        (data_dir / "cifar-10-batches-py").mkdir(parents=True)
        (data_dir / "cifar-10-batches-py" / "data_batch_1").write_bytes(payload)
    elif layout == "python archive":
        data_dir.mkdir()
        archive = data_dir / "cifar-10-python.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        data_dir = archive
    else:
        data_dir.mkdir()
        data_dir = data_dir / "data_batch_1"
        data_dir.write_bytes(payload)
    with pytest.raises(DataError, match="pickle.*never unpickles.*cifar-10-binary.tar.gz"):
        load_dataset("cifar10", data_dir=data_dir)
    assert not marker.exists()


@pytest.mark.parametrize("case", ["truncated record", "label out of range", "missing batch", "empty batch"])
def test_corrupt_cifar_files_name_the_file(tmp_path, case):
    folder = make_cifar10(tmp_path)["folder"]
    target = folder / "data_batch_2.bin"
    if case == "truncated record":
        target.write_bytes(target.read_bytes()[:-100])
    elif case == "label out of range":
        target.write_bytes(cifar_records([1, 10])[0])
    elif case == "missing batch":
        target.unlink()
    else:
        target.write_bytes(b"")
    with pytest.raises(DataError, match="data_batch_2.bin.*official CIFAR binary"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_unreadable_file_is_a_data_error_naming_it(tmp_path, monkeypatch):
    make_cifar10(tmp_path)

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)  # chmod 000 does not stop root: simulate
    with pytest.raises(DataError, match="data_batch_1.bin: cannot read \\(Permission denied\\)"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_cifar_augmentation_is_a_padded_crop_or_flip_and_only_on_train(tmp_path):
    make_cifar10(tmp_path)
    plain = load_dataset("cifar10", data_dir=tmp_path, val_fraction=0.0)
    aug = load_dataset("cifar10", data_dir=tmp_path, val_fraction=0.0, augment=True)
    x_plain, y_plain = first_batch(plain.train(10, shuffle=False))
    x_aug, y_aug = first_batch(aug.train(10, shuffle=False))
    np.testing.assert_array_equal(y_plain, y_aug)
    assert not np.array_equal(x_plain, x_aug)
    np.testing.assert_array_equal(x_aug, first_batch(aug.train(10, shuffle=False))[0])  # deterministic
    padded = np.pad(x_plain, [(0, 0), (4, 4), (4, 4), (0, 0)])
    for i in range(10):  # every augmented image is one of the 9x9 crops of the padded image, maybe flipped
        crops = [padded[i, dy : dy + 32, dx : dx + 32] for dy in range(9) for dx in range(9)]
        assert any(np.array_equal(x_aug[i], c) or np.array_equal(x_aug[i], c[:, ::-1]) for c in crops)
    np.testing.assert_array_equal(first_batch(aug.test(3))[0], first_batch(plain.test(3))[0])
    stream = [x.numpy() for x, _ in aug.train(4, repeat=True).take(5)]
    resumed = [x.numpy() for x, _ in aug.train(4, repeat=True, start_step=3).take(2)]
    np.testing.assert_array_equal(np.stack(resumed), np.stack(stream[3:]))  # same crops and flips
    with pytest.raises(UserInputError, match="only available for CIFAR"):
        load_dataset("digits", augment=True)


def test_cifar_without_data_dir_and_without_network_says_to_pass_data_dir(monkeypatch):
    import keras

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://www.cs.toronto.edu/...")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(DataError, match="Could not download .*cifar-100-binary.tar.gz.*--data-dir"):
        load_dataset("cifar100")


# --- image folders ------------------------------------------------------------------------


def test_folder_dataset_classes_splits_and_shapes(tmp_path):
    root = make_folder(tmp_path / "imgs")
    ds = load_dataset(f"folder:{root}", input_shape=(8, 8, 1), val_fraction=0.25)
    assert ds.class_names == ("cat", "dog", "emu") and ds.num_classes == 3
    assert (ds.n_train, ds.n_val, ds.n_test) == (9, 3, 3)  # per class: 1 test, 1 val, 3 train
    assert ds.native_shape == (6, 7, 3)
    x, y = first_batch(ds.train(4))
    assert x.shape == (4, 8, 8, 1) and x.dtype == np.float32 and y.dtype == np.int32
    assert load_dataset(**ds.describe()).describe() == ds.describe()
    assert ds.describe()["name"] == f"folder:{root.resolve()}"


def test_folder_dataset_streams_from_disk(tmp_path):
    root = make_folder(tmp_path / "imgs")
    ds = load_dataset(f"folder:{root}")
    for png in root.rglob("*.png"):  # changed after loading: batches must see the new pixels
        write_png(png, np.full((6, 7, 3), 255, np.uint8))
    x, _ = first_batch(ds.test(3))
    np.testing.assert_allclose(x, 1.0, atol=1e-6)


_STREAM_PROBE = """
import resource, sys
from asp_export.data import load_dataset
ds = load_dataset("folder:" + sys.argv[1], val_fraction=0.0)
train = ds.train(8)
batches = iter(train)
for _ in range(20):  # warm up TensorFlow's thread pools and the prefetch buffer
    next(batches)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
seen = 20 * 8 + sum(int(x.shape[0]) for x, _ in batches)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(ds.n_train, seen, (after - before) * 1024)
"""


def test_folder_pipeline_memory_does_not_grow_with_the_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(3):  # 840 training images: more than 100 batches of 8
        (tmp_path / f"c{c}").mkdir()
        for i in range(350):
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
                tmp_path / f"c{c}" / f"{i}.png"
            )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "-c", _STREAM_PROBE, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    n_train, seen, growth = (int(v) for v in done.stdout.split()[-3:])
    assert seen == n_train == 840
    decoded = n_train * 64 * 64 * 3 * 4  # the whole training split as float32: 41 MB
    assert growth < decoded / 4, f"peak RSS grew {growth / 2**20:.1f} MB over one epoch"


def test_folder_with_train_and_test_subfolders_keeps_the_given_test_split(tmp_path):
    make_folder(tmp_path / "train", per_class=4)
    make_folder(tmp_path / "test", per_class=2)
    ds = load_dataset(f"folder:{tmp_path}", val_fraction=0.0)
    assert (ds.n_train, ds.n_test, ds.class_names) == (12, 6, ("cat", "dog", "emu"))


def test_folder_reads_gray_png_jpeg_bmp_and_gif(tmp_path):
    from PIL import Image

    gray = np.tile(np.arange(0, 250, 25, dtype=np.uint8), (10, 1))  # 10x10 horizontal ramp
    for fmt, ext in (("PNG", "png"), ("JPEG", "jpg"), ("BMP", "bmp"), ("GIF", "gif")):
        for cls in ("a", "b"):
            (tmp_path / cls).mkdir(exist_ok=True)
            Image.fromarray(gray, mode="L").save(tmp_path / cls / f"img.{ext}", format=fmt)
    ds = load_dataset(f"folder:{tmp_path}", val_fraction=0.0)
    assert ds.native_shape == (10, 10, 1)  # first file is a gray .bmp
    assert ds.n_train + ds.n_test == 8
    x, _ = first_batch(ds.train(8, shuffle=False))
    np.testing.assert_allclose(x[..., 0].mean(axis=(0, 1)), gray[0] / 255, atol=0.03)  # JPEG is lossy


@pytest.mark.parametrize(
    "case", ["empty", "one class", "empty class", "not an image", "truncated png", "truncated bmp", "missing"]
)
def test_bad_folders_are_data_errors(tmp_path, case):
    root = tmp_path / "imgs"
    root.mkdir()
    expected = str(root)
    if case == "one class":
        make_folder(root, classes=("only",))
    elif case == "empty class":
        make_folder(root)
        (root / "zebra").mkdir()
        expected = "zebra"
    elif case == "not an image":
        make_folder(root)
        (root / "dog" / "notes.png").write_text("not a png")
        expected = "notes.png"
    elif case.startswith("truncated"):
        from PIL import Image

        make_folder(root)
        ext = case.split()[1]
        damaged = root / "emu" / f"cut.{ext}"
        Image.fromarray(RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(damaged)  # ~800 bytes
        damaged.write_bytes(damaged.read_bytes()[:-80])
        expected = f"cut.{ext}: truncated"
    elif case == "missing":
        root = tmp_path / "nowhere"
        expected = "nowhere"
    with pytest.raises(DataError, match="subfolder per class") as info:
        load_dataset(f"folder:{root}")
    assert expected in str(info.value)


def test_image_damaged_after_loading_is_named_by_sample(tmp_path):
    root = make_folder(tmp_path / "imgs")
    ds = load_dataset(f"folder:{root}", val_fraction=0.0)
    for png in (root / "dog").glob("*.png"):
        png.write_bytes(png.read_bytes()[:30])
    with pytest.raises(DataError, match=r"dog/\d+\.png: cannot decode image \(Invalid PNG") as info:
        ds.sample(ds.n_train, split="train")
    assert "{{" not in str(info.value)  # no TensorFlow internals in the one-line message


# --- arrays and .npz ---------------------------------------------------------------------


def test_arrays_with_nan_or_no_images_are_refused():
    x = RNG.random((10, 4, 4, 1)).astype(np.float32)
    y = np.arange(10) % 2
    ok = dataset_from_arrays(x, y, x[:4], y[:4], input_shape=(8, 8, 3))
    assert first_batch(ok.test(4))[0].shape == (4, 8, 8, 3)
    x_nan = x.copy()
    x_nan[3, 1, 1, 0] = np.nan
    with pytest.raises(DataError, match="NaN or Inf.*image 3"):
        dataset_from_arrays(x_nan, y, x[:4], y[:4])
    with pytest.raises(DataError, match="empty"):
        dataset_from_arrays(x[:0], y[:0], x[:4], y[:4])
    with pytest.raises(DataError, match="label 5 is out of range"):
        dataset_from_arrays(x, y, x[:4], np.array([0, 1, 5, 0]), class_names=["a", "b"])


def test_npz_loads_like_keras_mnist_npz_and_round_trips(tmp_path):
    x = RNG.integers(0, 256, (12, 5, 5), dtype=np.uint8)
    y = np.arange(12) % 3
    np.savez(
        tmp_path / "mine.npz",
        x_train=x,
        y_train=y,
        x_test=x[:3],
        y_test=y[:3],
        class_names=np.array(["a", "b", "c"]),
    )
    ds = load_dataset(f"npz:{tmp_path / 'mine.npz'}", val_fraction=0.0)
    assert (ds.n_train, ds.n_test, ds.class_names, ds.input_shape) == (12, 3, ("a", "b", "c"), (5, 5, 1))
    np.testing.assert_allclose(first_batch(ds.test(3))[0][..., 0], x[:3] / 255, atol=1e-7)
    assert load_dataset(**ds.describe()).describe() == ds.describe()


@pytest.mark.parametrize("case", ["nan", "inf", "object array", "missing key", "not a zip"])
def test_bad_npz_files_are_data_errors_naming_the_file(tmp_path, case):
    path = tmp_path / "bad.npz"
    x = RNG.random((6, 4, 4)).astype(np.float32)
    y = np.arange(6) % 2
    marker = tmp_path / "UNPICKLED"
    if case in ("nan", "inf"):
        x[2, 0, 0] = np.nan if case == "nan" else np.inf
        np.savez(path, x_train=x, y_train=y, x_test=x, y_test=y)
        pattern = "NaN or Inf"
    elif case == "object array":
        booby = np.array([_WouldRunCode(marker)], dtype=object)
        np.savez(path, x_train=booby, y_train=y, x_test=x, y_test=y)
        pattern = "never unpickles"
    elif case == "missing key":
        np.savez(path, x_train=x, y_train=y)
        pattern = "missing arrays.*x_test"
    else:
        path.write_bytes(b"PK not really a zip")
        pattern = "not a readable .npz"
    with pytest.raises(DataError, match=pattern) as info:
        load_dataset(f"npz:{path}")
    assert str(path) in str(info.value)
    assert not marker.exists()


# --- the model's pixel range (asp_export.input_range) ------------------------------------------


@pytest.mark.parametrize("input_range, low, high", [("0-255", 0.0, 255.0), ("-1-1", -1.0, 1.0)])
def test_every_split_and_sample_is_mapped_to_the_input_range(tmp_path, input_range, low, high):
    """Training, evaluation, parity and calibration all read batches or samples from a Dataset."""
    x = RNG.integers(0, 256, (12, 5, 5), dtype=np.uint8)
    y = np.arange(12) % 3
    np.savez(tmp_path / "u8.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    folder = make_folder(tmp_path / "pngs")
    for name in (f"npz:{tmp_path / 'u8.npz'}", f"folder:{folder}"):
        unit = load_dataset(name, val_fraction=0.25)
        mapped = load_dataset(name, val_fraction=0.25, input_range=input_range)
        assert mapped.describe()["input_range"] == input_range
        assert load_dataset(**mapped.describe()).input_range == input_range
        for split in ("train", "val", "test"):
            pipeline = getattr(unit, split)(4) if split != "train" else unit.train(4, shuffle=False)
            other = getattr(mapped, split)(4) if split != "train" else mapped.train(4, shuffle=False)
            np.testing.assert_allclose(
                first_batch(other)[0], low + (high - low) * first_batch(pipeline)[0], rtol=1e-6, atol=1e-5
            )
            np.testing.assert_allclose(
                mapped.sample(3, split=split), low + (high - low) * unit.sample(3, split=split), atol=1e-5
            )
    if input_range == "0-255":  # uint8 pixels reach a 0-255 model exactly
        exact = load_dataset(f"npz:{tmp_path / 'u8.npz'}", input_range="0-255").sample(12, split="test")
        np.testing.assert_array_equal(exact, x[..., None].astype(np.float32))


def test_float_pixels_outside_0_1_are_refused_unless_they_are_in_the_input_range():
    x = RNG.random((10, 4, 4, 1)).astype(np.float32)
    y = np.arange(10) % 2
    with pytest.raises(DataError, match=r"float pixels span .*--input-range 0-255"):
        dataset_from_arrays(x * 255, y, x * 255, y)
    as_given = dataset_from_arrays(x * 255, y, x * 255, y, input_range="0-255", val_fraction=0.0)
    np.testing.assert_allclose(first_batch(as_given.test(10))[0], x * 255, rtol=1e-6)
    signed = dataset_from_arrays(2 * x - 1, y, 2 * x - 1, y, input_range="-1-1", val_fraction=0.0)
    np.testing.assert_allclose(first_batch(signed.test(10))[0], 2 * x - 1, atol=1e-6)
    with pytest.raises(DataError, match="--input-range -1-1"):
        dataset_from_arrays(2 * x - 1, y, 2 * x - 1, y)
    with pytest.raises(DataError, match="float pixels span"):
        dataset_from_arrays(x * 300, y, x * 300, y, input_range="0-255")
    unit = dataset_from_arrays(x, y, x, y, input_range="0-255", val_fraction=0.0)  # 0..1 floats: pixels
    np.testing.assert_allclose(first_batch(unit.test(10))[0], x * 255, rtol=1e-5)


def test_rgb_to_gray_uses_luminance():
    red = np.zeros((4, 2, 2, 3), np.uint8)
    red[..., 0] = 255
    ds = dataset_from_arrays(red, np.array([0, 1, 0, 1]), red, np.array([0, 1, 0, 1]), input_shape=(2, 2, 1))
    np.testing.assert_allclose(first_batch(ds.test(4))[0], 0.2989, atol=1e-3)


# --- through the CLI: the data rows of the hostile-input catalogue ------------------------


def _hostile_data(tmp_path: Path, case: str) -> tuple[list[str], str]:
    """CLI data arguments for one broken-input case, and a phrase the one-line error must hold."""
    if case == "unknown dataset":
        return ["--data", "cifar11"], "Did you mean 'cifar10'"
    if case == "IDX wrong magic":
        _corrupt_idx(tmp_path / "mnist", "wrong magic")
        return ["--data", "mnist", "--data-dir", str(tmp_path / "mnist")], "wrong magic number"
    if case == "IDX truncated":
        _corrupt_idx(tmp_path / "mnist", "truncated")
        return ["--data", "mnist", "--data-dir", str(tmp_path / "mnist")], "truncated"
    if case == "labels out of range":
        _corrupt_idx(tmp_path / "mnist", "label out of range")
        return ["--data", "mnist", "--data-dir", str(tmp_path / "mnist")], "out of range"
    if case == "CIFAR pickle":
        (tmp_path / "cifar-10-batches-py").mkdir()
        (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(pickle.dumps({"x": 1}, protocol=2))
        return ["--data", "cifar10", "--data-dir", str(tmp_path)], "never unpickles"
    if case in ("NaN pixels", "Inf pixels"):
        x = RNG.random((8, 28, 28, 1)).astype(np.float32)
        x[1, 2, 3, 0] = np.nan if case == "NaN pixels" else -np.inf
        np.savez(tmp_path / "d.npz", x_train=x, y_train=np.arange(8) % 2, x_test=x, y_test=np.arange(8) % 2)
        return ["--data", f"npz:{tmp_path / 'd.npz'}"], "NaN or Inf"
    if case == "empty dataset":
        x = np.zeros((0, 28, 28), np.uint8)
        np.savez(tmp_path / "d.npz", x_train=x, y_train=np.zeros(0, int), x_test=x, y_test=np.zeros(0, int))
        return ["--data", f"npz:{tmp_path / 'd.npz'}"], "empty"
    if case == "empty image folder":
        (tmp_path / "imgs").mkdir()
        return ["--data", f"folder:{tmp_path / 'imgs'}"], "need at least 2"
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    [
        "unknown dataset",
        "IDX wrong magic",
        "IDX truncated",
        "labels out of range",
        "CIFAR pickle",
        "NaN pixels",
        "Inf pixels",
        "empty dataset",
        "empty image folder",
    ],
)
def test_asp_prune_refuses_broken_data_with_one_line_and_exit_2(tmp_path, case):
    from click.testing import CliRunner

    from asp_export.cli import cli

    data_args, phrase = _hostile_data(tmp_path, case)
    out = tmp_path / "run"
    result = CliRunner().invoke(
        cli, ["prune", "--model", "lenet5", *data_args, "--epochs", "1", "--out", str(out)]
    )
    assert result.exit_code == 2, result.output
    assert phrase in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()  # nothing written


def test_a_class_without_test_images_is_named_with_the_counts_per_class(caplog):
    """Issue 17 item 6: the decision (docs/data.md) is to refuse a class without training images and
    to warn, with the counts per class, about a class without test images."""
    x = np.zeros((30, 8, 8), np.uint8)
    y = np.arange(30) % 3
    with caplog.at_level("WARNING"):
        ds = dataset_from_arrays(x, y, x, y % 2)
    assert ds.num_classes == 3
    assert "class 2 has no test images, so their accuracy is not measured" in caplog.text
    assert "(test images per class: 0:20 1:10 2:0)" in caplog.text
    with pytest.raises(DataError, match=r"class 0 has no training images .*0:0 1:10 2:20"):
        dataset_from_arrays(x, np.where(y == 0, 2, y), x, y)
