"""Parity: prove that a written file computes what the Keras model computes.

Each file is run by its real runtime (onnxruntime on the CPU provider, the
LiteRT interpreter, `tf.saved_model.load`), never by the converter's in-memory
object, on the same samples as the Keras model; the logits are compared.

Relative differences are taken against the logit *scale* (the largest |logit|
Keras produced over all samples), not element-wise: element-wise relative error
explodes on logits near zero and says nothing about the prediction.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from asp_export.errors import UserInputError
from asp_export.export.formats import QUANTIZED_PRECISIONS, ExportFormat, check_precision

log = logging.getLogger(__name__)

_FLOAT_DEFAULTS = {"fp32": 1e-4, "fp16": 1e-2}
_DEFAULT_MIN_TOP1 = 0.98


@dataclass(frozen=True)
class Tolerance:
    """Limits a file must meet; None means the figure is reported but not judged."""

    max_rel_diff: float | None = None
    max_abs_diff: float | None = None
    min_top1_agreement: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_rel_diff", "max_abs_diff"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise UserInputError(f"{name} tolerance must be >= 0, got {value}.")
        if self.min_top1_agreement is not None and not 0 <= self.min_top1_agreement <= 1:
            raise UserInputError(f"min top-1 agreement must be in [0, 1], got {self.min_top1_agreement}.")


def default_tolerance(
    precision: str,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    min_top1: float | None = None,
) -> Tolerance:
    """Tolerance for a precision, with user overrides.

    Float precisions (fp32, fp16) are judged by logit distance: `rtol` replaces
    the relative limit (fp32 1e-4, fp16 1e-2 of the logit scale) and `atol` adds
    an absolute one. Quantized precisions (int8, dynamic) are judged by top-1
    agreement (default 0.98), which `min_top1` replaces.

    Example:
        >>> default_tolerance("fp16").max_rel_diff
        0.01
    """
    check_precision(precision)
    if precision in QUANTIZED_PRECISIONS:
        return Tolerance(min_top1_agreement=_DEFAULT_MIN_TOP1 if min_top1 is None else min_top1)
    return Tolerance(max_rel_diff=_FLOAT_DEFAULTS[precision] if rtol is None else rtol, max_abs_diff=atol)


@dataclass
class ParityResult:
    """Figures of one file against its Keras model (the `parity` object in manifest.json)."""

    max_abs_diff: float
    max_rel_diff: float
    top1_agreement: float
    n_samples: int
    data: str
    passed: bool
    tolerance: dict[str, float | None] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    keras_accuracy: float | None = None
    file_accuracy: float | None = None
    accuracy_drop: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able figures; a non-finite figure (NaN/Inf outputs, file not runnable) becomes null."""
        out = {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()
        }
        if self.keras_accuracy is None:
            for key in ("keras_accuracy", "file_accuracy", "accuracy_drop"):
                out.pop(key)
        return out

    def summary(self) -> str:
        """Short figure for progress lines: `max_rel 3e-08 ok`, `top1 0.996 FAILED (...)`."""
        if self.tolerance.get("min_top1_agreement") is not None:
            figure = f"top1 {self.top1_agreement:.4f}"
            if self.accuracy_drop is not None:
                figure += f" acc_drop {self.accuracy_drop:+.4f}"
        else:
            figure = f"max_rel {self.max_rel_diff:.2g}"
        return f"{figure} ok" if self.passed else f"{figure} FAILED ({'; '.join(self.failures)})"


