"""Judge a run's figures against the baseline: one Row per metric (pass / fail / skipped / new / info).

Nothing here imports TensorFlow, numpy or a runtime: `asp check` must run on a bare CI runner.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from asp_export.check.baseline import Baseline
from asp_export.check.figures import Figures
from asp_export.check.metrics import BUDGETS, METRICS, SOURCES, Metric, metric_for
from asp_export.errors import UserInputError, unknown_name_error

# Status of one row in the comparison.
PASS, FAIL, SKIPPED, NEW, INFO = "pass", "fail", "skipped", "new", "info"


# Floating-point slack so that a value exactly on its budget passes after JSON round trips.
_EPS = 1e-9


@dataclass(frozen=True)
class Row:
    """The verdict on one metric."""

    name: str
    metric: Metric
    status: str
    baseline: Any
    current: Any
    delta: float | None  # current - baseline, in the metric's unit (accuracy: a fraction)
    delta_pct: float | None  # relative change in percent of the baseline
    budget: float | None  # in the budget's unit (percent or points)
    message: str

    @property
    def source_label(self) -> str:
        return SOURCES[self.metric.source].label

    def to_dict(self) -> dict[str, Any]:
        budget = BUDGETS[self.metric.budget] if self.metric.budget else None
        return {
            "name": self.name,
            "status": self.status,
            "source": self.source_label,
            "direction": self.metric.direction,
            "unit": self.metric.unit,
            "baseline": self.baseline,
            "current": self.current,
            "delta": self.delta,
            "delta_pct": self.delta_pct,
            "budget": budget.format(self.budget) if budget and self.budget is not None else None,
            "message": self.message,
        }


@dataclass
class CheckReport:
    """The outcome of `asp check`: one row per metric, plus what was read."""

    run_dir: Path
    baseline_path: Path
    rows: list[Row]
    found: dict[str, bool]
    budgets: dict[str, float]

    @property
    def failures(self) -> list[Row]:
        return [r for r in self.rows if r.status == FAIL]

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def missing_sources(self) -> list[str]:
        return [SOURCES[k].label for k, ok in self.found.items() if not ok]

    @property
    def absent(self) -> list[Row]:
        """Failures because a source the baseline has is missing from the run."""
        return [r for r in self.failures if not self.found.get(r.metric.source, True)]

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.rows)

    def failure_line(self) -> str:
        """What failed, one clause per cause: regressions by name, then missing sources."""
        absent = self.absent
        regressed = [r for r in self.failures if r not in absent]
        parts = []
        if regressed:
            names = ", ".join(r.name for r in regressed)
            parts.append(f"{len(regressed)} metric(s) regressed beyond budget ({names})")
        if absent:
            parts.append(self._absent_clause(absent))
        return "; ".join(parts)

    def _absent_clause(self, absent: list[Row]) -> str:
        keys = {r.metric.source for r in absent}
        sources = [source for key, source in SOURCES.items() if key in keys]
        return (
            f"{len(absent)} metric(s) of the baseline have no source in this run "
            f"(missing: {', '.join(s.label for s in sources)}; run "
            f"{' and '.join(f'`{s.written_by}`' for s in sources)} as for the baseline, "
            f"or pass --allow-missing {','.join(s.stage for s in sources)})"
        )

    def summary(self) -> str:
        """One line: PASS/FAIL with counts, and what failed by how much."""
        gated = self.count(PASS) + self.count(FAIL)
        parts = []
        if self.count(SKIPPED):
            parts.append(
                f"{self.count(SKIPPED)} skipped (missing: {', '.join(self.missing_sources) or 'values'})"
            )
        if self.count(NEW):
            parts.append(f"{self.count(NEW)} new, not in the baseline")
        extra = f"; {'; '.join(parts)}" if parts else ""
        if self.passed:
            return f"PASS: {gated} metric(s) within budget{extra}."
        absent = self.absent
        regressed = [r for r in self.failures if r not in absent]
        causes = []
        if regressed:
            what = ", ".join(f"{r.name} ({r.message})" for r in regressed)
            causes.append(f"{len(regressed)} of {gated} metric(s) regressed beyond budget: {what}")
        if absent:
            causes.append(self._absent_clause(absent))
        return f"FAIL: {'; '.join(causes)}{extra}."

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": 1,
            "passed": self.passed,
            "run_dir": str(self.run_dir),
            "baseline": str(self.baseline_path),
            "sources": {SOURCES[k].label: ("found" if ok else "missing") for k, ok in self.found.items()},
            "budgets": {k: BUDGETS[k].format(v) for k, v in self.budgets.items()},
            "summary": self.summary(),
            "results": [r.to_dict() for r in self.rows],
        }


def resolve_budgets(overrides: Mapping[str, Any] | None, baseline: Baseline | None) -> dict[str, float]:
    """Budget per family: CLI override, else the baseline file's, else the default.

    Raises:
        UserInputError: a budget that does not parse, or an unknown budget name.
    """
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    for key in overrides:
        if key not in BUDGETS:
            raise unknown_name_error("budget", key, BUDGETS)
    stored = baseline.budgets if baseline else {}
    budgets = {}
    for key, budget in BUDGETS.items():
        if key in overrides:
            budgets[key] = budget.parse(overrides[key])
        elif key in stored:
            budgets[key] = budget.parse(stored[key], where=f"budgets.{key} in {baseline.path}")
        else:
            budgets[key] = budget.default
    return budgets


def _metric_budget(
    name: str, metric: Metric, budgets: Mapping[str, float], baseline: Baseline, overrides: Mapping[str, Any]
) -> float | None:
    """Per-metric budget: an explicit CLI option beats a per-metric entry in the baseline file."""
    if metric.budget is None:
        return None
    if overrides.get(metric.budget) is None and name in baseline.budgets:
        return BUDGETS[metric.budget].parse(
            baseline.budgets[name], where=f"budgets[{name!r}] in {baseline.path}"
        )
    return budgets[metric.budget]


def compare_one(name: str, metric: Metric, baseline: Any, current: Any, budget: float | None) -> Row:
    """Judge one metric present in both the baseline and the run."""
    if metric.direction == "info":
        changed = "" if baseline == current else "changed"
        return Row(name, metric, INFO, baseline, current, None, None, None, changed)
    if metric.direction == "true":
        ok = current is True
        msg = "" if ok else "is false (must stay true)"
        return Row(name, metric, PASS if ok else FAIL, baseline, current, None, None, None, msg)
    if current is None:
        return Row(
            name,
            metric,
            FAIL,
            baseline,
            None,
            None,
            None,
            budget,
            f"null in {SOURCES[metric.source].label} (not measured in this run)",
        )
    delta = current - baseline
    delta_pct = (delta / baseline * 100.0) if baseline else None
    spec = BUDGETS[metric.budget]
    assert budget is not None  # every gated, non-boolean row has a budget family (table invariant)
    if spec.kind == "points":
        drop_pp = (baseline - current) * 100.0
        ok = drop_pp <= budget + _EPS
        msg = "" if ok else f"dropped {drop_pp:.2f} pp > {budget:g} pp allowed"
        return Row(name, metric, PASS if ok else FAIL, baseline, current, delta, delta_pct, budget, msg)
    if metric.direction == "lower":
        limit = baseline * (1 + budget / 100.0) + spec.slack
        ok = current <= limit * (1 + _EPS) + _EPS
        if spec.slack:
            unit = " B" if metric.unit == "bytes" else ""
            msg = f"{delta:+,}{unit} ({format_pct(delta_pct)}) > +{budget:g}% + {spec.slack:,g}{unit} allowed"
        else:
            msg = f"{format_pct(delta_pct, budget)} > +{budget:g}% allowed"
        msg = "" if ok else msg
    else:
        limit = _higher_is_better_limit(baseline, budget)
        ok = current >= limit * (1 - _EPS) - _EPS
        msg = "" if ok else f"{format_pct(delta_pct, -budget)} < -{budget:g}% allowed"
    return Row(name, metric, PASS if ok else FAIL, baseline, current, delta, delta_pct, budget, msg)


def _higher_is_better_limit(baseline: float, budget: float) -> float:
    """The lowest value a higher-is-better metric may fall to: `budget` percent below its baseline."""
    return baseline * (1 - budget / 100.0)


def format_pct(value: float | None, limit: float | None = None) -> str:
    """'+10.2%'; small changes keep two significant digits (a 1-byte growth is not '+0.0%'), and
    more decimals are shown when one would read as exactly the limit that was broken."""
    if value is None:
        return "n/a"
    if value == 0:
        return "+0%"
    if abs(value) < 0.1:
        return f"{value:+.2g}%"
    for digits in (1, 2, 3, 4):
        text = f"{value:+.{digits}f}"
        if limit is None or float(text) != limit:
            break
    return f"{text}%"


def compare(
    figures: Figures,
    baseline: Baseline,
    overrides: Mapping[str, Any] | None = None,
    allow_missing: Iterable[str] = (),
) -> CheckReport:
    """Compare a run's figures with a baseline.

    A baseline metric whose source file is missing from the run is a `fail` (the evidence the
    baseline was written from is gone), or `skipped` (never a pass) when its source's stage is in
    `allow_missing`; one whose source exists but lacks it is a `fail`; a metric the baseline does
    not know is `new`.
    """
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    allowed = allowed_missing(allow_missing)
    budgets = resolve_budgets(overrides, baseline)
    rows: list[Row] = []
    for name in ordered_names(set(baseline.metrics) | set(figures.values)):
        metric = figures.metric_of.get(name) or metric_for(name)
        budget = _metric_budget(name, metric, budgets, baseline, overrides)
        source = SOURCES[metric.source]
        if name not in baseline.metrics:
            rows.append(
                Row(
                    name,
                    metric,
                    NEW,
                    None,
                    figures.values[name],
                    None,
                    None,
                    budget,
                    "not in the baseline; --write-baseline to gate it",
                )
            )
        elif not figures.found.get(metric.source):
            if metric.source in allowed or metric.direction == "info":
                status, message = SKIPPED, f"no {source.label}"
            else:
                status = FAIL
                message = (
                    f"no {source.label}, which the baseline was written with (run `{source.written_by}` "
                    f"as for the baseline, or pass --allow-missing {source.stage})"
                )
            rows.append(Row(name, metric, status, baseline.metrics[name], None, None, None, budget, message))
        elif name not in figures.values:
            status = INFO if metric.direction == "info" else FAIL
            rows.append(
                Row(
                    name,
                    metric,
                    status,
                    baseline.metrics[name],
                    None,
                    None,
                    None,
                    budget,
                    f"missing from {source.label} (run `{source.written_by}` as for the baseline, "
                    f"or --write-baseline)",
                )
            )
        else:
            rows.append(compare_one(name, metric, baseline.metrics[name], figures.values[name], budget))
    rows = [_failed_parity(_with_detail(_within_noise(r, figures), figures), figures) for r in rows]
    return CheckReport(figures.run_dir, baseline.path, rows, dict(figures.found), budgets)


def allowed_missing(stages: Iterable[str]) -> set[str]:
    """Source keys for `--allow-missing` stage names (prune, export, bench).

    Raises:
        UserInputError: an unknown stage name.
    """
    by_stage = {source.stage: key for key, source in SOURCES.items()}
    keys = set()
    for stage in stages:
        if stage not in by_stage:
            raise unknown_name_error("--allow-missing stage", stage, by_stage)
        keys.add(by_stage[stage])
    return keys


def _failed_parity(row: Row, figures: Figures) -> Row:
    """A speedup of files that failed export parity fails, whatever its value or the baseline says."""
    roles = figures.parity_failed_pairs.get(row.name)
    if not roles:
        return row
    message = f"{' and '.join(roles)} file failed export parity; timing not valid"
    return replace(row, status=FAIL, message=message)


def _within_noise(row: Row, figures: Figures) -> Row:
    """A speedup below its limit passes when this run's own block spread still reaches the limit.

    Why: dense and pruned are timed in blocks that alternate; the 10th-90th percentile of the
    per-block speedups is how far this run's noise alone moves the figure. A regression is a
    speedup whose whole spread lies below the limit; a p50 under the limit with a spread across
    it is a noisy run (a shared CI core), which the gate reports but does not fail on.
    """
    if row.status != FAIL or row.name not in figures.speedup_spread or row.baseline is None:
        return row
    if row.budget is None or row.current is None:
        return row
    lo, hi = figures.speedup_spread[row.name]
    limit = _higher_is_better_limit(row.baseline, row.budget)
    if hi < limit:
        return row
    message = (
        f"{row.message}, but this run's block spread {lo:.2f}x-{hi:.2f}x reaches the {limit:.2f}x limit: "
        "noise, not a regression"
    )
    return replace(row, status=PASS, message=message)


def _with_detail(row: Row, figures: Figures) -> Row:
    """Add what the run itself says about a failure: which files broke parity, how noisy a speedup was."""
    if row.status != FAIL:
        return row
    if row.name == "parity.passed" and figures.parity_failures:
        return replace(row, message=f"parity failed for {', '.join(figures.parity_failures)}")
    if row.name in figures.speedup_spread and row.current is not None:
        lo, hi = figures.speedup_spread[row.name]
        return replace(row, message=f"{row.message} (block spread in this run {lo:.2f}x-{hi:.2f}x)")
    return row


def ordered_names(names: set[str]) -> list[str]:
    """Table order: METRICS order, then by item name."""
    index = {m.key: i for i, m in enumerate(METRICS)}

    def key(name: str) -> tuple[int, str]:
        try:
            metric = metric_for(name)
        except UserInputError:
            return (len(METRICS), name)
        return (index[metric.key], _natural(name))

    return sorted(names, key=key)


def _natural(name: str) -> str:
    # b1 < b32 < b128 when sorting pair names
    return re.sub(r"\d+", lambda m: m.group().zfill(8), name)
