"""Where the time goes: onnxruntime's per-node profile folded into a per-op-type summary.

A FLOPs cut that does not become a speedup usually shows here: time moves to Transpose/Reshape glue,
or a narrow Conv stays as slow as a wide one. The profile runs in its own session after timing,
because profiling itself slows every node down.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from asp_export.bench.providers import GPU_PROVIDERS, PROVIDERS, create_session, tensorrt_options
from asp_export.bench.runtimes import ort_feeds, ort_session_options
from asp_export.errors import one_line

log = logging.getLogger(__name__)


def profile_targets(
    targets: Sequence[Any],
    *,
    batch: int,
    threads: int | None,
    provider: str,
    strict: bool,
    trt_cache: Path | None,
) -> list[dict[str, Any]]:
    """`profile_onnx` for each bench target (.onnx files) at `batch`; a failure is an entry with `error`."""
    out = []
    for target in targets:
        entry: dict[str, Any] = {
            "model": target.model,
            "format": target.format,
            "precision": target.precision,
            "file": profile_file_name(target.model, target.precision),
        }
        try:
            trt = None
            if provider in ("auto", "tensorrt"):  # the lists that contain TensorRT
                fp16 = target.precision == "fp16"
                trt = tensorrt_options(target.path, batch=batch, fp16=fp16, cache_dir=trt_cache)
            entry.update(
                profile_onnx(
                    target.path,
                    batch=batch,
                    threads=threads,
                    provider=provider,
                    strict=strict,
                    trt_options=trt,
                )
            )
            _log_placement(entry)
        except Exception as err:  # noqa: BLE001 - a profile is extra information; the timings stand
            log.warning("onnxruntime profile of %s failed: %s", target.path, one_line(err, limit=300))
            entry.update(batch=batch, error=one_line(err, limit=300), ops=[])
        out.append(entry)
    return out


def profile_file_name(model: str, precision: str | None) -> str:
    parts = [model] + ([precision] if precision else [])
    return "profile_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", "_".join(parts)) + ".json"


def _log_placement(entry: dict[str, Any]) -> None:
    """Say when a GPU session still ran nodes on the CPU (what get_providers() cannot tell)."""
    placed = entry.get("nodes_by_provider") or {}
    on_cpu = placed.get(PROVIDERS["cpu"], 0)
    if entry.get("provider") in GPU_PROVIDERS and on_cpu:
        log.warning(
            "onnxruntime profile of %s: %d of %d nodes ran on %s, not on %s.",
            entry["model"],
            on_cpu,
            sum(placed.values()),
            PROVIDERS["cpu"],
            entry["provider"],
        )


def profile_onnx(
    path: str | Path,
    *,
    batch: int,
    threads: int | None,
    provider: str = "auto",
    iterations: int = 20,
    warmup: int = 3,
    top: int = 10,
    strict: bool = False,
    trt_options: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run an .onnx file with ORT profiling on and summarize kernel time by op type.

    Args:
        path: the .onnx file.
        batch: batch size of the profiled runs.
        threads: intra-op threads, as in the timed runs.
        provider: `--provider` value (the provider that really ran is recorded).
        iterations: profiled runs after `warmup` runs that are excluded from the summary.
        top: how many op types to keep (the rest are summed into `other`).
        strict, trt_options: as for the timed sessions (providers.create_session).

    Returns:
        `{"batch", "provider", "runs", "total_ms_per_run", "ops": [{"op_type", "ms_per_run", "share",
        "nodes"}], "nodes_by_provider": {provider: nodes}}` with ops sorted by time, largest first.
        `provider` is the session's first provider; `nodes_by_provider` is where each node really ran.
    """
    with tempfile.TemporaryDirectory(prefix="asp-ort-profile-") as tmp:
        options = ort_session_options(threads, profile_prefix=str(Path(tmp) / "ort"))
        session, choice = create_session(str(path), provider, options, strict=strict, trt_options=trt_options)
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
    placed: dict[str, set[str]] = defaultdict(set)  # provider -> nodes it ran
    for event in events:
        if event.get("cat") != "Node" or not str(event.get("name", "")).endswith("_kernel_time"):
            continue
        node = event["name"][: -len("_kernel_time")]
        placed[event.get("args", {}).get("provider", "?")].add(node)
        if event.get("ts", 0) <= cutoff:
            continue
        op_type = event.get("args", {}).get("op_name", "?")
        total_us[op_type] += float(event.get("dur", 0))
        nodes[op_type].add(node)
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
        "nodes_by_provider": {name: len(found) for name, found in sorted(placed.items())},
    }


def format_placement(profile: dict[str, Any]) -> str:
    """`nodes: CUDAExecutionProvider 14, CPUExecutionProvider 2` -- where the profiled nodes ran."""
    placed = profile.get("nodes_by_provider") or {}
    return "nodes: " + ", ".join(f"{name} {count}" for name, count in placed.items()) if placed else ""


def format_profile(profile: dict[str, Any], top: int = 4) -> str:
    """One line: `Conv 71% · Transpose 12% · ...` for bench.md and the terminal."""
    parts = [f"{op['op_type']} {op['share'] * 100:.0f}%" for op in profile["ops"][:top]]
    return " · ".join(parts)
