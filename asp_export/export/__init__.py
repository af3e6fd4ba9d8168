"""Exporters: turn a run directory or a .keras file into deployable files, proven to match.

One FORMATS table (see `formats.py`) drives the exporter, the CLI choices, the
benchmark and docs/formats.md; one module per format (`onnx`, `tflite`,
`saved_model`) implements `export(model, path, spec)` and `predict(path, x)`.
Importing this package does not import TensorFlow or any runtime.

    from asp_export.export import ExportOptions, export_run
    result = export_run("runs/demo", ExportOptions(formats=("onnx", "tflite")))
    print(result.manifest_path)
"""

from __future__ import annotations

from asp_export.export.formats import (
    FORMATS,
    PRECISIONS,
    QUANTIZED_PRECISIONS,
    ExportFormat,
    FileSpec,
    formats_markdown,
    get_format,
    resolve_formats,
)
from asp_export.export.manifest import read_manifest
from asp_export.export.parity import ParityResult, Tolerance, default_tolerance
from asp_export.export.runner import ExportOptions, ExportResult, export_model, export_run

__all__ = [
    "FORMATS",
    "PRECISIONS",
    "QUANTIZED_PRECISIONS",
    "ExportFormat",
    "ExportOptions",
    "ExportResult",
    "FileSpec",
    "ParityResult",
    "Tolerance",
    "default_tolerance",
    "export_model",
    "export_run",
    "formats_markdown",
    "get_format",
    "read_manifest",
    "resolve_formats",
]
