"""bench.json / bench.md / bench.csv / latency.png, and the terminal views of the same numbers.

Every file goes through asp_export._io (atomic), so a killed benchmark never leaves a half report that
`asp check` would trust. The sentences under the tables say plainly when a pruned model is slower.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from asp_export import tables
from asp_export._io import write_json_atomic, write_text_atomic
from asp_export.bench.profile import format_placement, format_profile
from asp_export.bench.stats import STAT_FIELDS, dispersion_reason
from asp_export.units import format_ms, significant

CSV_COLUMNS = (
    "model",
    "role",
    "format",
    "precision",
    "runtime",
    "provider",
    "provider_requested",
    "fallback",
    "batch",
    "threads",
    "status",
    "parity_failed",
    *STAT_FIELDS,
    "flops",
    "error",
    "path",
)
# What a row measured, then its figures: the terminal table shows the essentials, the Markdown more.
_ROW_KEYS = ("runtime", "provider", "model", "format", "precision", "batch", "status")
_TABLE_COLUMNS = (*_ROW_KEYS, "p50_ms", "p90_ms", "p99_ms", "throughput", "n_iter")
_MARKDOWN_COLUMNS = (
    *_ROW_KEYS,
    *("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "throughput", "n_iter"),
    *("first_inference_ms", "load_ms"),
)
_PAIR_COLUMNS = tables.columns(
    *("runtime", "provider", "format", "precision", "batch", "dense p50 ms", "pruned p50 ms", "speedup"),
    *("FLOPs ratio", "efficiency", "verdict"),
    right=("batch", "dense p50 ms", "pruned p50 ms", "speedup", "FLOPs ratio", "efficiency"),
)


def _row_columns(keys: tuple[str, ...]) -> tuple[tables.Column, ...]:
    """Row keys as columns: figures right-aligned, names left."""
    return tuple(
        tables.Column(k, k == "batch" or k.endswith("_ms") or k in ("throughput", "n_iter")) for k in keys
    )


def write_outputs(data: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write bench.json, bench.md, bench.csv, latency.png and one profile_*.json per profile.

    Returns:
        name -> path of every file written.
    """
    from asp_export.bench.plot import plot_latency

    out_dir = Path(out_dir)
    written = {}
    for profile in data.get("profiles", []):
        if profile.get("ops"):
            path = out_dir / profile["file"]
            write_json_atomic(path, {"schema_version": 1, **profile})
            written[profile["file"]] = path
    written["bench.json"] = out_dir / "bench.json"
    write_json_atomic(written["bench.json"], data)
    written["bench.md"] = out_dir / "bench.md"
    write_text_atomic(written["bench.md"], to_markdown(data))
    written["bench.csv"] = out_dir / "bench.csv"
    write_text_atomic(written["bench.csv"], to_csv(data))
    written["latency.png"] = out_dir / "latency.png"
    plot_latency(data, written["latency.png"])
    return written


# ---------------------------------------------------------------------------------------------------
# formatting helpers