def compare(
    reference: np.ndarray,
    candidate: np.ndarray,
    tolerance: Tolerance,
    *,
    labels: np.ndarray | None = None,
    data: str = "synthetic",
) -> ParityResult:
    """Compare a file's logits with the Keras logits on the same samples.

    Args:
        reference: Keras logits, shape [n, classes].
        candidate: The file's logits for the same inputs.
        tolerance: Limits to judge against.
        labels: Integer class labels of the samples, if known (adds accuracies).
        data: Where the samples came from, recorded as is.

    Returns:
        The figures and whether every limit in `tolerance` holds.
    """
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64).reshape(reference.shape)
    diff = np.abs(reference - candidate)
    max_abs = float(diff.max()) if diff.size else 0.0
    scale = float(np.abs(reference).max()) if reference.size else 0.0
    max_rel = max_abs / scale if scale > 0 else max_abs
    ref_top1 = reference.argmax(axis=-1)
    cand_top1 = candidate.argmax(axis=-1)
    agreement = float((ref_top1 == cand_top1).mean()) if len(reference) else 0.0
    if not np.all(np.isfinite(candidate)):
        max_abs = max_rel = float("inf")

    failures = []
    if tolerance.max_rel_diff is not None and not max_rel <= tolerance.max_rel_diff:
        failures.append(f"max_rel_diff {max_rel:.3g} > {tolerance.max_rel_diff:g}")
    if tolerance.max_abs_diff is not None and not max_abs <= tolerance.max_abs_diff:
        failures.append(f"max_abs_diff {max_abs:.3g} > {tolerance.max_abs_diff:g}")
    if tolerance.min_top1_agreement is not None and not agreement >= tolerance.min_top1_agreement:
        failures.append(f"top1_agreement {agreement:.4f} < {tolerance.min_top1_agreement:g}")

    result = ParityResult(
        max_abs_diff=max_abs,
        max_rel_diff=max_rel,
        top1_agreement=agreement,
        n_samples=int(len(reference)),
        data=data,
        passed=not failures,
        tolerance=asdict(tolerance),
        failures=failures,
    )
    if labels is not None and len(labels) == len(reference):
        labels = np.asarray(labels).reshape(-1)
        result.keras_accuracy = float((ref_top1 == labels).mean())
        result.file_accuracy = float((cand_top1 == labels).mean())
        result.accuracy_drop = result.keras_accuracy - result.file_accuracy
    return result


@contextlib.contextmanager
def full_fp32() -> Iterator[None]:
    """TensorFloat-32 off while TensorFlow computes parity figures, restored afterwards.

    On Ampere and later GPUs TensorFlow runs fp32 matmuls and convolutions in TF32 (10-bit
    mantissa) by default, about 1e-3 relative: a reference computed so would fail every fp32
    file at 1e-4, and a SavedModel run so would fail against an exact reference. CPUs have no
    TF32, so there this changes nothing.
    """
    import tensorflow as tf

    was_enabled = tf.config.experimental.tensor_float_32_execution_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(False)
    try:
        yield
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(was_enabled)


def reference_compute() -> dict[str, Any]:
    """How `keras_logits` computes the reference here, for the manifest: device and TF32 (always off)."""
    import tensorflow as tf

    return {"device": "GPU" if tf.config.list_logical_devices("GPU") else "CPU", "tensor_float_32": False}


def keras_logits(model, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """The reference: the Keras model's outputs in inference mode, in full fp32, as float32 numpy."""
    with full_fp32():
        outputs = [
            np.asarray(model(x[i : i + batch_size], training=False)) for i in range(0, len(x), batch_size)
        ]
    return np.concatenate(outputs, axis=0).astype(np.float32)


def run_file(fmt: ExportFormat, path: str | Path, x: np.ndarray) -> np.ndarray:
    """Run a written file in its format's real runtime and return its logits."""
    module = importlib.import_module(fmt.module)
    return np.asarray(module.predict(Path(path), x), dtype=np.float32)


def check_file(
    fmt: ExportFormat,
    path: str | Path,
    x: np.ndarray,
    reference: np.ndarray,
    tolerance: Tolerance,
    *,
    labels: np.ndarray | None = None,
    data: str = "synthetic",
) -> ParityResult:
    """Run `path` in its runtime on `x` and compare with `reference` (the Keras logits on `x`)."""
    return compare(reference, run_file(fmt, path, x), tolerance, labels=labels, data=data)


def run_in_batches(fn, x: np.ndarray, batch: int | None) -> np.ndarray:
    """Call `fn` on `x` in chunks of a fixed batch size, padding the last chunk (None = all at once)."""
    if batch is None:
        return fn(x)
    outputs = []
    for start in range(0, len(x), batch):
        chunk = x[start : start + batch]
        real = len(chunk)
        if real < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - real, axis=0)], axis=0)
        outputs.append(np.asarray(fn(chunk))[:real])
    return np.concatenate(outputs, axis=0)


__all__ = [
    "ParityResult",
    "Tolerance",
    "check_file",
    "compare",
    "default_tolerance",
    "full_fp32",
    "keras_logits",
    "reference_compute",
    "run_file",
    "run_in_batches",
]
