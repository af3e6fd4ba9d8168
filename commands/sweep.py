"""`asp sweep`: run a (method x target) grid of `asp prune` runs and compare them in one table."""

from __future__ import annotations

import click
from asp_export.commands.prune import command as _prune_command

from asp_export.prune.targets import KINDS, SCOPES

# `asp prune` options a sweep passes through to every run (the sweep sets the rest itself).
_OWN = {
    "model",
    "data",
    "out",
    "force",
    "resume_dir",
    "method",
    "target_flops",
    "target_sparsity",
    "target_elementwise",
}
_PASS_THROUGH = [p for p in _prune_command.params if p.name not in _OWN]


def _floats(ctx, param, value: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(
            f"expected comma-separated fractions such as 0.5,0.9, got {value!r}"
        ) from None


def _names(ctx, param, value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


@click.command("sweep")
@click.option("--model", default="gasl-mnist", show_default=True, help="Zoo model name or a .keras file.")
@click.option("--data", default="digits", show_default=True, help="Dataset, as for `asp prune`.")
@click.option(
    "--methods",
    default="gasl,ssl,l1-filter,slimming",
    show_default=True,
    callback=_names,
    help="Comma-separated methods; a plain dense reference run is always added.",
)
@click.option(
    "--targets",
    default="0.5,0.6,0.7,0.8,0.9",
    show_default=True,
    callback=_floats,
    help="Comma-separated fractions to REMOVE (0.8 removes 80 %).",
)
@click.option(
    "--target-kind",
    "kind",
    type=click.Choice(KINDS),
    default="sparsity",
    show_default=True,
    help="sparsity: share of the dense params removed; flops: of the FLOPs; "
    "elementwise: the paper's element-wise sparsity (magnitude: its element-wise sparsity).",
)
@click.option(
    "--scopes",
    default="",
    callback=_names,
    help=f"Also compare target scopes ({','.join(SCOPES)}): one run per (method, target, scope); "
    "each method still trains once.",
)
@click.option("--out", default="runs/sweep", show_default=True, type=click.Path(), help="Sweep directory.")
@click.option(
    "--bench", is_flag=True, help="Also export ONNX and time dense vs pruned on onnxruntime CPU, batch 32."
)
def command(model, data, methods, targets, kind, scopes, out, bench, **prune_options):
    """Prune one model with several methods at several targets, then compare them.

    \b
    One `asp prune` run directory per (method, target) under OUT, plus OUT/dense (plain
    training, the reference). Re-running resumes: complete runs are skipped, killed ones
    continue from their last checkpoint. Writes OUT/comparison.json/.md/.csv/.png.
    Other `asp prune` options (--epochs, --seed, --round-to, --finetune-epochs, ...) apply to every run.
    Example: asp sweep --model lenet5 --data digits --methods gasl,ssl --targets 0.5,0.9 --epochs 5
    """
    from asp_export.sweep import SweepOptions, run_sweep

    options = SweepOptions(
        model=model,
        data=data,
        methods=methods,
        targets=targets,
        out=out,
        kind=kind,
        bench=bench,
        prune={k: v for k, v in prune_options.items() if v not in (None, ())},
        scopes=scopes,
    )
    comparison = run_sweep(options)
    from asp_export.sweep import render_markdown

    click.echo(render_markdown(comparison))
    click.echo(f"Wrote {out}/comparison.json, .md, .csv, .png")


for _param in _PASS_THROUGH:
    command.params.append(_param)
