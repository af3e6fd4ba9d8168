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


# a real cut (l1-filter to a FLOPs target), so surgery rebuilds the converted Sequential model
PRUNE = [
    "--method",
    "l1-filter",
    "--target-flops",
    "0.3",
    "--epochs",
    "4",
    "--batch-size",
    "8",
    "--lr",
    "3e-3",
]
BENCH = ["--runtime", "onnxruntime", "--provider", "cpu", "--batch", "1", "--warmup", "1"]
BENCH += ["--iterations", "3", "--min-time", "0", "--max-time", "1"]


def test_a_sequential_keras_model_goes_through_prune_export_bench_check(tmp_path, pngs):
    model = _keras_io_cnn(tmp_path / "seq.keras")
    run = tmp_path / "run"
    result = _asp("prune", "--model", str(model), "--data", f"folder:{pngs}", *PRUNE, "--out", str(run))
    assert result.exit_code == 0, result.output
    report = json.loads((run / "report.json").read_text())
    assert report["pruned"]["flops"] < 0.8 * report["dense"]["flops"]
    assert report["pruned"]["accuracy"] >= 0.9, report["pruned"]
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


def _prune_accuracy(model: Path, pngs: Path, out: Path) -> tuple[float, dict]:
    args = ["--method", "none", "--epochs", "4", "--batch-size", "8", "--lr", "3e-3"]
    result = _asp("prune", "--model", str(model), "--data", f"folder:{pngs}", *args, "--out", str(out))
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    return report["dense"]["accuracy"], json.loads((out / "config.json").read_text())


def test_a_leading_rescaling_model_learns_as_well_as_one_without(tmp_path, pngs):
    """keras.io's Rescaling(1/255) expects 0..255; fed 0..1 it trained at chance (issue 12.2)."""
    plain, plain_config = _prune_accuracy(_keras_io_cnn(tmp_path / "plain.keras"), pngs, tmp_path / "plain")
    model = _keras_io_cnn(tmp_path / "rescaled.keras", rescaling=True)
    rescaled, config = _prune_accuracy(model, pngs, tmp_path / "rescaled")
    assert (plain_config["input_range"], config["input_range"]) == ("0-1", "0-255")
    assert config["data"]["input_range"] == "0-255"  # what export reloads for parity and calibration
    assert plain >= 0.9, f"the reference model did not learn ({plain:.2f}); the test says nothing"
    assert rescaled >= plain - 0.1, f"{rescaled:.2f} with Rescaling(1/255) vs {plain:.2f} without"

    result = _asp("export", str(tmp_path / "rescaled"), "--format", "onnx", "--models", "dense")
    assert result.exit_code == 0, result.output
    (entry,) = json.loads((tmp_path / "rescaled" / "export" / "manifest.json").read_text())["files"]
    assert entry["parity"]["passed"]
    result = _asp("export", str(tmp_path / "rescaled"), "--input-range", "0-1", "--force")
    assert result.exit_code == 2 and "trained on input range 0-255" in result.output


def test_a_bare_keras_file_is_checked_on_inputs_in_its_own_range(tmp_path):
    from asp_export.export.source import Samples, load_model, resolve_source

    path = _keras_io_cnn(tmp_path / "rescaled.keras", rescaling=True)
    for explicit, low, high in ((None, 0.0, 255.0), ("-1-1", -1.0, 1.0)):
        source = resolve_source(path)
        model = load_model(path)
        assert source.choose_input_range(explicit, model) == ("0-255" if explicit is None else explicit)
        x = Samples(source, (SIZE, SIZE, 1)).synthetic(64, seed=0)
        assert low <= x.min() < low + 0.1 * (high - low) and high - 0.1 * (high - low) < x.max() <= high
        assert f"[{low:g}, {high:g}]" in source.preprocessing((SIZE, SIZE, 1))


@pytest.mark.parametrize(
    "first, expected",
    [
        ("rescaling", "0-255"),  # keras.io, EfficientNet, RegNet: Rescaling(1/255)
        ("rescaling-signed", "0-255"),  # MobileNetV3: Rescaling(1/127.5, offset=-1)
        ("normalization-imagenet-255", "0-255"),  # ConvNeXt: ImageNet mean x 255
        ("normalization-unit", "0-1"),
        ("resizing-then-rescaling", "0-255"),
        ("nested-rescaling", "0-255"),
        ("conv", None),
        ("rescaling-by-2", None),
    ],
)
def test_the_input_range_is_read_from_the_leading_preprocessing_layers(first, expected):
    import keras
    from keras import layers

    from asp_export.input_range import detect_input_range, resolve_input_range

    inputs = keras.Input((8, 8, 3))
    front = {
        "rescaling": [layers.Rescaling(1 / 255)],
        "rescaling-signed": [layers.Rescaling(1 / 127.5, offset=-1)],
        "normalization-imagenet-255": [
            layers.Normalization(mean=[123.675, 116.28, 103.53], variance=[3409.98, 3262.69, 3291.89])
        ],
        "normalization-unit": [layers.Normalization(mean=[0.485, 0.456, 0.406], variance=[0.05, 0.05, 0.05])],
        "resizing-then-rescaling": [layers.Resizing(8, 8), layers.Rescaling(1 / 255)],
        "nested-rescaling": [keras.Sequential([layers.Rescaling(1 / 255)], name="preprocess")],
        "conv": [],
        "rescaling-by-2": [layers.Rescaling(2.0, offset=-1)],
    }[first]
    x = inputs
    for layer in front:
        x = layer(x)
    model = keras.Model(inputs, layers.Dense(2)(layers.Flatten()(layers.Conv2D(2, 3)(x))))
    detected, why = detect_input_range(model)
    assert detected == expected, why
    chosen, reason = resolve_input_range("-1-1", model)
    assert chosen == "-1-1" and "--input-range" in reason  # an explicit range always wins
    assert resolve_input_range(None, model)[0] == (expected or "0-1")
