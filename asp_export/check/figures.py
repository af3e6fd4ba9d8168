"""Read a run directory into the figures `asp check` compares (`collect`), and why some are missing.

Standard library only, like the rest of `asp_export.check`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asp_export.check.metrics import (
    METRICS,
    SOURCES,
    FieldError,
    Metric,
    parity_failed_pairs,
    parity_failures,
    speedup_spreads,
)
from asp_export.errors import RunDirError
from asp_export.rundir import RunDir, read_json

log = logging.getLogger(__name__)


@dataclass
class Figures:
    """What a run directory holds: metric values and which sources were found."""

    run_dir: Path
    values: dict[str, Any] = field(default_factory=dict)
    found: dict[str, bool] = field(default_factory=dict)  # source key -> file exists
    metric_of: dict[str, Metric] = field(default_factory=dict)
    parity_failures: list[str] = field(default_factory=list)
    # speedup name -> (p10, p90) of the per-block speedups asp bench measured, when it recorded them
    speedup_spread: dict[str, tuple[float, float]] = field(default_factory=dict)
    # speedup name -> roles whose benchmarked file had failed export parity (asp bench marks them)
    parity_failed_pairs: dict[str, list[str]] = field(default_factory=dict)

    @property
    def missing(self) -> list[str]:
        return [SOURCES[k].label for k, ok in self.found.items() if not ok]


def collect(run_dir: str | Path) -> Figures:
    """Read every available source of a run directory into metric values.

    Raises:
        RunDirError: the directory does not exist, holds none of the sources, or a source is
            not valid JSON / has a wrong-typed field / a newer schema.
    """
    run = RunDir(run_dir)
    if not run.root.is_dir():
        raise RunDirError(
            f"Run directory {run.root} does not exist; create it with `asp prune --out {run.root}` "
            f"(then `asp export` and `asp bench`)."
        )
    figures = Figures(run_dir=run.root)
    for source in SOURCES.values():
        path = source.path(run)
        figures.found[source.key] = path.is_file()
        if not path.is_file():
            log.debug("%s not found in %s", source.label, run.root)
            continue
        data = read_json(path, what=source.label)
        try:
            for metric in METRICS:
                if metric.source != source.key:
                    continue
                for name, value in metric.extract(data).items():
                    figures.values[name] = value
                    figures.metric_of[name] = metric
            if source.key == "manifest":
                figures.parity_failures = parity_failures(data)
            if source.key == "bench":
                figures.speedup_spread = speedup_spreads(data)
                figures.parity_failed_pairs = parity_failed_pairs(data)
        except FieldError as err:
            raise RunDirError(f"{path}: {err}; re-run `{source.written_by}` to rewrite it.") from None
    if not any(figures.found.values()):
        labels = ", ".join(s.label for s in SOURCES.values())
        raise RunDirError(
            f"{run.root} holds none of {labels}; run `asp prune --out {run.root}` "
            f"(then `asp export` / `asp bench`) before `asp check`."
        )
    return figures
