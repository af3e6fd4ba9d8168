"""Render a CheckReport for people (terminal table, Markdown) and for CI (JSON, JUnit XML).

Every renderer shows the same rows and the same figures, so the table in a terminal, the
GitHub step summary and the JUnit failure message never disagree. Values are formatted by
the metric's unit: counts with thousands separators, sizes in bytes (and KiB), accuracies in
percent with deltas in percentage points, speedups as `x` ratios.
"""

from __future__ import annotations

import json
import logging
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

from asp_export.check.compare import FAIL, INFO, NEW, PASS, SKIPPED, CheckReport, Row, format_pct
from asp_export.check.metrics import BUDGETS, SOURCES
from asp_export.tables import columns, to_markdown, to_text

log = logging.getLogger(__name__)

FORMATS = ("table", "json", "md", "junit")

_COLUMNS = columns(
    "metric", "baseline", "current", "delta", "budget", "status", right=("baseline", "current", "delta")
)


def format_value(row: Row, value: Any) -> str:
    """A metric value in its unit, '-' when absent."""
    if value is None:
        return "-"
    unit = row.metric.unit
    if unit == "bool":
        return "true" if value else "false"
    if unit == "count":
        return f"{value:,}"
    if unit == "bytes":
        return f"{value:,}"
    if unit == "fraction":
        return f"{value * 100:.2f}%"
    if unit == "ratio":
        return f"{value:.2f}x"
    return str(value)


def format_delta(row: Row) -> str:
    """The change from baseline to current, with its relative size where that means something."""
    if row.delta is None:
        return "-"
    unit = row.metric.unit
    if unit == "fraction":
        return f"{row.delta * 100:+.2f} pp"
    rel = f" ({format_pct(row.delta_pct)})" if row.delta_pct is not None else ""
    if unit == "ratio":
        return f"{row.delta:+.2f}x{rel}"
    return f"{row.delta:+,}{rel}"


def format_budget(row: Row) -> str:
    """The rule the metric must meet, e.g. '<= +0%', '>= -10%', 'drop <= 0.2 pp'."""
    direction = row.metric.direction
    if direction == "true":
        return "must be true"
    if direction == "info" or row.budget is None:
        return "-"
    if BUDGETS[row.metric.budget].kind == "points":
        return f"drop <= {row.budget:g} pp"
    slack = BUDGETS[row.metric.budget].slack
    if direction == "lower":
        unit = " B" if row.metric.unit == "bytes" else ""
        return f"<= +{row.budget:g}% +{slack:,g}{unit}" if slack else f"<= +{row.budget:g}%"
    return f">= -{row.budget:g}%"


def format_status(row: Row) -> str:
    if not row.message:  # a passing row speaks only when it passed as noise (compare._within_noise)
        return row.status
    return f"{row.status}: {row.message}"


def _cells(row: Row) -> tuple[str, ...]:
    return (
        row.name,
        format_value(row, row.baseline),
        format_value(row, row.current),
        format_delta(row),
        format_budget(row),
        format_status(row),
    )


def _sources_line(report: CheckReport) -> str:
    parts = [f"{SOURCES[k].label} {'found' if ok else 'MISSING'}" for k, ok in report.found.items()]
    return "sources: " + ", ".join(parts)


def _latency_note(report: CheckReport) -> str | None:
    if not any(r.metric.budget == "latency" for r in report.rows):
        return None
    allowed = report.budgets["latency"]
    return (
        f"latency gate: speedup_p50 = dense p50 / pruned p50, both measured in this run, so the "
        f"machine cancels out; each may fall by up to {allowed:g}% of its baseline (run-to-run noise) "
        f"before it fails."
    )


def render_table(report: CheckReport) -> str:
    """Plain-text table for the terminal, with the sources line and the PASS/FAIL summary."""
    lines = [f"asp check {report.run_dir} against {report.baseline_path}", _sources_line(report), ""]
    lines.append(to_text(_COLUMNS, [_cells(r) for r in report.rows]))
    lines.append("")
    note = _latency_note(report)
    if note:
        lines.append(note)
    lines.append(report.summary())
    return "\n".join(lines) + "\n"


_MD_STATUS = {PASS: "✅ pass", FAIL: "❌ fail", SKIPPED: "⏭️ skipped", NEW: "🆕 new", INFO: "ℹ️ info"}


def render_md(report: CheckReport) -> str:
    """GitHub-flavoured Markdown: a heading, the table, the sources and the summary."""
    verdict = "passed" if report.passed else "FAILED"
    lines = [f"### asp check {verdict}: `{report.run_dir}` vs `{report.baseline_path}`", ""]
    rows = []
    for row in report.rows:
        cells = list(_cells(row))
        cells[0] = f"`{cells[0]}`"
        cells[-1] = _MD_STATUS[row.status] + (f": {row.message}" if row.message else "")
        rows.append(cells)
    lines.append(to_markdown(_COLUMNS, rows))
    lines.append("")
    lines.append(_sources_line(report))
    note = _latency_note(report)
    if note:
        lines.extend(["", note])
    lines.extend(["", f"**{report.summary()}**", ""])
    return "\n".join(lines)


def render_json(report: CheckReport) -> str:
    """The full report as JSON (numbers unformatted) for other tools."""
    return json.dumps(report.to_dict(), indent=2) + "\n"


def render_junit(report: CheckReport) -> str:
    """JUnit XML: one testcase per metric; failures carry the figures, skips say why.

    `new` and `skipped` metrics are JUnit skips (they were not gated); `info` rows pass.
    """
    failures, skipped = report.count(FAIL), report.count(SKIPPED) + report.count(NEW)
    attrs = {
        "name": "asp check",
        "tests": str(len(report.rows)),
        "failures": str(failures),
        "errors": "0",
        "skipped": str(skipped),
    }
    root = ET.Element("testsuites", attrs)
    suite = ET.SubElement(root, "testsuite", attrs)
    for row in report.rows:
        case = ET.SubElement(
            suite, "testcase", {"classname": f"asp.check.{row.metric.source}", "name": row.name, "time": "0"}
        )
        detail = (
            f"baseline {format_value(row, row.baseline)}, current {format_value(row, row.current)}, "
            f"delta {format_delta(row)}, budget {format_budget(row)}"
        )
        if row.status == FAIL:
            failure = ET.SubElement(
                case, "failure", {"message": f"{row.name}: {row.message}", "type": "regression"}
            )
            failure.text = detail
        elif row.status in (SKIPPED, NEW):
            ET.SubElement(case, "skipped", {"message": row.message})
        else:
            ET.SubElement(case, "system-out").text = detail
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


RENDERERS: dict[str, Callable[[CheckReport], str]] = {
    "table": render_table,
    "json": render_json,
    "md": render_md,
    "junit": render_junit,
}


def render(report: CheckReport, fmt: str) -> str:
    """Render in one of FORMATS."""
    return RENDERERS[fmt](report)


def append_step_summary(report: CheckReport, env: dict[str, str] | None = None) -> Path | None:
    """Append the Markdown table to $GITHUB_STEP_SUMMARY when GitHub Actions sets it.

    Returns the file written, or None when the variable is not set.
    """
    env = os.environ if env is None else env
    target = env.get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    path = Path(target)
    # Appending (not atomic replace) is the contract of this file: earlier steps wrote to it too.
    # The summary is a courtesy: failing to write it must not turn a verdict into an I/O error.
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(render_md(report) + "\n")
    except OSError as err:
        log.warning("Could not append the check table to GITHUB_STEP_SUMMARY=%s: %s", target, err)
        return None
    return path
