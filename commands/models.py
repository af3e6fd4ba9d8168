"""`asp models`: list the model zoo with parameter counts and FLOPs."""

from __future__ import annotations

import json

import click

_EPILOG = """\b
FLOPs are 2 x the multiply-accumulates of conv/dense layers for one image at the
listed input shape (see docs/models.md). Use a name with `asp prune --model NAME`.
\b
  asp models
  asp models --input-shape 64,64,3 --num-classes 100 --filter 'resnet*'
  asp models --all --format json
"""


def _parse_shape(ctx, param, value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        shape = tuple(int(part) for part in value.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or any(d <= 0 for d in shape):
        raise click.BadParameter(
            f"expected H,W,C with three positive integers (e.g. 32,32,3), got {value!r}."
        )
    return shape


@click.command("models", epilog=_EPILOG)
@click.option(
    "--input-shape",
    callback=_parse_shape,
    default=None,
    metavar="H,W,C",
    help="Build every model at this input shape. [default: each model's own]",
)
@click.option(
    "--num-classes",
    type=click.IntRange(min=2),
    default=None,
    help="Classifier width. [default: each model's own]",
)
@click.option("--filter", "pattern", default="*", show_default=True, help="Only names matching this glob.")
@click.option("--all", "include_tiny", is_flag=True, help="Also list the tiny_* test networks.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def command(input_shape, num_classes, pattern: str, include_tiny: bool, fmt: str) -> None:
    """List the zoo's models with params and FLOPs at their default (or the given) input shape."""
    from asp_export.surgery.flops import zoo_costs, zoo_table

    costs = zoo_costs(pattern, input_shape=input_shape, num_classes=num_classes, include_tiny=include_tiny)
    if fmt == "json":
        click.echo(json.dumps({"schema_version": 1, "models": [c.to_dict() for c in costs]}, indent=2))
    elif not costs:
        click.echo(f"No model matches {pattern!r}; run `asp models --all` for every name.")
    else:
        click.echo(zoo_table(costs))
