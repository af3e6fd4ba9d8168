"""`asp check`: a CI gate on a run's size, params, FLOPs, accuracy, export parity and speedup.

    from asp_export.check import run_check, write_baseline, render
    report = run_check("runs/ci", "asp-baseline.json")
    print(render(report, "table")); raise SystemExit(0 if report.passed else 1)

Modules: `metrics` (the METRICS / BUDGETS / SOURCES tables), `figures` (reading a run),
`compare` (judging each metric against its budget), `check` (`run_check`, writing the
baseline), `baseline` (the committed baseline file), `output` (table / Markdown / JSON /
JUnit). Imports only the standard library, so the gate runs where TensorFlow is not installed.
"""

from __future__ import annotations

from asp_export.check.baseline import Baseline, BaselineError, load_baseline
from asp_export.check.check import BaselineUpdate, run_check, write_baseline
from asp_export.check.compare import CheckReport, Row, compare
from asp_export.check.figures import collect
from asp_export.check.metrics import BUDGETS, METRICS, SOURCES
from asp_export.check.output import FORMATS, append_step_summary, render

__all__ = [
    "BUDGETS",
    "FORMATS",
    "METRICS",
    "SOURCES",
    "Baseline",
    "BaselineError",
    "BaselineUpdate",
    "CheckReport",
    "Row",
    "append_step_summary",
    "collect",
    "compare",
    "load_baseline",
    "render",
    "run_check",
    "write_baseline",
]
