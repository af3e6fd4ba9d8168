"""The baseline file `asp check` compares against: committed next to the code it guards.

    {"schema_version": 1, "created_from": "runs/ci", "asp_version": "0.1.0",
     "metrics": {"params": 21354, "accuracy.pruned": 0.981, "speedup_p50[...]": 3.9, ...},
     "budgets": {"size": "0%", "params": "0%", "flops": "0%", "accuracy": "0.2pp", "latency": "10%"}}

Budgets are keyed by family (`size`, `params`, `flops`, `accuracy`, `latency`) or by a metric
name for a per-metric exception (e.g. a noisier batch-1 latency pair). This module only reads,
validates the shape of and writes the file; what the names mean lives in `check.py`. It is
written only on an explicit `--write-baseline`, atomically, so a killed CI job never leaves a
half-written baseline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asp_export._io import write_json_atomic
from asp_export.errors import UserInputError
from asp_export.rundir import SCHEMA_VERSION, read_json

BASELINE_SCHEMA_VERSION = SCHEMA_VERSION


class BaselineError(UserInputError):
    """The baseline file is missing, malformed or from a newer schema (exit 2)."""


@dataclass
class Baseline:
    """A parsed baseline file."""

    path: Path
    metrics: dict[str, Any]
    budgets: dict[str, Any] = field(default_factory=dict)
    created_from: str | None = None
    asp_version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": BASELINE_SCHEMA_VERSION,
            "created_from": self.created_from,
            "asp_version": self.asp_version,
            "metrics": dict(self.metrics),
            "budgets": dict(self.budgets),
        }


def _hint_write(path: Path) -> str:
    return (
        f"create it from a good run with `asp check RUN_DIR --baseline {path} --write-baseline` and commit it"
    )


def load_baseline(path: str | Path) -> Baseline:
    """Read and validate a baseline file.

    Raises:
        BaselineError: missing file (with the --write-baseline hint), invalid JSON, newer
            schema_version, or metrics/budgets of the wrong shape.
    """
    path = Path(path)
    if not path.is_file():
        raise BaselineError(f"Baseline {path} not found; {_hint_write(path)}.")
    try:
        data = read_json(path, what=f"baseline {path}")
    except UserInputError as err:
        raise BaselineError(str(err)) from None
    metrics = data.get("metrics")
    if not isinstance(metrics, dict) or not metrics:
        raise BaselineError(f'Baseline {path} has no "metrics" object; {_hint_write(path)}.')
    for name, value in metrics.items():
        ok = isinstance(value, (bool, str)) or (isinstance(value, (int, float)) and math.isfinite(value))
        if not ok:
            raise BaselineError(
                f"Baseline {path}: metrics[{name!r}] is {value!r}, expected a number, true/false or a "
                f"string; fix it or rewrite the file with --write-baseline."
            )
    budgets = data.get("budgets", {})
    if not isinstance(budgets, dict):
        raise BaselineError(f'Baseline {path}: "budgets" must be an object like {{"latency": "10%"}}.')
    return Baseline(
        path=path,
        metrics=metrics,
        budgets=budgets,
        created_from=data.get("created_from"),
        asp_version=data.get("asp_version"),
    )


def save_baseline(baseline: Baseline) -> None:
    """Write the baseline atomically (the old file stays intact if anything fails)."""
    write_json_atomic(baseline.path, baseline.to_dict())
