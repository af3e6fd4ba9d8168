"""The data of the gate: which run-dir files hold which figures, which direction is better, and
how much slack each family of metrics gets.

`SOURCES` names the files, `BUDGETS` the slack families (one CLI option each), `METRICS` the rows
(key, source, extractor, direction, budget family, unit). Collecting, comparing, writing the
baseline and rendering all loop over these tables, so adding a metric is adding a row here.
Standard library only.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asp_export.artifacts import pair_id
from asp_export.errors import UserInputError, unknown_name_error
from asp_export.rundir import RunDir

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# Sources: the run-dir files a metric can come from.


@dataclass(frozen=True)
class Source:
    """A file in the run directory that figures are read from."""

    key: str
    path: Callable[[RunDir], Path]
    label: str  # as shown to users, relative to the run root
    written_by: str
    stage: str  # the name `asp check --allow-missing` takes


SOURCES: dict[str, Source] = {
    s.key: s
    for s in (
        Source("report", lambda run: run.report_json, "report.json", "asp prune", "prune"),
        Source("manifest", lambda run: run.manifest_json, "export/manifest.json", "asp export", "export"),
        Source("bench", lambda run: run.bench_json, "bench/bench.json", "asp bench", "bench"),
    )
}


# --------------------------------------------------------------------------------------------
# Budgets: how much a family of metrics may get worse. One CLI option per budget.


@dataclass(frozen=True)
class Budget:
    """The allowed slack for a family of metrics.

    `kind` is "relative" (percent of the baseline value) or "points" (absolute percentage
    points, for accuracies stored as fractions). `slack` is a fixed allowance on top, in the
    metric's unit, for noise that does not scale with the value (see SIZE_SLACK_BYTES).
    """

    key: str
    kind: str
    default: float
    option: str
    help: str
    slack: float = 0.0

    def parse(self, text: Any, *, where: str | None = None) -> float:
        """Parse '10%', '10', 10, '0.2', '0.2pp' into a non-negative number in this budget's unit.

        Raises:
            UserInputError: when the text is not a non-negative number in this budget's unit.
        """
        where = where or self.option
        raw = str(text).strip().lower().replace(" ", "")
        if self.kind == "relative":
            number = raw[:-1] if raw.endswith("%") else raw
            example = "10% (or 10)"
        else:
            if raw.endswith("%"):
                raise UserInputError(
                    f"{where}={text!r}: accuracy budgets are absolute percentage points, not percent; "
                    f"write 0.2 or 0.2pp for 0.2 points."
                )
            number = raw[:-2] if raw.endswith("pp") else raw
            example = "0.2 (or 0.2pp)"
        try:
            value = float(number)
        except ValueError:
            raise UserInputError(f"{where}={text!r} is not a budget; write e.g. {example}.") from None
        if not math.isfinite(value) or value < 0:
            raise UserInputError(f"{where}={text!r} must be a finite number >= 0, e.g. {example}.")
        return value

    def format(self, value: float) -> str:
        """The budget as stored in the baseline file: '10%' or '0.2pp'."""
        return f"{value:g}%" if self.kind == "relative" else f"{value:g}pp"


# Two identical `asp prune/export` runs wrote ONNX files 1 and 7 bytes apart: the exported files
# embed the run directory's path as metadata and tf2onnx names generated constants differently
# from run to run. Growth that matters is far larger (a wider layer is caught exactly by the
# params/FLOPs rows; a precision or format change multiplies the size), so sizes get this fixed
# allowance on top of their relative budget.
SIZE_SLACK_BYTES = 512

BUDGETS: dict[str, Budget] = {
    b.key: b
    for b in (
        Budget(
            "size",
            "relative",
            0.0,
            "--max-size-increase",
            f"Allowed growth of each model file (report's .keras and every exported file), "
            f"plus {SIZE_SLACK_BYTES} bytes for embedded paths and generated names.",
            slack=SIZE_SLACK_BYTES,
        ),
        Budget("params", "relative", 0.0, "--max-params-increase", "Allowed growth of the pruned params."),
        Budget("flops", "relative", 0.0, "--max-flops-increase", "Allowed growth of the pruned FLOPs."),
        Budget(
            "nodes",
            "relative",
            0.0,
            "--max-nodes-increase",
            "Allowed growth of each exported ONNX file's node count (the manifest's graph.nodes).",
        ),
        Budget(
            "accuracy",
            "points",
            0.2,
            "--max-accuracy-drop",
            "Allowed drop of pruned and masked accuracy, in percentage points.",
        ),
        Budget(
            "latency",
            "relative",
            10.0,
            "--max-latency-regression",
            "Allowed fall of each speedup_p50 (dense/pruned p50 measured in the same run), "
            "in percent of the baseline speedup: the run-to-run noise the gate tolerates.",
        ),
    )
}


# --------------------------------------------------------------------------------------------
# Metrics: what is read from which source, and which direction is better.


@dataclass(frozen=True)
class Metric:
    """One row of the METRICS table.

    `key` names the metric; rows whose `per_item` is true expand into one metric per file or
    benchmark pair, named `key[item]` (e.g. `size_bytes[pruned/onnx/fp32]`). `extract` turns the
    source's JSON into {metric name: value}; a value of None means "listed but not measured".
    `direction` is "lower" or "higher" (better), "true" (must be true) or "info" (shown only).
    """

    key: str
    label: str
    source: str
    extract: Callable[[dict[str, Any]], dict[str, Any]]
    direction: str
    budget: str | None
    unit: str
    per_item: bool = False

    def owns(self, name: str) -> bool:
        if self.per_item:
            return name.startswith(self.key + "[") and name.endswith("]")
        return name == self.key


def _path(data: Mapping[str, Any], dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return MISSING
        node = node[part]
    return node


MISSING = object()


def _field(dotted: str, name: str, kind: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Extractor for one scalar field; absent fields yield no metric (the comparison reports them)."""

    def extract(data: dict[str, Any]) -> dict[str, Any]:
        value = _path(data, dotted)
        if value is MISSING:
            return {}
        return {name: _validated(value, kind, dotted)}

    return extract


