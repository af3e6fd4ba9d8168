"""`asp export`: write ONNX / TFLite / SavedModel files and prove each matches the Keras model."""

from __future__ import annotations

from pathlib import Path

import click

from asp_export.errors import unknown_name_error
from asp_export.export.formats import FORMATS, PRECISIONS
from asp_export.export.runner import ExportOptions
from asp_export.input_range import INPUT_RANGES


class _Choice(click.Choice):
    """click.Choice whose error carries asp's did-you-mean hint."""

    def __init__(self, choices, kind: str) -> None:
        super().__init__(choices, case_sensitive=False)
        self.kind = kind

    def convert(self, value, param, ctx):
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter:
            self.fail(str(unknown_name_error(self.kind, value, self.choices)), param, ctx)


class _Batch(click.ParamType):
    name = "dynamic|N"

    def convert(self, value, param, ctx):
        if isinstance(value, int) or value == "dynamic":
            return value
        try:
            batch = int(value)
        except ValueError:
            self.fail(f"{value!r} is neither 'dynamic' nor an integer.", param, ctx)
        if batch < 1:
            self.fail(f"batch must be at least 1, got {batch}.", param, ctx)
        return batch


def _split_models(ctx, param, value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else ()


@click.command("export")
@click.argument("source", type=click.Path(path_type=Path))
@click.option(
    "--format",
    "-f",
    "formats",
    multiple=True,
    type=_Choice([*FORMATS, "all"], "format"),
    help="Format to write (repeatable). Default: all.",
)
@click.option(
    "--precision",
    "-p",
    "precisions",
    multiple=True,
    type=_Choice(PRECISIONS, "precision"),
    help="Precision (repeatable): fp32, fp16, int8 (full-integer), dynamic (int8 weights). "
    "Default: each format's defaults (onnx fp32; tflite fp32, fp16, int8).",
)
@click.option(
    "--calibration-samples",
    type=int,
    default=ExportOptions.calibration_samples,
    show_default=True,
    help="Training samples used to calibrate int8.",
)
@click.option(
    "--int8-io/--float-io",
    default=ExportOptions.int8_io,
    show_default=True,
    help="int8 TFLite: int8 input and output tensors (else float32 with quantize ops inside).",
)
@click.option("--opset", type=int, default=ExportOptions.opset, show_default=True, help="ONNX opset.")
@click.option(
    "--batch",
    type=_Batch(),
    default=None,
    help="'dynamic' (named 'batch' in ONNX) or a batch size every file's input is fixed to. "
    "Default: ONNX/SavedModel dynamic, TFLite 1.",
)
@click.option(
    "--nchw",
    is_flag=True,
    help="ONNX: take the input NCHW (TensorRT, OpenVINO, NNAPI/CoreML); other formats stay NHWC.",
)
@click.option(
    "--simplify/--no-simplify",
    default=ExportOptions.simplify,
    show_default=True,
    help="ONNX: simplify the graph with onnxslim, kept only when it passes parity again.",
)
@click.option(
    "--models",
    callback=_split_models,
    metavar="dense,pruned",
    help="Models of a run directory to export. Default: whichever exist.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Export directory. Default: RUN_DIR/export (export/ beside a bare .keras).",
)
@click.option(
    "--parity-samples",
    type=int,
    default=ExportOptions.parity_samples,
    show_default=True,
    help="Samples each file is checked on (the run's test split; synthetic for a bare .keras).",
)
@click.option(
    "--rtol",
    "--tolerance",
    "rtol",
    type=float,
    default=None,
    help="fp32/fp16: max logit difference relative to the logit scale (default 1e-4 / 1e-2).",
)
@click.option("--atol", type=float, default=None, help="fp32/fp16: also cap the absolute logit difference.")
@click.option(
    "--min-top1",
    type=float,
    default=None,
    help="int8/dynamic: minimum top-1 agreement with Keras (default 0.98).",
)
@click.option(
    "--input-range",
    type=click.Choice(list(INPUT_RANGES)),
    help="Bare .keras file: pixel range of the synthetic parity/calibration inputs.  [default: read "
    "from the model, else 0-1; a run directory uses the range it was trained on]",
)
@click.option("--force", is_flag=True, help="Replace files this export would write if they already exist.")
def command(
    source: Path,
    formats,
    precisions,
    calibration_samples,
    int8_io,
    opset,
    batch,
    nchw,
    simplify,
    models,
    out,
    parity_samples,
    rtol,
    atol,
    min_top1,
    input_range,
    force,
) -> None:
    """Export SOURCE (a run directory or a .keras file) and check every file in its runtime.

    \b
    Each file is run by its real runtime (onnxruntime CPU, LiteRT, tf.saved_model) on
    real test samples of the run's data and compared with the Keras logits; the results
    go to export/manifest.json. Exit 1 if a file fails its parity check.
    Example: asp export runs/demo --format onnx --format tflite --precision fp32 --precision int8
    """
    from asp_export.export import ExportOptions, export_run

    options = ExportOptions(
        formats=tuple(f.lower() for f in formats) or ("all",),
        precisions=tuple(p.lower() for p in precisions),
        batch=batch,
        nchw=nchw,
        simplify=simplify,
        models=models,
        out=out,
        parity_samples=parity_samples,
        calibration_samples=calibration_samples,
        int8_io=int8_io,
        opset=opset,
        rtol=rtol,
        atol=atol,
        min_top1=min_top1,
        input_range=input_range,
        force=force,
    )
    result = export_run(source, options, strict=False)
    click.echo(f"wrote {len(result.entries)} file(s); manifest: {result.manifest_path}")
    if not result.ok:
        from asp_export.errors import ExportError

        raise ExportError(f"Export failed: {result.failure_message()}.")
