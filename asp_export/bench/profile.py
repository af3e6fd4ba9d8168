"""Where the time goes: onnxruntime's per-node profile folded into a per-op-type summary.

A FLOPs cut that does not become a speedup usually shows here: time moves to Transpose/Reshape glue,
or a narrow Conv stays as slow as a wide one. The profile runs in its own session after timing,
because profiling itself slows every node down.
"""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from asp_export.bench.providers import create_session
from asp_export.bench.runtimes import ort_feeds, ort_session_options


def profile_onnx(
    path: str | Path,
    *,
    batch: int,
    threads: int | None,
    provider: str = "auto",
    iterations: int = 20,
    warmup: int = 3,
    top: int = 10,
) -> dict[str, Any]:
    """Run an .onnx file with ORT profiling on and summarize kernel time by op type.

    Args:
        path: the .onnx file.
        batch: batch size of the profiled runs.
        threads: intra-op threads, as in the timed runs.
        provider: `--provider` value (the provider that really ran is recorded).
        iterations: profiled runs after `warmup` runs that are excluded from the summary.
        top: how many op types to keep (the rest are summed into `other`).

    Returns:
        `{"batch", "provider", "runs", "total_ms_per_run", "ops": [{"op_type", "ms_per_run", "share",
        "nodes"}]}` with ops sorted by time, largest first.
    """
    with tempfile.TemporaryDirectory(prefix="asp-ort-profile-") as tmp:
        options = ort_session_options(threads, profile_prefix=str(Path(tmp) / "ort"))
        session, choice = create_session(str(path), provider, options)
        feeds = ort_feeds(session, batch)
        for _ in range(warmup + iterations):
            session.run(None, feeds)
        trace = Path(session.end_profiling())
        events = json.loads(trace.read_text(encoding="utf-8"))
    summary = summarize_profile(events, skip_runs=warmup, top=top)
    return {"batch": batch, "provider": choice.actual, **summary}


def summarize_profile(events: list[dict[str, Any]], *, skip_runs: int = 0, top: int = 10) -> dict[str, Any]:
    """Fold ORT trace events (Chrome trace format) into time per op type, ignoring the first runs."""
    runs = sorted(
        (e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
        key=lambda e: e["ts"],
    )
    cutoff = runs[skip_runs - 1]["ts"] + runs[skip_runs - 1]["dur"] if 0 < skip_runs <= len(runs) else -1
    counted_runs = max(len(runs) - max(skip_runs, 0), 1)
    total_us: dict[str, float] = defaultdict(float)
    nodes: dict[str, set[str]] = defaultdict(set)
    for event in events:
        if event.get("cat") != "Node" or not str(event.get("name", "")).endswith("_kernel_time"):
            continue
        if event.get("ts", 0) <= cutoff:
            continue
        op_type = event.get("args", {}).get("op_name", "?")
        total_us[op_type] += float(event.get("dur", 0))
        nodes[op_type].add(event["name"][: -len("_kernel_time")])
    grand = sum(total_us.values()) or 1.0
    ranked = sorted(total_us.items(), key=lambda kv: kv[1], reverse=True)
    ops = [
        {
            "op_type": op,
            "ms_per_run": us / counted_runs / 1000.0,
            "share": us / grand,
            "nodes": len(nodes[op]),
        }
        for op, us in ranked[:top]
    ]
    rest = ranked[top:]
    if rest:
        us = sum(v for _, v in rest)
        ops.append(
            {
                "op_type": "other",
                "ms_per_run": us / counted_runs / 1000.0,
                "share": us / grand,
                "nodes": sum(len(nodes[op]) for op, _ in rest),
            }
        )
    return {
        "runs": counted_runs,
        "total_ms_per_run": sum(total_us.values()) / counted_runs / 1000.0,
        "ops": ops,
    }


def format_profile(profile: dict[str, Any], top: int = 4) -> str:
    """One line: `Conv 71% · Transpose 12% · ...` for bench.md and the terminal."""
    parts = [f"{op['op_type']} {op['share'] * 100:.0f}%" for op in profile["ops"][:top]]
    return " · ".join(parts)
