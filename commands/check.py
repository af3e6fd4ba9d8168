"""`asp check`: fail CI when a run got bigger, slower or less accurate than the committed baseline."""

from __future__ import annotations

from pathlib import Path

import click

from asp_export._io import write_text_atomic
from asp_export.check import BUDGETS, FORMATS, append_step_summary, render, run_check, write_baseline
from asp_export.errors import CheckFailed

_EPILOG = """\b
Exit codes: 0 every metric within budget, 1 a regression or a source
the baseline has missing from RUN_DIR (see --allow-missing), 2 bad input
(missing or malformed baseline, newer schema, missing run directory).
\b
Budgets come from these options, else from the baseline file, else the defaults.
Relative budgets are percent of the baseline value ("10%" or "10");
the accuracy budget is absolute percentage points ("0.2" or "0.2pp").
Latency is gated on speedup_p50 (dense p50 / pruned p50 measured in the same run), never
on milliseconds, so CI machines of different speed compare fairly.
\b
  asp check runs/ci --baseline asp-baseline.json --write-baseline   # record a good run
  asp check runs/ci --baseline asp-baseline.json                    # gate a new run
"""


def _budget_option(key: str):
    budget = BUDGETS[key]
    default = budget.format(budget.default)
    return click.option(
        budget.option,
        key,
        default=None,
        metavar="PCT" if budget.kind == "relative" else "PP",
        help=f"{budget.help} [default: baseline file's, else {default}]",
    )


def _stages(ctx, param, value: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip()) if value else ()


@click.command("check", epilog=_EPILOG)
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "--baseline",
    "baseline_path",
    type=click.Path(path_type=Path),
    default=Path("asp-baseline.json"),
    show_default=True,
    help="The committed baseline JSON to compare with (or to write).",
)
@click.option(
    "--write-baseline",
    "write",
    is_flag=True,
    help="Create/update the baseline from RUN_DIR instead of checking (prints what changed).",
)
@_budget_option("size")
@_budget_option("params")
@_budget_option("flops")
@_budget_option("nodes")
@_budget_option("accuracy")
@_budget_option("latency")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="Output format (stdout, or --output).",
)
@click.option(
    "--allow-missing",
    callback=_stages,
    metavar="STAGES",
    help="Stages whose output may be missing (e.g. export,bench): their baseline metrics are skipped, "
    "not failed. Without it a source the baseline has and the run lacks fails the gate.",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the --format output to FILE; the table still goes to the terminal.",
)
def command(
    run_dir: Path,
    baseline_path: Path,
    write: bool,
    fmt: str,
    output: Path | None,
    allow_missing: tuple[str, ...],
    **budgets: str | None,
) -> None:
    """Compare RUN_DIR's params, FLOPs, file sizes, accuracy, export parity and speedup with a baseline."""
    if write:
        _write(run_dir, baseline_path, budgets)
        return
    report = run_check(run_dir, baseline_path, budgets, allow_missing=allow_missing)
    if output is not None:
        write_text_atomic(output, render(report, fmt))
        click.echo(render(report, "table"), nl=False)
        click.echo(f"wrote {output}")
    else:
        click.echo(render(report, fmt), nl=False)
    append_step_summary(report)
    if not report.passed:
        raise CheckFailed(f"asp check failed: {report.failure_line()}.")


def _write(run_dir: Path, baseline_path: Path, budgets: dict[str, str | None]) -> None:
    update = write_baseline(run_dir, baseline_path, budgets)
    verb = "created" if update.created else "updated"
    click.echo(f"{verb} {baseline_path} from {run_dir}: {len(update.baseline.metrics)} metrics")
    for source in update.missing_sources:
        click.echo(f"  note: no {source} in {run_dir}; its metrics are not in the baseline")
    for line in update.changes:
        click.echo(f"  {line}")
    if not update.created and not update.changes:
        click.echo("  no change")
    for warning in update.warnings:
        click.echo(f"  warning: {warning}", err=True)
    click.echo(f"budgets: {', '.join(f'{k} {v}' for k, v in update.baseline.budgets.items())}")