def _validated(value: Any, kind: str, where: str) -> Any:
    if value is None:
        return None
    if kind == "count" and not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        raise _malformed(where, value, "a non-negative integer")
    if kind == "fraction":
        if not is_number(value) or not 0.0 <= value <= 1.0:
            raise _malformed(where, value, "an accuracy fraction in [0, 1]")
    if kind == "ratio" and not (is_number(value) and value > 0):
        raise _malformed(where, value, "a positive number")
    if kind == "text" and not isinstance(value, str):
        raise _malformed(where, value, "a string")
    if kind == "bool" and not isinstance(value, bool):
        raise _malformed(where, value, "true or false")
    return value


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class FieldError(Exception):
    """A source field has the wrong type; turned into RunDirError naming the file."""


def _malformed(where: str, value: Any, expected: str) -> FieldError:
    return FieldError(f"field {where} is {value!r}, expected {expected}")


def _files(data: dict[str, Any]) -> list[dict[str, Any]]:
    files = data.get("files", [])
    if not isinstance(files, list) or not all(isinstance(f, dict) for f in files):
        raise FieldError("field files must be a list of objects")
    return files


def _file_id(entry: dict[str, Any]) -> str:
    return "/".join(str(entry.get(k, "?")) for k in ("model", "format", "precision"))


def _file_sizes(data: dict[str, Any]) -> dict[str, Any]:
    return {
        f"size_bytes[{_file_id(f)}]": _validated(
            f.get("size_bytes"), "count", f"files[{_file_id(f)}].size_bytes"
        )
        for f in _files(data)
    }


def _file_nodes(data: dict[str, Any]) -> dict[str, Any]:
    # Only files whose manifest entry has a graph summary (asp export writes one per ONNX file).
    out = {}
    for f in _files(data):
        graph = f.get("graph")
        if isinstance(graph, dict) and "nodes" in graph:
            out[f"nodes[{_file_id(f)}]"] = _validated(
                graph["nodes"], "count", f"files[{_file_id(f)}].graph.nodes"
            )
    return out


def _export_failures(data: dict[str, Any]) -> list[dict[str, Any]]:
    # asp export lists files whose converter failed under "failures" (not in the contract's
    # minimum, so absent is fine); a file that could not be written has not passed parity either.
    failures = data.get("failures") or []
    return [f for f in failures if isinstance(f, dict)] if isinstance(failures, list) else []


def _parity_passed(data: dict[str, Any]) -> dict[str, Any]:
    files = _files(data)
    if not files and not _export_failures(data):
        return {}
    for f in files:
        parity = f.get("parity")
        passed = parity.get("passed") if isinstance(parity, dict) else None
        _validated(passed, "bool", f"files[{_file_id(f)}].parity.passed")
    return {"parity.passed": not parity_failures(data)}


def parity_failures(manifest: dict[str, Any]) -> list[str]:
    """Exported files (model/format/precision) that failed parity or failed to export."""
    failed = [
        _file_id(f)
        for f in _files(manifest)
        if not (isinstance(f.get("parity"), dict) and f["parity"].get("passed") is True)
    ]
    return failed + [f"{_file_id(f)} (export failed)" for f in _export_failures(manifest)]


