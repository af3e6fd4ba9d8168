"""The FORMATS table: one row per deployable format, looked up by key.

One table drives the exporter (which module writes and runs a format), the CLI
(`click.Choice` of keys and precisions), the benchmark (which runtime opens a
file) and docs/formats.md (`formats_markdown()`), so adding a format is one row
plus one module `asp_export/export/<key>.py` with `export()` and `predict()`.
Nothing here imports TensorFlow or a runtime.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from dataclasses import dataclass

from asp_export.errors import UserInputError, unknown_name_error
from asp_export.rundir import ARTIFACT_SUFFIXES

#: Every precision asp knows, in the order the CLI lists them.
PRECISIONS = ("fp32", "fp16", "int8", "dynamic")

#: Input layouts: asp's models are NHWC; ONNX files can take NCHW instead (`asp export --nchw`).
LAYOUTS = ("NHWC", "NCHW")

#: Precisions whose parity is judged by top-1 agreement rather than by logit distance.
QUANTIZED_PRECISIONS = ("int8", "dynamic")

PRECISION_HELP = {
    "fp32": "float32 weights and activations",
    "fp16": "float16 weights (inputs and outputs stay float32)",
    "int8": "full-integer int8 weights and activations, calibrated on real training samples",
    "dynamic": "dynamic-range quantization: int8 weights, float activations, no calibration data",
}


@dataclass(frozen=True)
class ExportFormat:
    """One deployable format.

    Attributes:
        key: Lowercase id used on the command line and in manifest.json (`format`).
        name: Human name for tables.
        suffix: File name ending; a suffix without a dot (`_saved_model`) means a directory.
        precisions: Precisions this format can be written in.
        default_precisions: Precisions written when the user asks for none.
        modules: Python modules that must be importable to write and check the format.
        runtime: The runtime parity (and the benchmark) runs the file with.
        default_batch: Batch size of the exported input: None = dynamic, an int = fixed.
        layouts: Input layouts the format can be written in; the first is the default.
    """

    key: str
    name: str
    suffix: str
    precisions: tuple[str, ...]
    default_precisions: tuple[str, ...]
    modules: tuple[str, ...]
    runtime: str
    default_batch: int | None
    layouts: tuple[str, ...] = ("NHWC",)

    @property
    def is_directory(self) -> bool:
        return not self.suffix.startswith(".")

    @property
    def module(self) -> str:
        """The asp module that implements `export()` and `predict()` for this format."""
        return f"asp_export.export.{self.key}"

    def missing_modules(self) -> list[str]:
        """Required modules that cannot be imported here (empty when the format is usable)."""
        return [name for name in self.modules if not _importable(name)]

    def filename(self, model_kind: str, precision: str) -> str:
        """File name of one artifact: `dense.onnx`, `pruned_int8.tflite`, `dense_saved_model`."""
        tag = "" if precision == "fp32" else f"_{precision}"
        return f"{model_kind}{tag}{self.suffix}"


FORMATS: dict[str, ExportFormat] = {
    row.key: row
    for row in (
        ExportFormat(
            key="onnx",
            name="ONNX",
            suffix=ARTIFACT_SUFFIXES["onnx"],
            precisions=("fp32", "fp16"),
            default_precisions=("fp32",),
            modules=("tf2onnx", "onnx", "onnxruntime"),
            runtime="onnxruntime (CPUExecutionProvider)",
            default_batch=None,
            layouts=("NHWC", "NCHW"),
        ),
        ExportFormat(
            key="tflite",
            name="TensorFlow Lite",
            suffix=ARTIFACT_SUFFIXES["tflite"],
            precisions=("fp32", "fp16", "int8", "dynamic"),
            default_precisions=("fp32", "fp16", "int8"),
            modules=("tensorflow", "ai_edge_litert"),
            runtime="ai_edge_litert Interpreter",
            default_batch=1,
        ),
        ExportFormat(
            key="saved_model",
            name="TensorFlow SavedModel",
            suffix=ARTIFACT_SUFFIXES["saved_model"],
            precisions=("fp32",),
            default_precisions=("fp32",),
            modules=("tensorflow",),
            runtime="tf.saved_model.load",
            default_batch=None,
        ),
    )
}


def get_format(key: str) -> ExportFormat:
    """Look a format up by key; unknown keys raise a did-you-mean `UserInputError`."""
    row = FORMATS.get(key.lower())
    if row is None:
        raise unknown_name_error("format", key, [*FORMATS, "all"])
    return row


def resolve_formats(keys: Iterable[str]) -> list[ExportFormat]:
    """Expand `all` and de-duplicate, keeping table order. An empty request means all formats."""
    keys = [k.lower() for k in keys] or ["all"]
    wanted = set()
    for key in keys:
        if key == "all":
            wanted.update(FORMATS)
        else:
            wanted.add(get_format(key).key)
    return [row for key, row in FORMATS.items() if key in wanted]


def check_precision(name: str) -> str:
    if name not in PRECISIONS:
        raise unknown_name_error("precision", name, PRECISIONS)
    return name


def plan_precisions(fmt: ExportFormat, requested: Iterable[str]) -> list[str]:
    """Precisions to write for `fmt`: the requested ones it supports, or its defaults."""
    requested = [check_precision(p) for p in requested]
    if not requested:
        return list(fmt.default_precisions)
    return [p for p in PRECISIONS if p in requested and p in fmt.precisions]


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def formats_markdown() -> str:
    """The formats table of docs/formats.md and the README, generated from FORMATS."""
    lines = [
        "| Key | Format | File | Precisions (default in bold) | Runtime used for parity | Batch | Needs |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in FORMATS.values():
        precisions = ", ".join(f"**{p}**" if p in row.default_precisions else p for p in row.precisions)
        example = row.filename("pruned", "fp32") + ("/" if row.is_directory else "")
        batch = "dynamic" if row.default_batch is None else f"fixed {row.default_batch}"
        modules = ", ".join(f"`{m}`" for m in row.modules)
        lines.append(
            f"| `{row.key}` | {row.name} | `{example}` | {precisions} | {row.runtime} | {batch} | {modules} |"
        )
    return "\n".join(lines) + "\n"


def require_available(fmt: ExportFormat) -> None:
    missing = fmt.missing_modules()
    if missing:
        raise UserInputError(
            f"Format {fmt.key!r} needs {', '.join(missing)}, which cannot be imported here; "
            f"install it (pip install {' '.join(m.replace('_', '-') for m in missing)}) "
            "or choose another --format."
        )


@dataclass(frozen=True)
class FileSpec:
    """What one format module is asked to write.

    Attributes:
        precision: One of PRECISIONS, supported by the format.
        batch: Fixed batch size of the exported input, or None for a dynamic batch.
        opset: ONNX opset (ignored by other formats).
        int8_io: For TFLite int8: make the file's input and output int8 too.
        calibration: float32 samples [n, H, W, C] for full-integer calibration (int8 only).
        metadata: Key/value strings stored in the file where the format allows (ONNX metadata_props).
        layout: Input layout of the file, one of LAYOUTS; only ONNX can be written NCHW.
    """

    precision: str = "fp32"
    batch: int | None = None
    opset: int = 17
    int8_io: bool = False
    calibration: object | None = None
    metadata: dict[str, str] | None = None
    layout: str = "NHWC"

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise unknown_name_error("layout", self.layout, LAYOUTS)