def _fmt(value: Any, key: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if key == "throughput":
            return f"{value:,.0f}"
        if key.endswith("_ms"):  # latencies: the same digits everywhere (asp_export/units.py)
            return significant(value)
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def _cell(row: dict[str, Any], key: str) -> str:
    """A row's cell; the status of a file that failed export parity says so."""
    text = _fmt(row.get(key), key)
    return f"{text} PARITY FAILED" if key == "status" and row.get("parity_failed") else text


def pair_sentence(pair: dict[str, Any]) -> str:
    """One plain sentence per dense/pruned pair."""
    parts = (f"{pair['runtime']}/{pair['provider'] or '-'}", pair["format"], pair["precision"])
    where = " ".join(p for p in parts if p) + f" batch {pair['batch']}"
    if pair["status"] == "provider_mismatch":
        return f"{where}: no speedup (dense and pruned ran on different providers)."
    if pair["status"] != "ok":
        return f"{where}: no speedup (a row failed; see its error)."
    speedup = pair["speedup_p50"]
    ratio = pair.get("flops_ratio")
    if ratio is None:
        flops = "; FLOPs ratio unknown"
    elif ratio < 1:
        flops = f"; the pruned model has {1 / ratio:.2f}x MORE FLOPs"
    elif pair.get("efficiency") is None:
        flops = "; no FLOPs were cut"
    else:
        flops = f"; FLOPs {ratio:.2f}x fewer, so {pair['efficiency']:.2f} of the FLOPs cut became time"
    timing = f"(p50 {format_ms(pair['dense_p50_ms'])} dense vs {format_ms(pair['pruned_p50_ms'])} pruned)"
    failed = pair.get("parity_failed")
    warning = (
        f" {' and '.join(failed).upper()} FAILED EXPORT PARITY: not a valid comparison." if failed else ""
    )
    if pair["verdict"] == "slower":
        return (
            f"{where}: PRUNED IS SLOWER than dense: {speedup:.2f}x {timing}{flops}. "
            f"Check channel alignment (round_to) and the per-op profile.{warning}"
        )
    if pair["verdict"] == "faster":
        return f"{where}: pruned {speedup:.2f}x faster {timing}{flops}.{warning}"
    return f"{where}: {speedup:.2f}x, within noise: no reliable difference {timing}{flops}.{warning}"


def notes(data: dict[str, Any]) -> list[str]:
    """Warnings a reader must not miss: fallbacks (once per provider), failures, noisy or capped rows."""
    lines = []
    fallbacks: dict[tuple[str, str, str], str | None] = {}
    for r in data["rows"]:
        if r["fallback"]:
            key = (r["runtime"], r["provider_requested"], r["provider"])
            fallbacks.setdefault(key, r.get("provider_error"))
    for (runtime, requested, actual), reason in fallbacks.items():
        what = (
            "a GPU is visible but provider 'auto' found none that runs"
            if requested == "auto"
            else f"requested provider {requested!r} could not run here"
        )
        because = f": {reason}" if reason else "."
        lines.append(f"{runtime}: {what}; rows ran on {actual} (recorded as fallback){because}")
    for row in data["rows"]:
        tag = " ".join(str(p) for p in (row["runtime"], row["model"], row["format"], row["precision"]) if p)
        tag = f"{tag} batch {row['batch']}"
        if row.get("parity_failed"):
            lines.append(f"{tag}: this file FAILED export parity (see export/manifest.json); timed anyway.")
        if row["status"] != "ok":
            lines.append(f"{tag}: {row['status']}: {row['error']}")
            continue
        if row["dispersion_high"]:
            why = dispersion_reason(row["p50_ms"], row["p90_ms"], row["cv"]) or "flagged when measured"
            lines.append(
                f"{tag}: high dispersion: {why} (p50 {format_ms(row['p50_ms'])}, "
                f"p90 {format_ms(row['p90_ms'])}); small differences are not reliable."
            )
        if row.get("capped"):
            lines.append(f"{tag}: stopped at the time cap before the minimum count/time was reached.")
    return lines


def to_markdown(data: dict[str, Any]) -> str:
    machine, settings = data["machine"], data["settings"]
    versions = ", ".join(
        f"{k} {v}"
        for k, v in data["versions"].items()
        if k in ("python", "onnxruntime-gpu", "onnxruntime", "ai-edge-litert", "tensorflow")
    )
    out = [
        "# asp bench",
        "",
        f"Source: `{data['source']}` · {data['created_utc']}",
        f"Machine: {machine.get('cpu')} · {machine.get('cpu_count')} cores · "
        f"GPU: {machine.get('gpu') or 'none'}",
        f"Versions: {versions}",
        f"Settings: threads {settings['threads']} · provider {settings['provider']} · warm-up "
        f"{settings['warmup']} · at least {settings['min_iterations']} runs and {settings['min_time_s']} s "
        f"per model (cap {settings['max_time_s']} s) · dense/pruned interleaved in blocks of "
        f"{settings['block']}",
        "",
        "## Dense vs pruned",
        "",
    ]
    if data["pairs"]:
        pair_rows = []
        for p in data["pairs"]:
            verdict_text = "**SLOWER**" if p["verdict"] == "slower" else (p["verdict"] or p["status"])
            if p.get("parity_failed"):
                verdict_text += f" · **{'/'.join(p['parity_failed'])} failed parity**"
            pair_rows.append(
                (
                    *(p["runtime"], _fmt(p["provider"]), p["format"], _fmt(p["precision"]), str(p["batch"])),
                    *(_fmt(p["dense_p50_ms"], "dense_p50_ms"), _fmt(p["pruned_p50_ms"], "pruned_p50_ms")),
                    *(_fmt(p["speedup_p50"]), _fmt(p["flops_ratio"]), _fmt(p["efficiency"]), verdict_text),
                )
            )
        out.append(tables.to_markdown(_PAIR_COLUMNS, pair_rows))
        out += [""] + [f"- {pair_sentence(p)}" for p in data["pairs"]]
    else:
        out.append("No dense/pruned pairs in this benchmark.")
    out += ["", "## Rows", ""]
    out.append(_rows_table(data, _MARKDOWN_COLUMNS, tables.to_markdown))
    if data.get("profiles"):
        out += ["", "## Where the time goes (onnxruntime profile)", ""]
        for prof in data["profiles"]:
            if prof.get("ops"):
                out.append(
                    f"- {_what(prof)} batch {prof['batch']} on "
                    f"{prof['provider']}: {format_profile(prof)}; {format_placement(prof)} (`{prof['file']}`)"
                )
            else:
                out.append(f"- {prof['model']}: profile failed: {prof.get('error')}")
    extra = notes(data)
    if extra:
        out += ["", "## Notes", ""] + [f"- {line}" for line in extra]
    out += [
        "",
        "Latency: one call at the given batch; throughput = batch x 1000 / p50_ms (samples/s); "
        "latencies in ms to 4 significant digits; peak RSS (MB = 10^6 bytes) is the benchmark process's "
        "maximum so far. See docs/bench.md.",
        "",
    ]
    return "\n".join(out)


def to_csv(data: dict[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in data["rows"]:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in CSV_COLUMNS})
    return buffer.getvalue()


def to_terminal(data: dict[str, Any], fmt: str = "table") -> str:
    """What `asp bench` prints: the rows as an aligned table and the pair sentences, or json/md/csv."""
    if fmt == "json":
        return json.dumps(data, indent=2, default=str)
    if fmt == "md":
        return to_markdown(data)
    if fmt == "csv":
        return to_csv(data)
    lines = [_rows_table(data, _TABLE_COLUMNS, tables.to_text)]
    lines += [pair_sentence(p) for p in data["pairs"]]
    lines += [f"note: {line}" for line in notes(data)]
    lines += [
        f"profile {_what(p)} batch {p['batch']}: {format_profile(p)}"
        for p in data.get("profiles", [])
        if p.get("ops")
    ]
    return "\n".join(lines)


def _what(entry: dict[str, Any]) -> str:
    return " ".join(str(entry[k]) for k in ("model", "format", "precision") if entry.get(k))


def _rows_table(data: dict[str, Any], keys: tuple[str, ...], render: Callable[..., str]) -> str:
    """The rows as a table, terminal text or Markdown (asp_export.tables renders both)."""
    return render(_row_columns(keys), [[_cell(row, k) for k in keys] for row in data["rows"]])
