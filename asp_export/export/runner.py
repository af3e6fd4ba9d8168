"""The export loop: every (model, format, precision) is written, run in its runtime, and recorded.

Order of work: resolve the source and the plan, refuse to overwrite before
converting anything, then per model: load it, compute the Keras reference logits
once, and per file: convert (atomic write), run the written file in its runtime,
judge parity, log one progress line. The manifest is written last. A converter
failure or a failed parity check does not stop the other files; the export
raises ExportError (exit 1) at the end, after the manifest records the failure.
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from asp_export._io import remove_stale_temporaries
from asp_export.errors import ExportError, RunDirError, UserInputError
from asp_export.export._tools import describe_failure, input_shape
from asp_export.export.formats import (
    FORMATS,
    ExportFormat,
    FileSpec,
    check_precision,
    plan_precisions,
    require_available,
    resolve_formats,
)
from asp_export.export.manifest import (
    MANIFEST_NAME,
    artifact_sha256,
    artifact_size,
    build_manifest,
    merge_previous,
    relative_path,
    retract,
    write_manifest,
)
from asp_export.export.parity import (
    ParityResult,
    check_file,
    default_tolerance,
    keras_logits,
    reference_compute,
)
from asp_export.export.source import ExportSource, Samples, load_model, resolve_source
from asp_export.input_range import check_input_range
from asp_export.rundir import run_lock
from asp_export.units import format_bytes
from asp_export.versions import asp_version

log = logging.getLogger(__name__)

MAX_OPSET = 18  # tf2onnx 1.17 is tested up to 18 here; 17 is the default


@dataclass(frozen=True)
class ExportOptions:
    """Everything `asp export` can be told; the CLI builds exactly this object.

    Attributes:
        formats: Format keys or "all".
        precisions: Precisions to write; empty = each format's defaults. A precision a format
            does not support is skipped for that format.
        batch: None = each format's default (ONNX/SavedModel dynamic, TFLite 1); "dynamic" (every
            format, named `batch` in ONNX files); or an int (every format's input fixed to it).
        models: "dense"/"pruned" to export from a run directory; empty = whichever exist.
        out: Export directory; None = RUN_DIR/export (or export/ beside a bare .keras file).
        parity_samples: Samples each file is checked on.
        calibration_samples: Training samples for int8 calibration.
        int8_io: int8 TFLite files take and return int8 tensors (else float32 with quantize ops).
        opset: ONNX opset.
        rtol, atol: Override the float precisions' limits (relative to the logit scale / absolute).
        min_top1: Override the quantized precisions' top-1 agreement limit.
        force: Replace files this export would write if they exist.
        simplify: Simplify ONNX files with onnxslim (the result is kept only if parity holds).
        nchw: Write ONNX inputs NCHW (tf2onnx `inputs_as_nchw`); other formats stay NHWC.
        input_range: Pixel range of a bare .keras file's synthetic inputs (0-1, 0-255, -1-1); None
            reads it from the model. A run directory uses the range it was trained on.
    """

    formats: tuple[str, ...] = ("all",)
    precisions: tuple[str, ...] = ()
    batch: int | str | None = None
    models: tuple[str, ...] = ()
    out: Path | None = None
    parity_samples: int = 256
    calibration_samples: int = 200
    int8_io: bool = False
    opset: int = 17
    rtol: float | None = None
    atol: float | None = None
    min_top1: float | None = None
    force: bool = False
    simplify: bool = True
    nchw: bool = False
    input_range: str | None = None

    def __post_init__(self) -> None:
        for name in ("parity_samples", "calibration_samples"):
            if int(getattr(self, name)) < 1:
                raise UserInputError(
                    f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}."
                )
        if not 7 <= int(self.opset) <= MAX_OPSET:
            raise UserInputError(f"opset must be between 7 and {MAX_OPSET} (17 is tested), got {self.opset}.")
        if self.batch is not None and self.batch != "dynamic":
            if not isinstance(self.batch, int) or self.batch < 1:
                raise UserInputError(f"batch must be 'dynamic' or a positive integer, got {self.batch!r}.")
        for precision in self.precisions:
            check_precision(precision)
        if self.input_range is not None:
            check_input_range(self.input_range)

    def batch_for(self, fmt: ExportFormat) -> int | None:
        if self.batch is None:
            return fmt.default_batch
        return None if self.batch == "dynamic" else int(self.batch)

    def layout_for(self, fmt: ExportFormat) -> str:
        """NCHW for formats that can take it when `nchw` is set, else the format's default (NHWC)."""
        return "NCHW" if self.nchw and "NCHW" in fmt.layouts else fmt.layouts[0]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["out"] = None if self.out is None else str(self.out)
        return out


@dataclass
class ExportResult:
    """What an export wrote: the manifest (as written) and any failures."""

    manifest_path: Path
    manifest: dict[str, Any]
    entries: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed_files(self) -> list[dict[str, Any]]:
        return [e for e in self.entries if not e["parity"]["passed"]]

    @property
    def ok(self) -> bool:
        return not self.failures and not self.failed_files

    def failure_message(self) -> str:
        parts = [
            f"{e['path']} failed parity ({'; '.join(e['parity']['failures'])})" for e in self.failed_files
        ]
        parts += [f["error"] for f in self.failures]
        return "; ".join(parts)


def export_run(
    source: str | Path, options: ExportOptions | None = None, *, strict: bool = True
) -> ExportResult:
    """Export a run directory (or a .keras file) to every requested format and check each file.

    Args:
        source: A run directory written by `asp prune`, or a `.keras` file.
        options: What to write; defaults to every format at its default precisions.
        strict: Raise ExportError (after writing the manifest) when any file failed.

    Returns:
        The written manifest and the entries of this export.

    Raises:
        RunDirError, ModelLoadError, UserInputError: bad input (exit 2), before anything is written.
        ExportError: a conversion or a parity check failed (exit 1); the manifest records it.

    Example:
        >>> result = export_run("runs/demo", ExportOptions(formats=("onnx",)))  # doctest: +SKIP
        >>> result.entries[0]["parity"]["passed"]  # doctest: +SKIP
        True
    """
    options = options or ExportOptions()
    src = resolve_source(source, list(options.models) or None)
    with run_lock(src.path if src.is_run else None, "asp export"):  # one writer per run directory
        return _export_source(src, options, strict)


def _export_source(src: ExportSource, options: ExportOptions, strict: bool) -> ExportResult:
    jobs = _plan(options)
    out = Path(options.out) if options.out is not None else src.default_out
    root = out.parent
    _prepare_out(out)
    targets = {(m.label, f.key, p): out / f.filename(m.label, p) for m in src.models for f, p in jobs}
    _refuse_overwrite(list(targets.values()), options.force)

    # Everything that can reject the input happens before the first write.
    models = [(model_file, load_model(model_file.path)) for model_file in src.models]
    shape = input_shape(models[0][1])
    for model_file, model in models[1:]:
        if input_shape(model) != shape:
            raise UserInputError(
                f"{model_file.path} expects input {input_shape(model)}, {models[0][0].path.name} {shape}."
            )
    src.choose_input_range(options.input_range, models[0][1])
    samples = Samples(src, shape)
    x, labels, data_desc = samples.parity(options.parity_samples)
    log.info("parity on %d samples (%s)", len(x), data_desc)
    calibration = None
    if any(p == "int8" for _, p in jobs):
        calibration, calib_desc = samples.calibration(options.calibration_samples)
        log.info("int8 calibration on %d samples (%s)", len(calibration), calib_desc)

    retract(out / MANIFEST_NAME, {relative_path(p, root) for p in targets.values()})
    entries: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    for model_file, model in models:
        ref = _Reference(x, keras_logits(model, x), labels, data_desc, reference_compute())
        params, flops = _count(model)
        metadata = _metadata(src, model_file.kind, model_file.path, params, flops, shape)
        for fmt, precision in jobs:
            layout = options.layout_for(fmt)
            spec = FileSpec(
                precision=precision,
                batch=options.batch_for(fmt),
                opset=options.opset,
                int8_io=options.int8_io,
                calibration=calibration if precision == "int8" else None,
                metadata={**metadata, "precision": precision, **_input_metadata(src, shape, layout)},
                layout=layout,
            )
            path = targets[(model_file.label, fmt.key, precision)]
            try:
                entry, parity = _export_file(model, model_file, fmt, spec, path, ref, options)
            except _ConversionFailed as failed:
                failures.append(failed.record)
                continue
            entry.update(params=params, flops=flops, path=relative_path(path, root))
            entries.append(entry)
            log.info(
                "%s %s %s -> %s (%s) parity %s",
                fmt.key,
                precision,
                model_file.kind,
                entry["path"],
                format_bytes(entry["size_bytes"]),
                parity.summary(),
            )

    manifest_path = out / MANIFEST_NAME
    kept = merge_previous(manifest_path, root, entries)
    manifest = build_manifest(
        source=str(src.path.resolve()),
        data=data_desc,
        entries=kept + entries,
        failures=failures,
        options=options.to_dict(),
    )
    write_manifest(manifest_path, manifest)
    result = ExportResult(manifest_path, manifest, entries, failures)
    if strict and not result.ok:
        raise ExportError(f"Export failed: {result.failure_message()}. Manifest: {manifest_path}.")
    return result


def export_model(
    model_path: str | Path, options: ExportOptions | None = None, *, strict: bool = True
) -> ExportResult:
    """Export one .keras file (checked on synthetic inputs unless it sits in a run directory).

    Same as `export_run`; kept as the explicit entry point for a single model file.
    """
    if not Path(model_path).is_file():
        raise UserInputError(
            f"{model_path} is not a file; give a .keras model (or use export_run for a run dir)."
        )
    return export_run(model_path, options, strict=strict)


@dataclass(frozen=True)
class _Reference:
    """The samples and the Keras model's logits on them, shared by every file of one model."""

    x: Any
    logits: Any
    labels: Any
    data: str
    compute: dict[str, Any]  # where and how the logits were computed (parity.reference_compute)


class _ConversionFailed(Exception):
    def __init__(self, record: dict[str, Any]) -> None:
        super().__init__(record["error"])
        self.record = record


def _export_file(
    model, model_file, fmt: ExportFormat, spec: FileSpec, path: Path, ref: _Reference, options: ExportOptions
) -> tuple[dict[str, Any], ParityResult]:
    """Convert one file and run it in its runtime; return its manifest entry (path set later) and parity."""
    tolerance = default_tolerance(
        spec.precision, rtol=options.rtol, atol=options.atol, min_top1=options.min_top1
    )
    module = importlib.import_module(fmt.module)
    started = time.perf_counter()
    try:
        io = module.export(model, path, spec)
    except Exception as err:  # noqa: BLE001 - one failing converter must not stop the others
        layer_names = [layer.name for layer in model.layers]
        message = f"{model_file.kind} {spec.precision}: {describe_failure(fmt.key, err, layer_names)}"
        log.error("%s %s %s -> FAILED: %s", fmt.key, spec.precision, model_file.kind, message)
        log.debug("converter traceback", exc_info=True)
        raise _ConversionFailed(
            {"model": model_file.kind, "format": fmt.key, "precision": spec.precision, "error": message}
        ) from None
    seconds = time.perf_counter() - started

    def judge(candidate: Path) -> ParityResult:
        return check_file(fmt, candidate, ref.x, ref.logits, tolerance, labels=ref.labels, data=ref.data)

    parity = _run_parity(judge, path, fmt.key, ref.data)
    simplified = False
    if options.simplify and parity.passed and hasattr(module, "simplify"):
        simplified = module.simplify(
            path, lambda candidate: _run_parity(judge, candidate, fmt.key, ref.data).passed
        )
        if simplified:
            parity = judge(path)
    entry: dict[str, Any] = {
        "model": model_file.kind,
        "format": fmt.key,
        "precision": spec.precision,
        "path": str(path),
        "size_bytes": artifact_size(path),
        "sha256": artifact_sha256(path),
        "batch": "dynamic" if spec.batch is None else spec.batch,
        "layout": spec.layout,
        "input": io["input"],
        "output": io["output"],
        "params": None,
        "flops": None,
        "source": str(model_file.path.resolve()),
        "export_seconds": round(seconds, 3),
        "parity": {**parity.to_dict(), "reference": ref.compute},
    }
    if fmt.key == "onnx":
        entry["opset"] = spec.opset
    if hasattr(module, "simplify"):
        entry["simplified"] = simplified
    if hasattr(module, "summarize"):
        entry["graph"] = module.summarize(path)
    if spec.precision == "int8":
        entry["int8_io"] = spec.int8_io
        entry["calibration_samples"] = len(spec.calibration)
    return entry, parity


def _plan(options: ExportOptions) -> list[tuple[ExportFormat, str]]:
    explicit = [k for k in options.formats if k != "all"]
    formats = resolve_formats(options.formats)
    jobs: list[tuple[ExportFormat, str]] = []
    for fmt in formats:
        missing = fmt.missing_modules()
        if missing:
            if fmt.key in explicit:
                require_available(fmt)
            log.warning("skipping %s: %s cannot be imported", fmt.key, ", ".join(missing))
            continue
        if options.nchw and "NCHW" not in fmt.layouts:
            log.info("%s files stay NHWC (--nchw applies to %s)", fmt.key, _nchw_formats())
        precisions = plan_precisions(fmt, options.precisions)
        skipped = [p for p in options.precisions if p not in fmt.precisions]
        if skipped:
            log.info("%s does not support %s; skipped", fmt.key, ", ".join(skipped))
        jobs.extend((fmt, p) for p in precisions)
    if not jobs:
        raise UserInputError(
            f"Nothing to export: no requested format supports precision {', '.join(options.precisions)}. "
            + "; ".join(f"{f.key}: {', '.join(f.precisions)}" for f in formats)
            + "."
        )
    if options.nchw and not any("NCHW" in fmt.layouts for fmt, _ in jobs):
        raise UserInputError(
            f"--nchw applies to {_nchw_formats()} files only and none is being written; "
            "add --format onnx or drop --nchw."
        )
    return jobs


def _nchw_formats() -> str:
    return ", ".join(key for key, fmt in FORMATS.items() if "NCHW" in fmt.layouts)


def _prepare_out(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunDirError(
            f"Cannot create output directory {out}: {err.strerror or err}; choose another --out."
        ) from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise RunDirError(f"Output directory {out} is not writable; choose another --out.")
    for stale in remove_stale_temporaries(out):
        log.info("removed %s (left by a killed export)", stale)


def _refuse_overwrite(paths: list[Path], force: bool) -> None:
    existing = [p for p in paths if p.exists()]
    if existing and not force:
        names = ", ".join(p.name for p in existing[:3]) + (
            f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        )
        raise RunDirError(
            f"{existing[0].parent} already holds {names}; "
            "pass --force to replace them or choose another --out."
        )
    for path in existing:
        log.info("replacing %s (--force)", path)


def _run_parity(judge, path: Path, fmt_key: str, data: str) -> ParityResult:
    try:
        return judge(path)
    except Exception as err:  # noqa: BLE001 - a file its runtime cannot run is a failed file, not a crash
        first = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
        log.debug("runtime traceback", exc_info=True)
        nan = float("nan")
        return ParityResult(
            max_abs_diff=nan,
            max_rel_diff=nan,
            top1_agreement=0.0,
            n_samples=0,
            data=data,
            passed=False,
            failures=[f"{fmt_key} runtime could not run the file: {type(err).__name__}: {first[:200]}"],
        )


def _count(model) -> tuple[int, int | None]:
    from asp_export.surgery.flops import cost

    try:
        counted = cost(model, ("params", "flops"))
        return counted["params"], counted["flops"]
    except Exception as err:  # noqa: BLE001 - FLOPs are informative; never fail an export on them
        log.warning("could not count FLOPs (%s: %s)", type(err).__name__, err)
        return int(model.count_params()), None


def _metadata(
    src: ExportSource, kind: str, path: Path, params: int, flops: int | None, shape
) -> dict[str, str]:
    meta = {
        "asp_version": asp_version(),
        "source": str(src.path.resolve()),
        "model_file": path.name,
        "model": kind,
        "params": str(params),
        "input_name": "input",
    }
    if flops is not None:
        meta["flops"] = str(flops)
        meta["flops_convention"] = "2 x multiply-accumulates per image"
    if src.config:
        meta["dataset"] = str(src.dataset_name)
        meta["zoo_model"] = str(src.config.get("model", ""))
        meta["num_classes"] = str(src.config.get("num_classes", ""))
    return meta


def _input_metadata(src: ExportSource, shape, layout: str) -> dict[str, str]:
    """The input contract stored in the file: shape in its layout, and the preprocessing."""
    dims = shape if layout == "NHWC" else (shape[2], shape[0], shape[1])
    return {
        "input_shape": "N," + ",".join(str(d) for d in dims),
        "preprocessing": src.preprocessing(shape, layout),
    }
