"""What is being exported: a run directory or a bare .keras file, its models and its samples.

A run directory brings real data: parity runs on its dataset's test split and
int8 calibration on its training split, exactly as `asp prune` saw them (pixel
range included). A bare .keras file has no data, so it is checked on synthetic
inputs (uniform over its input range: --input-range, else read from the model,
else [0, 1]; seed 0) and the manifest says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from asp_export.errors import RunDirError, UserInputError, unknown_name_error
from asp_export.input_range import DEFAULT_RANGE, bounds, resolve_input_range
from asp_export.keras_io import load_keras_model
from asp_export.rundir import MODEL_KINDS, RunDir, read_json

log = logging.getLogger(__name__)

SYNTHETIC = "synthetic"


@dataclass
class ModelFile:
    """One model to export: its kind in the manifest, its file stem for output names, and its path."""

    kind: str
    label: str
    path: Path


@dataclass
class ExportSource:
    """A resolved export source."""

    path: Path
    is_run: bool
    models: list[ModelFile]
    config: dict[str, Any] | None = None
    missing: list[str] = field(default_factory=list)
    input_range: str = DEFAULT_RANGE  # set by choose_input_range

    def choose_input_range(self, explicit: str | None, model) -> str:
        """A run's recorded range (an explicit one must agree); a bare file: explicit, else the model's."""
        if self.is_run:
            recorded = ((self.config or {}).get("data") or {}).get("input_range", DEFAULT_RANGE)
            if explicit is not None and explicit != recorded:
                raise UserInputError(
                    f"{self.path} was trained on input range {recorded}; drop --input-range {explicit} "
                    "(it is for bare .keras files)."
                )
            self.input_range = recorded
        else:
            self.input_range, why = resolve_input_range(explicit, model)
            log.info("input range %s: %s", self.input_range, why)
        return self.input_range

    @property
    def default_out(self) -> Path:
        root = self.path if self.is_run else self.path.parent
        return RunDir(root).export_dir

    @property
    def dataset_name(self) -> str | None:
        data = (self.config or {}).get("data") or {}
        return data.get("name")

    def preprocessing(self, input_shape: tuple[int, ...], layout: str = "NHWC") -> str:
        """Plain-text input contract stored in ONNX metadata (`input_shape` is the model's H, W, C)."""
        shape = "x".join(str(d) for d in input_shape)
        dims = input_shape if layout == "NHWC" else (input_shape[2], input_shape[0], input_shape[1])
        tensor = f"float32 {layout} [N,{','.join(map(str, dims))}]"
        low, high = bounds(self.input_range)
        if self.dataset_name:
            return (
                f"{tensor} ({shape} per image), pixel values "
                f"scaled to [{low:g}, {high:g}], as asp's {self.dataset_name!r} dataset loader produces"
            )
        return (
            f"{tensor}; pixel values in [{low:g}, {high:g}], other preprocessing unknown (bare .keras file)"
        )


def resolve_source(path: str | Path, models: list[str] | None = None) -> ExportSource:
    """Resolve RUN_DIR or MODEL.keras into the model files to export.

    Args:
        path: A run directory written by `asp prune`, or a `.keras` file. A `dense.keras` or
            `pruned.keras` inside a run directory is exported as part of that run (with its data).
        models: Which of dense/pruned to export from a run directory; None means whichever exist.

    Raises:
        RunDirError: the path does not exist, is not a run directory, or lacks a requested model.
        UserInputError: the file is not a .keras file, or an unknown model kind was asked for.
    """
    path = Path(path)
    for kind in models or ():
        if kind not in MODEL_KINDS:
            raise unknown_name_error("model kind", kind, MODEL_KINDS)
    if not path.exists():
        raise RunDirError(
            f"{path} does not exist; give a run directory written by `asp prune` or a .keras file."
        )
    if path.is_file():
        if path.suffix != ".keras":
            raise UserInputError(
                f"{path} is not a .keras file; asp exports Keras 3 .keras archives "
                "(re-save legacy .h5 models with model.save('model.keras'))."
            )
        if path.stem in MODEL_KINDS and RunDir(path.parent).is_run_dir():
            return resolve_source(path.parent, [path.stem])
        kind = "pruned" if path.stem == "pruned" else "dense"
        return ExportSource(path=path, is_run=False, models=[ModelFile(kind, path.stem, path)])

    run = RunDir.open(path)
    config = read_json(run.config_json)
    wanted = list(models) if models else list(MODEL_KINDS)
    present = [ModelFile(k, k, run.model_path(k)) for k in wanted if run.model_path(k).is_file()]
    missing = [k for k in wanted if not run.model_path(k).is_file()]
    if missing and models:
        raise RunDirError(
            f"{run.root} has no {', '.join(f'{k}.keras' for k in missing)}; "
            "finish `asp prune` for this run or drop it from --models."
        )
    if not present:
        raise RunDirError(
            f"{run.root} has neither dense.keras nor pruned.keras; run `asp prune` to completion first."
        )
    if missing:
        log.warning(
            "%s has no %s; exporting %s only",
            run.root,
            ", ".join(f"{k}.keras" for k in missing),
            ", ".join(m.kind for m in present),
        )
    return ExportSource(path=run.root, is_run=True, models=present, config=config, missing=missing)


def load_model(path: Path):
    """Load a .keras file safely (no lambdas, no compile); failures become a one-line ModelLoadError."""
    return as_functional(load_keras_model(path), path)


def as_functional(model, path: Path | str = "model"):
    """Check the model is a single-input, single-output image model; make a Sequential functional.

    tf2onnx cannot convert a `keras.Sequential` directly (it has no symbolic input).
    """
    from asp_export.keras_io import to_functional

    model = to_functional(model)
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise UserInputError(
            f"{path}: asp exports single-input, single-output classifiers; this model has "
            f"{len(model.inputs)} inputs and {len(model.outputs)} outputs."
        )
    if len(model.input_shape) != 4 or any(d is None for d in model.input_shape[1:]):
        raise UserInputError(f"{path}: expected an image input (None, H, W, C), got {model.input_shape}.")
    return model


class Samples:
    """Parity and calibration inputs for one source, loaded once and shared by all files."""

    def __init__(self, source: ExportSource, input_shape: tuple[int, ...]) -> None:
        self.source = source
        self.input_shape = tuple(input_shape)
        self._dataset = None
        self._dataset_error: str | None = None
        if source.is_run:
            self._dataset = self._load_dataset()

    @property
    def is_real(self) -> bool:
        return self._dataset is not None

    def _load_dataset(self):
        try:
            from asp_export.data import load_dataset
        except ImportError as err:
            self._dataset_error = f"asp_export.data is not available ({err})"
            log.warning("cannot load the run's data: %s; checking on SYNTHETIC inputs", self._dataset_error)
            return None
        data = dict((self.source.config or {}).get("data") or {})
        try:
            return load_dataset(**data)
        except Exception as err:  # noqa: BLE001 - fall back, loudly; the manifest records 'synthetic'
            self._dataset_error = f"{type(err).__name__}: {err}"
            log.warning(
                "cannot load the run's dataset %r (%s); checking on SYNTHETIC inputs",
                data.get("name"),
                self._dataset_error,
            )
            return None

    def parity(self, n: int) -> tuple[np.ndarray, np.ndarray | None, str]:
        """(x, labels or None, description) for parity: the run's test split, else synthetic."""
        if self._dataset is not None:
            x, y = self._dataset.sample(n, split="test", with_labels=True)
            self._check_shape(x)
            return np.asarray(x, np.float32), np.asarray(y), f"test split of {self._dataset.name}"
        return self.synthetic(n, seed=0), None, SYNTHETIC

    def calibration(self, n: int) -> tuple[np.ndarray, str]:
        """(x, description) for int8 calibration: the run's training split, else synthetic."""
        if self._dataset is not None:
            x = self._dataset.sample(n, split="train")
            self._check_shape(x)
            return np.asarray(x, np.float32), f"train split of {self._dataset.name}"
        return self.synthetic(n, seed=1), SYNTHETIC

    def synthetic(self, n: int, seed: int) -> np.ndarray:
        low, high = bounds(self.source.input_range)
        return np.random.default_rng(seed).uniform(low, high, size=(n, *self.input_shape)).astype(np.float32)

    def _check_shape(self, x: np.ndarray) -> None:
        if tuple(x.shape[1:]) != self.input_shape:
            raise UserInputError(
                f"The run's data has shape {tuple(x.shape[1:])} but the model expects {self.input_shape}; "
                "config.json does not match the model."
            )
