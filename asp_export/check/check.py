"""Compare a run's figures with a committed baseline, metric by metric, each within its budget.

Which figures exist, where they come from, which direction is better and how much slack each
may have are data: `METRICS`, `BUDGETS` and `SOURCES` in `metrics.py`. This module reads a run
into values (`figures.collect`), judges each against the baseline (`compare.compare`; here
`run_check` does both) and writes the baseline (`write_baseline`).

Latency is gated through `speedup_p50` (dense p50 / pruned p50, both measured by `asp bench` in
the same run on the same machine), never through milliseconds: CI machines differ by far more
than any regression we want to catch, but a ratio measured within one run mostly cancels the
machine out. What remains is run-to-run noise, which the latency budget (default 10 %) allows.

Nothing here imports TensorFlow, numpy or a runtime: `asp check` must run on a bare CI runner.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asp_export.check.baseline import Baseline, BaselineError, load_baseline, save_baseline
from asp_export.check.compare import CheckReport, allowed_missing, compare, ordered_names, resolve_budgets
from asp_export.check.figures import collect
from asp_export.check.metrics import (
    BUDGETS,
    MISSING,
    is_number,
    metric_for,
)
from asp_export.errors import UserInputError, unknown_name_error
from asp_export.versions import asp_version

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Checking a run against the baseline.


_BASELINE_KINDS = {
    "count": "number",
    "bytes": "number",
    "fraction": "fraction",
    "ratio": "ratio",
    "bool": "bool",
    "text": "text",
}


def _validate_baseline_names(baseline: Baseline) -> None:
    for name, value in baseline.metrics.items():
        try:
            metric = metric_for(name)
        except UserInputError as err:
            raise BaselineError(
                f"{baseline.path}: {err} Fix the file or rewrite it with --write-baseline."
            ) from None
        kind = _BASELINE_KINDS[metric.unit]
        ok = {
            "number": is_number(value) and value >= 0,
            "fraction": is_number(value) and 0 <= value <= 1,
            "ratio": is_number(value) and value > 0,
            "bool": isinstance(value, bool),
            "text": isinstance(value, str),
        }[kind]
        if not ok:
            raise BaselineError(
                f"{baseline.path}: metrics[{name!r}] is {value!r}, expected a {kind} "
                f"({metric.label}); fix it or rewrite the file with --write-baseline."
            )
    for key in baseline.budgets:
        if key in BUDGETS or key in baseline.metrics:
            continue
        hint = unknown_name_error("budget", key, list(BUDGETS))
        raise BaselineError(f"{baseline.path}: {hint} (or the name of a metric in the file).")


def run_check(
    run_dir: str | Path,
    baseline_path: str | Path,
    overrides: Mapping[str, Any] | None = None,
    *,
    allow_missing: Iterable[str] = (),
) -> CheckReport:
    """Compare a run directory with a committed baseline file.

    Args:
        run_dir: the run directory (`asp prune --out`).
        baseline_path: the baseline JSON written by `write_baseline`.
        overrides: budgets by family key (`size`, `params`, `flops`, `accuracy`, `latency`),
            e.g. {"latency": "15%"}; None values are ignored.
        allow_missing: stages (`prune`, `export`, `bench`) whose missing output only skips the
            baseline's metrics from it instead of failing them.

    Returns:
        The report; `report.passed` is False when any metric regressed beyond its budget.

    Raises:
        BaselineError: the baseline is missing, malformed or from a newer schema (exit 2).
        RunDirError: the run directory is missing or holds no readable source (exit 2).
        UserInputError: an unknown budget or --allow-missing name (exit 2).

    Example:
        >>> report = run_check("runs/ci", "asp-baseline.json", {"latency": "15%"})  # doctest: +SKIP
        >>> report.passed  # doctest: +SKIP
        True
    """
    baseline = load_baseline(baseline_path)
    _validate_baseline_names(baseline)
    resolve_budgets(overrides, baseline)  # bad options fail before any file is read
    allowed_missing(allow_missing)
    figures = collect(run_dir)
    return compare(figures, baseline, overrides, allow_missing)


# --------------------------------------------------------------------------------------------
# Writing the baseline.


@dataclass
class BaselineUpdate:
    """What `write_baseline` did: the new baseline and the changes against the old one."""

    baseline: Baseline
    created: bool
    changes: list[str]
    missing_sources: list[str]
    warnings: list[str]


def write_baseline(
    run_dir: str | Path, baseline_path: str | Path, overrides: Mapping[str, Any] | None = None
) -> BaselineUpdate:
    """Create or update a baseline file from a run (atomically).

    Budgets: the CLI overrides, else the existing file's, else the defaults; per-metric budget
    entries of an existing file are kept while that metric still exists.

    Raises:
        BaselineError: an existing baseline file is malformed (delete or fix it first).
        RunDirError: the run directory is missing or holds no readable source.
    """
    baseline_path = Path(baseline_path)
    old = load_baseline(baseline_path) if baseline_path.exists() else None
    budgets = resolve_budgets(overrides, old)
    figures = collect(run_dir)
    warnings = []
    metrics = {}
    for name in ordered_names(set(figures.values)):
        value = figures.values[name]
        if value is None:
            warnings.append(f"{name} has no value in this run; it is not in the baseline.")
            continue
        metrics[name] = value
    if figures.values.get("parity.passed") is False:
        warnings.append(
            f"export parity failed in this run ({', '.join(figures.parity_failures)}); "
            "the gate fails until it passes."
        )
    for name, roles in figures.parity_failed_pairs.items():
        warnings.append(
            f"{name} timed a {' and '.join(roles)} file that failed export parity; "
            "the gate fails it until the export passes and is benchmarked again."
        )
    stored_budgets: dict[str, Any] = {k: BUDGETS[k].format(v) for k, v in budgets.items()}
    if old:
        stored_budgets.update({k: v for k, v in old.budgets.items() if k in metrics})
    new = Baseline(
        path=baseline_path,
        metrics=metrics,
        budgets=stored_budgets,
        created_from=str(run_dir),
        asp_version=asp_version(),
    )
    changes = _diff(old, new) if old else []
    save_baseline(new)
    return BaselineUpdate(new, old is None, changes, figures.missing, warnings)


def _diff(old: Baseline, new: Baseline) -> list[str]:
    changes = []
    for name in ordered_names(set(old.metrics) | set(new.metrics)):
        before, after = old.metrics.get(name, MISSING), new.metrics.get(name, MISSING)
        if before is MISSING:
            changes.append(f"+ {name}: {after!r} (new)")
        elif after is MISSING:
            changes.append(f"- {name}: {before!r} (no longer in the run)")
        elif before != after:
            rel = ""
            if is_number(before) and is_number(after) and before:
                rel = f" ({(after - before) / before * 100:+.1f}%)"
            changes.append(f"~ {name}: {before!r} -> {after!r}{rel}")
    for key in sorted(set(old.budgets) | set(new.budgets)):
        if old.budgets.get(key) != new.budgets.get(key):
            changes.append(f"~ budget {key}: {old.budgets.get(key)!r} -> {new.budgets.get(key)!r}")
    return changes
