"""A user's own `.keras` model, written as keras.io writes it, through the whole CLI:
prune (on a `folder:` dataset of PNGs) -> export -> bench -> check."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from asp_export.cli import cli

SIZE = 12
CLASSES = 3


def _asp(*args: str):
    return CliRunner().invoke(cli, list(args))


def _write_pngs(root: Path, per_class: int = 24) -> Path:
    """Three classes told apart by which half of the image is bright (PNG, uint8 0..255)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(CLASSES):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            image = rng.integers(0, 60, (SIZE, SIZE), dtype=np.uint8)
            bright = [np.s_[: SIZE // 2], np.s_[SIZE // 2 :], np.s_[:, : SIZE // 2]][c]
            image[bright] += 150
            Image.fromarray(image).save(root / f"class{c}" / f"{i:02d}.png")
    return root


def _keras_io_cnn(path: Path, *, rescaling: bool = False) -> Path:
    """The keras.io MNIST convnet, small: Sequential Conv-Pool-Conv-Pool-Flatten-Dropout-Dense."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    stack = [keras.Input(shape=(SIZE, SIZE, 1))]
    if rescaling:
        stack.append(layers.Rescaling(1.0 / 255))
    stack += [
        layers.Conv2D(8, 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Conv2D(16, 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dropout(0.5),
        layers.Dense(CLASSES, activation="softmax"),
    ]
    keras.Sequential(stack).save(path)
    return path


@pytest.fixture(scope="module")
def pngs(tmp_path_factory) -> Path:
    return _write_pngs(tmp_path_factory.mktemp("pngs") / "data")


PRUNE = ["--epochs", "3", "--batch-size", "16", "--lr", "3e-3"]
BENCH = ["--runtime", "onnxruntime", "--provider", "cpu", "--batch", "1", "--warmup", "1"]
BENCH += ["--iterations", "3", "--min-time", "0", "--max-time", "1"]


def test_a_sequential_keras_model_goes_through_prune_export_bench_check(tmp_path, pngs):
    model = _keras_io_cnn(tmp_path / "seq.keras")
    run = tmp_path / "run"
    result = _asp("prune", "--model", str(model), "--data", f"folder:{pngs}", *PRUNE, "--out", str(run))
    assert result.exit_code == 0, result.output
    assert (run / "dense.keras").is_file() and (run / "pruned.keras").is_file()
    result = _asp("export", str(run), "--format", "onnx")
    assert result.exit_code == 0, result.output
    manifest = json.loads((run / "export" / "manifest.json").read_text())
    assert {entry["model"] for entry in manifest["files"]} == {"dense", "pruned"}
    result = _asp("bench", str(run), *BENCH)
    assert result.exit_code == 0, result.output
    baseline = tmp_path / "asp-baseline.json"
    result = _asp("check", str(run), "--baseline", str(baseline), "--write-baseline")
    assert result.exit_code == 0, result.output
    result = _asp("check", str(run), "--baseline", str(baseline))
    assert result.exit_code == 0, result.output