def _speedups(data: dict[str, Any]) -> dict[str, Any]:
    pairs = data.get("pairs", [])
    if not isinstance(pairs, list) or not all(isinstance(p, dict) for p in pairs):
        raise FieldError("field pairs must be a list of objects")
    out: dict[str, Any] = {}
    for pair in pairs:
        name = f"speedup_p50[{pair_id(pair)}]"
        if name in out:
            log.warning("bench/bench.json lists pair %s twice; using the last one.", pair_id(pair))
        out[name] = _validated(pair.get("speedup_p50"), "ratio", f"pairs[{pair_id(pair)}].speedup_p50")
    return out


def parity_failed_pairs(data: dict[str, Any]) -> dict[str, list[str]]:
    """Speedup metric name -> roles (dense/pruned) whose timed file had failed export parity."""
    out = {}
    for pair in data.get("pairs", []):
        roles = pair.get("parity_failed")
        if isinstance(roles, list) and roles:
            out[f"speedup_p50[{pair_id(pair)}]"] = [str(r) for r in roles]
    return out


def speedup_spreads(data: dict[str, Any]) -> dict[str, tuple[float, float]]:
    # Not part of the contract's minimum: a speedup whose block spread still reaches its limit is
    # judged noise, not a regression (compare._within_noise), and the spread is shown beside it.
    out = {}
    for pair in data.get("pairs", []):
        lo, hi = pair.get("speedup_p10_blocks"), pair.get("speedup_p90_blocks")
        if is_number(lo) and is_number(hi):
            out[f"speedup_p50[{pair_id(pair)}]"] = (lo, hi)
    return out


METRICS: tuple[Metric, ...] = (
    Metric(
        key="structure",
        label="kept filters/neurons per layer",
        source="report",
        extract=_field("structure", "structure", "text"),
        direction="info",
        budget=None,
        unit="text",
    ),
    Metric(
        key="params",
        label="pruned model params",
        source="report",
        extract=_field("pruned.params", "params", "count"),
        direction="lower",
        budget="params",
        unit="count",
    ),
    Metric(
        key="flops",
        label="pruned model FLOPs (2 x MACs)",
        source="report",
        extract=_field("pruned.flops", "flops", "count"),
        direction="lower",
        budget="flops",
        unit="count",
    ),
    Metric(
        key="size_bytes[pruned/keras]",
        label="pruned .keras file size",
        source="report",
        extract=_field("pruned.size_bytes", "size_bytes[pruned/keras]", "count"),
        direction="lower",
        budget="size",
        unit="bytes",
    ),
    Metric(
        key="accuracy.pruned",
        label="pruned model accuracy",
        source="report",
        extract=_field("pruned.accuracy", "accuracy.pruned", "fraction"),
        direction="higher",
        budget="accuracy",
        unit="fraction",
    ),
    Metric(
        key="accuracy.masked",
        label="dense model with dead groups zeroed, accuracy",
        source="report",
        extract=_field("masked.accuracy", "accuracy.masked", "fraction"),
        direction="higher",
        budget="accuracy",
        unit="fraction",
    ),
    Metric(
        key="size_bytes",
        label="exported file size (model/format/precision)",
        source="manifest",
        extract=_file_sizes,
        direction="lower",
        budget="size",
        unit="bytes",
        per_item=True,
    ),
    Metric(
        key="nodes",
        label="exported ONNX graph nodes (model/format/precision)",
        source="manifest",
        extract=_file_nodes,
        direction="lower",
        budget="nodes",
        unit="count",
        per_item=True,
    ),
    Metric(
        key="parity.passed",
        label="every exported file matches its Keras model",
        source="manifest",
        extract=_parity_passed,
        direction="true",
        budget=None,
        unit="bool",
    ),
    Metric(
        key="speedup_p50",
        label="dense p50 / pruned p50 (runtime/provider/format[/precision]/batch)",
        source="bench",
        extract=_speedups,
        direction="higher",
        budget="latency",
        unit="ratio",
        per_item=True,
    ),
)


def metric_for(name: str) -> Metric:
    """The METRICS row a metric name belongs to (exact rows win over per-item rows).

    Raises:
        UserInputError: for a name no row owns, with a did-you-mean hint.
    """
    for metric in METRICS:
        if not metric.per_item and metric.owns(name):
            return metric
    for metric in METRICS:
        if metric.per_item and metric.owns(name):
            return metric
    raise unknown_name_error("metric", name, [m.key + ("[...]" if m.per_item else "") for m in METRICS])
