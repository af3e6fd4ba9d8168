"""The hostile-input catalogue: what a user (or an attacker's file) throws at every command.

Each case goes through the real CLI and must end with the contract's exit code
(2: bad input, 1: a run that failed), one line that names what is wrong, no
traceback, and nothing overwritten: every file in the case's workspace is
hashed before and after. Files that would execute code when loaded carelessly
(a Lambda layer, a pickle) create a marker file if anything runs them.

Per-module details live in test_data.py, test_export.py, test_bench.py, ...;
this file is the one place that proves the contract across commands.
"""

# ruff: noqa: E501 - the case table reads best one case per line

from __future__ import annotations

import errno
import hashlib
import json
import pickle
import shutil
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from asp_export.cli import cli

FAST_PRUNE = ["--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "8"]


@dataclass
class Kit:
    """Files shared by the cases, built once: tiny models, a finished run, hostile files."""

    root: Path
    marker: Path  # appears if hostile code ever runs

    def __truediv__(self, name: str) -> Path:
        return self.root / name


def _lambda_body(x):  # saved as bytecode inside the .keras; must never run on load
    import pathlib

    pathlib.Path(_MARKER[0]).write_text("executed")
    return x


_MARKER: list[str] = [""]


class _Evil:
    """Unpickling this writes the marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "unpickled"))


@pytest.fixture(scope="module")
def kit(tmp_path_factory) -> Kit:
    import keras
    from asp_export.models import create_model

    root = tmp_path_factory.mktemp("hostile")
    marker = root / "EXECUTED"
    kit = Kit(root, marker)

    tiny = create_model("tiny_cnn", input_shape=(16, 16, 1), num_classes=10)
    tiny.save(kit / "tiny.keras")
    rgb = create_model("tiny_cnn", input_shape=(16, 16, 3), num_classes=10)
    rgb.save(kit / "rgb.keras")

    (kit / "notmodel.keras").write_text("this is a shopping list, not a model\n")
    whole = (kit / "tiny.keras").read_bytes()
    (kit / "truncated.keras").write_bytes(whole[: len(whole) // 2])

    _MARKER[0] = str(marker)
    inputs = keras.Input((16, 16, 1))
    hidden = keras.layers.Lambda(_lambda_body)(inputs)
    outputs = keras.layers.Dense(10)(keras.layers.Flatten()(hidden))
    keras.Model(inputs, outputs).save(kit / "lambda.keras")
    marker.unlink()  # building the model ran the body once; from here on nothing may

    with zipfile.ZipFile(kit / "tiny.keras") as source, zipfile.ZipFile(kit / "custom.keras", "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "config.json":
                config = json.loads(data)
                layer = config["config"]["layers"][1]
                layer.update(
                    module="acme.layers", class_name="SecretSauce", registered_name="acme>SecretSauce"
                )
                data = json.dumps(config).encode()
            target.writestr(item, data)

    onnx_dir = root / "onnx"
    onnx_dir.mkdir()
    (onnx_dir / "truncated.onnx").write_bytes(b"\x08\x07\x12\x07tf2onnx" + b"\x00" * 50)
    (onnx_dir / "truncated.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 20)

    cifar = root / "cifar-10-batches-py"
    cifar.mkdir()
    (cifar / "data_batch_1").write_bytes(pickle.dumps({"data": _Evil(str(marker))}, protocol=2))

    idx = root / "idx"
    idx.mkdir()
    for name, magic in (
        ("train-images-idx3-ubyte", 9999),
        ("train-labels-idx1-ubyte", 2049),
        ("t10k-images-idx3-ubyte", 2051),
        ("t10k-labels-idx1-ubyte", 2049),
    ):
        (idx / name).write_bytes(struct.pack(">iiii", magic, 1, 16, 16) + bytes(256))

    x = np.random.default_rng(0).random((20, 16, 16, 1), dtype=np.float32)
    y = np.arange(20) % 3
    np.savez(kit / "labels.npz", x_train=x, y_train=y - 5, x_test=x, y_test=y)
    nan = x.copy()
    nan[3, 4, 5, 0] = np.nan
    np.savez(kit / "nan.npz", x_train=nan, y_train=y, x_test=x, y_test=y)
    inf = x.copy()
    inf[0, 0, 0, 0] = np.inf
    np.savez(kit / "inf.npz", x_train=x, y_train=y, x_test=inf, y_test=y)
    np.savez(kit / "labels-from-1.npz", x_train=x, y_train=y % 10 + 1, x_test=x, y_test=y % 10 + 1)
    np.savez(kit / "test-only-class.npz", x_train=x, y_train=y, x_test=x, y_test=np.where(y == 2, 3, y))
    np.savez(kit / "float255.npz", x_train=x * 255, y_train=y, x_test=x * 255, y_test=y)  # 0..255 as floats
    empty = root / "empty"
    for cls in ("cat", "dog"):
        (empty / cls).mkdir(parents=True)

    (kit / "baseline.json").write_text('{"schema_version": 1, "size": ')
    run = root / "run"
    result = CliRunner().invoke(
        cli, ["prune", "--model", "tiny_cnn", "--input-shape", "16,16,1", *FAST_PRUNE, "--out", str(run)]
    )
    assert result.exit_code == 0, result.output
    newer = root / "newer-run"
    shutil.copytree(run, newer)
    for name in ("config.json", "report.json"):
        written = json.loads((newer / name).read_text())
        (newer / name).write_text(json.dumps({**written, "schema_version": 99}))
    photos = root / "photos"
    photos.mkdir()
    (photos / "holiday.jpg").write_bytes(b"\xff\xd8 precious")
    result = CliRunner().invoke(
        cli, ["check", str(run), "--write-baseline", "--baseline", str(kit / "good-baseline.json")]
    )
    assert result.exit_code == 0, result.output
    (kit / "a-file").write_text("a regular file; nothing can be created under it\n")
    return kit


# (id, argv builder, exit code, key phrase). Paths come from the kit.
Case = tuple[str, Callable[[Kit], list[str]], int, str]
CASES: list[Case] = [
    ("prune-nonmodel", lambda k: ["prune", "--model", str(k / "notmodel.keras"), "--out", str(k / "o")], 2,
     "notmodel.keras"),
    ("shrink-nonmodel", lambda k: ["shrink", str(k / "notmodel.keras"), "-t", "0", "--out", str(k / "small.keras")], 2, "notmodel.keras"),
    ("export-nonmodel", lambda k: ["export", str(k / "notmodel.keras")], 2, "notmodel.keras"),
    ("prune-truncated-keras", lambda k: ["prune", "--model", str(k / "truncated.keras"), "--out", str(k / "o")], 2,
     "truncated.keras"),
    ("shrink-truncated-keras", lambda k: ["shrink", str(k / "truncated.keras"), "-t", "0", "--out", str(k / "small.keras")], 2, "truncated.keras"),
    ("bench-truncated-onnx", lambda k: ["bench", str(k / "onnx" / "truncated.onnx"), "--batch", "1"], 2,
     "truncated.onnx"),
    ("bench-truncated-tflite", lambda k: ["bench", str(k / "onnx" / "truncated.tflite"), "--batch", "1"], 2,
     "truncated.tflite"),
    ("shrink-lambda", lambda k: ["shrink", str(k / "lambda.keras"), "-t", "0", "--out", str(k / "small.keras")], 2, "Lambda"),
    ("export-lambda", lambda k: ["export", str(k / "lambda.keras")], 2, "Lambda"),
    ("prune-lambda", lambda k: ["prune", "--model", str(k / "lambda.keras"), "--out", str(k / "o")], 2, "Lambda"),
    ("shrink-unknown-custom-object", lambda k: ["shrink", str(k / "custom.keras"), "-t", "0", "--out", str(k / "small.keras")], 2,
     "not registered"),
    ("prune-cifar-pickle", lambda k: ["prune", "--model", "tiny_cnn", "--data", "cifar10", "--data-dir",
                                      str(k / "cifar-10-batches-py"), "--out", str(k / "o")], 2, "pickle"),
    ("prune-idx-wrong-magic", lambda k: ["prune", "--model", "lenet5", "--data", "mnist", "--data-dir",
                                         str(k / "idx"), "--out", str(k / "o")], 2, "magic"),
    ("prune-labels-out-of-range", lambda k: ["prune", "--model", "tiny_cnn", "--data", f"npz:{k / 'labels.npz'}",
                                             "--out", str(k / "o")], 2, "label"),
    ("prune-nan-pixels", lambda k: ["prune", "--model", "tiny_cnn", "--data", f"npz:{k / 'nan.npz'}",
                                    "--out", str(k / "o")], 2, "NaN"),
    ("prune-inf-pixels", lambda k: ["prune", "--model", "tiny_cnn", "--data", f"npz:{k / 'inf.npz'}",
                                    "--out", str(k / "o")], 2, "Inf"),
    ("prune-float-pixels-in-0-255", lambda k: ["prune", "--model", "tiny_cnn", "--data", f"npz:{k / 'float255.npz'}",
                                               "--out", str(k / "o")], 2, "--input-range 0-255"),
    ("prune-empty-folder-dataset", lambda k: ["prune", "--model", "tiny_cnn", "--data", f"folder:{k / 'empty'}",
                                              "--out", str(k / "o")], 2, "image"),
    # As root, chmod 0o500 does not stop writes; a path under a regular file is unwritable for everyone.
    ("prune-out-under-a-file", lambda k: ["prune", "--model", "tiny_cnn", "--out", str(k / "a-file" / "run")], 2,
     "a-file"),
    ("export-out-under-a-file", lambda k: ["export", str(k / "run"), "--out", str(k / "a-file" / "x")], 2,
     "a-file"),
    ("bench-unknown-provider", lambda k: ["bench", str(k / "run"), "--provider", "quantum"], 2, "quantum"),
    ("bench-unknown-runtime", lambda k: ["bench", str(k / "run"), "--runtime", "tensorrt-llm"], 2, "tensorrt-llm"),
    ("export-unknown-format", lambda k: ["export", str(k / "run"), "--format", "caffe"], 2, "caffe"),
    ("check-malformed-baseline", lambda k: ["check", str(k / "run"), "--baseline", str(k / "baseline.json")], 2,
     "baseline.json"),
    ("export-newer-schema", lambda k: ["export", str(k / "newer-run")], 2, "newer"),
    ("check-newer-schema", lambda k: ["check", str(k / "newer-run"), "--baseline", str(k / "good-baseline.json")],
     2, "newer"),
    ("prune-resume-non-run-dir", lambda k: ["prune", "--resume", str(k / "photos")], 2, "not an asp run directory"),
    ("prune-force-non-run-dir", lambda k: ["prune", "--model", "tiny_cnn", "--out", str(k / "photos"), "--force"],
     2, "not an asp run directory"),
    ("prune-existing-run-without-force", lambda k: ["prune", "--model", "tiny_cnn", "--out", str(k / "run")], 2,
     "--force"),
    ("prune-zero-batch", lambda k: ["prune", "--model", "tiny_cnn", "--batch-size", "0", "--out", str(k / "o")], 2,
     "batch size"),
    ("prune-negative-batch", lambda k: ["prune", "--model", "tiny_cnn", "--batch-size", "-4",
                                        "--out", str(k / "o")], 2, "batch size"),
    ("bench-zero-batch", lambda k: ["bench", str(k / "run"), "--batch", "0"], 2, "batch"),
    ("prune-threshold-nan", lambda k: ["prune", "--model", "tiny_cnn", "--threshold", "nan", "--out", str(k / "o")],
     2, "threshold"),
    ("shrink-threshold-nan", lambda k: ["shrink", str(k / "tiny.keras"), "-t", "nan", "--out", str(k / "small.keras")], 2, "threshold"),
    ("prune-unknown-model", lambda k: ["prune", "--model", "resnet-9000", "--out", str(k / "o")], 2, "resnet-9000"),
    ("bench-missing-file", lambda k: ["bench", str(k / "nowhere.onnx")], 2, "nowhere.onnx"),
    # issue 17: inputs that used to be accepted and silently wrong
    ("prune-labels-numbered-from-1", lambda k: ["prune", "--model", "tiny_cnn", "--data", f"npz:{k / 'labels-from-1.npz'}",
                                                "--out", str(k / "o")], 2, "labels run 1..3: number the classes from 0"),
    ("prune-class-only-in-test", lambda k: ["prune", "--model", "tiny_cnn", "--data", f"npz:{k / 'test-only-class.npz'}",
                                            "--out", str(k / "o")], 2, "class 3 has no training images (train images per class: 0:7 1:7 2:6 3:0)"),
    ("prune-exclude-unknown-layer", lambda k: ["prune", "--model", "tiny_cnn", "--input-shape", "16,16,1", "--exclude", "conv9",
                                               "--out", str(k / "o")], 2, "unknown --exclude layer 'conv9'. did you mean 'conv2'? valid: conv1, conv2, fc1"),
    ("prune-zero-epochs", lambda k: ["prune", "--model", "tiny_cnn", "--epochs", "0", "--out", str(k / "o")], 2,
     "--epochs must be >= 1"),
    # issue 12.3: a target no cut can reach, refused before training
    ("prune-unreachable-target", lambda k: ["prune", "--model", "lenet5", "--input-shape", "16,16,1", "--target-flops",
                                            "0.999", "--out", str(k / "o")], 2, "--target-flops 0.999 cannot be reached on lenet5"),
    ("sweep-unreachable-target", lambda k: ["sweep", "--model", "lenet5", "--input-shape", "16,16,1", "--methods", "ssl",
                                            "--targets", "0.5,0.999", "--target-kind", "flops", "--out", str(k / "s")], 2,
     "--target-flops 0.999 cannot be reached on lenet5"),
    ("prune-input-too-small-for-the-model", lambda k: ["prune", "--model", "lenet5", "--input-shape", "8,8,1",
                                                       "--out", str(k / "o")], 2, "cannot be built for input shape"),
    # --force over a complete run: the new run fails its checks, the old one stays whole
    ("prune-force-model-cannot-be-built", lambda k: ["prune", "--model", "lenet5", "--input-shape", "8,8,1",
                                                     "--out", str(k / "run"), "--force"], 2, "cannot be built"),
    ("prune-resume-with-other-options", lambda k: ["prune", "--resume", str(k / "run"), "--epochs", "4",
                                                   "--target-flops", "0.3"], 2, "--epochs=4 (run: 1)"),
    ("check-unknown-allow-missing", lambda k: ["check", str(k / "run"), "--baseline", str(k / "good-baseline.json"),
                                               "--allow-missing", "benhc"], 2, "benhc"),
]  # fmt: skip


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _param(case) -> object:
    return pytest.param(*case[1:], id=case[0])


@pytest.mark.parametrize(("argv", "exit_code", "phrase"), [_param(c) for c in CASES])
def test_hostile_input_gets_one_line_and_the_contract_exit_code(kit, argv, exit_code, phrase):
    before = _snapshot(kit.root)

    result = CliRunner().invoke(cli, argv(kit))

    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output
    lines = result.output.splitlines()  # stdout and stderr together: nothing but the one line
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert phrase.lower() in lines[0].lower(), result.output
    assert not kit.marker.exists(), "hostile code was executed"
    assert _snapshot(kit.root) == before, "a hostile input changed or created files"
    assert not (kit / "o").exists(), "a run directory was created for bad input"


def test_fashion_mnist_pointed_at_mnist_files_is_refused_naming_mnist(tmp_path, monkeypatch):
    """Issue 17 item 7, through the CLI; files written here stand in for the official MNIST ones."""
    from asp_export.data import idx

    data = tmp_path / "mnist"
    data.mkdir()
    table = {}
    for key, base in idx.FILES.items():
        count = 20 if key.startswith("train") else 10
        if key.endswith("images"):
            raw = struct.pack(">iiii", 2051, count, 16, 16) + bytes(range(256)) * count
        else:
            raw = struct.pack(">ii", 2049, count) + bytes(i % 10 for i in range(count))
        (data / base).write_bytes(raw)
        table[hashlib.sha256(raw).hexdigest()] = ("mnist", key)
    monkeypatch.setattr(idx, "KNOWN_FILES", table, raising=False)
    out = tmp_path / "o"
    argv = [
        "prune",
        "--model",
        "tiny_cnn",
        "--data",
        "fashion-mnist",
        "--data-dir",
        str(data),
        "--out",
        str(out),
    ]

    result = CliRunner().invoke(cli, argv)

    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "is the official MNIST file" in errors[0], result.output
    assert "Traceback" not in result.output and not out.exists()


def test_the_catalogue_has_at_least_twenty_cases():
    assert len(CASES) >= 20


def test_a_color_model_on_gray_data_gets_the_gray_images_as_three_channels(kit, tmp_path):
    """Decision: gray data for an RGB model is converted (channels repeated), as for a zoo model."""
    out = tmp_path / "run"
    result = CliRunner().invoke(
        cli, ["prune", "--model", str(kit / "rgb.keras"), *FAST_PRUNE, "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["input_shape"] == [16, 16, 3]


def test_float_pixels_in_0_255_are_used_as_given_when_the_input_range_is_0_255(kit, tmp_path):
    """The same npz the catalogue refuses is accepted once the user says the model takes 0..255."""
    out = tmp_path / "run"
    data = ["--data", f"npz:{kit / 'float255.npz'}", "--input-range", "0-255"]
    result = CliRunner().invoke(cli, ["prune", "--model", "tiny_cnn", *data, *FAST_PRUNE, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["input_range"] == "0-255"


def test_disk_full_while_writing_leaves_no_partial_file(kit, tmp_path, monkeypatch):
    """ENOSPC at the final rename: exit 1, the OS's words, no file under the final name, no temporary."""
    import asp_export._io as io

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io.os, "replace", full)
    out = tmp_path / "small.keras"

    result = CliRunner().invoke(cli, ["shrink", str(kit / "tiny.keras"), "-t", "0", "--out", str(out)])

    assert result.exit_code == 1, result.output
    assert "No space left on device" in result.output
    assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []
