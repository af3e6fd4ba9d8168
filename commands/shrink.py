"""`asp shrink`: rebuild a user's .keras model without its dead channels."""

from __future__ import annotations

from pathlib import Path

import click

from asp_export.prune.options import SurgeryConfig

_EPILOG = """\b
A channel is dead when every kernel that produces it has L2 norm <= T and the constant
it still carries (bias, BatchNormalization beta) is <= T where it is consumed; coupled
channels (residual adds, concatenations, depthwise convs) are dropped together.
See docs/surgery.md.
\b
  asp shrink model.keras --threshold 1e-3 --dry-run
  asp shrink model.keras --threshold 1e-3 --round-to 8 --out small.keras
  asp shrink model.keras --threshold 0.05 --relative --exclude stem_conv --out small.keras
"""


@click.command("shrink", epilog=_EPILOG)
@click.argument("model_path", metavar="MODEL.keras", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--threshold", "-t", type=float, required=True, help="Dead-channel threshold T (>= 0).")
@click.option("--relative", is_flag=True, help="T is a fraction of each group's largest kernel norm.")
@click.option(
    "--round-to",
    type=click.IntRange(min=1),
    default=SurgeryConfig.round_to,
    show_default=True,
    help="Round each layer's kept channel count up to a multiple of N (runtime-friendly widths, as "
    "asp prune; 1 keeps exactly the live channels).",
)
@click.option(
    "--min-channels",
    type=click.IntRange(min=1),
    default=SurgeryConfig.min_channels,
    show_default=True,
    help="Keep at least N channels per layer.",
)
@click.option(
    "--exclude", multiple=True, metavar="NAME", help="Keep every channel of this layer (repeatable)."
)
@click.option(
    "--out",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the smaller model (.keras); a SMALL.report.json is written next to it.",
)
@click.option("--dry-run", is_flag=True, help="Only print the plan; write nothing.")
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
def command(model_path, threshold, relative, round_to, min_channels, exclude, out, dry_run, force) -> None:
    """Rebuild MODEL.keras physically smaller without its dead channels."""
    from asp_export.surgery import report_path, shrink

    if out is None and not dry_run:
        raise click.UsageError("give --out SMALL.keras, or --dry-run to only print the plan.")
    plan, report = shrink(
        model_path,
        out,
        threshold=threshold,
        relative=relative,
        round_to=round_to,
        min_channels=min_channels,
        exclude=exclude,
        dry_run=dry_run,
        force=force,
    )
    click.echo(str(plan))
    before = report["before"]
    if dry_run:
        click.echo(f"dry run: nothing written ({before['params']:,} params now).")
        return
    after = report["after"]
    line = f"wrote {out}: params {before['params']:,} -> {after['params']:,}"
    if before.get("flops") and after.get("flops"):
        ratio = before["flops"] / after["flops"]
        line += f", FLOPs {before['flops']:,} -> {after['flops']:,} ({ratio:.2f}x fewer)"
    click.echo(line)
    click.echo(f"report: {report_path(out)}")
