"""`asp bench` orchestration: find the files, run every (runtime, file, batch), pair dense with pruned.

Order of work: for each runtime, for each group of files that share (format, precision) -- typically the
dense and the pruned export of one format -- and for each batch size, load the group's files and time
them interleaved (stats.measure_interleaved). One file or runtime failing only marks its own rows;
everything else still runs.
"""

from __future__ import annotations

import gc
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from asp_export.artifacts import BenchPair
from asp_export.bench.config import OUTPUT_FILES, ROLES, SCHEMA_VERSION, BenchConfig, BenchResult
from asp_export.bench.runtimes import (
    ORT_ALLOW_SPINNING,
    RUNTIMES,
    FixedBatchError,
    Loaded,
)
from asp_export.bench.sources import Target, resolve_targets
from asp_export.bench.stats import (
    STAT_FIELDS,
    Measurement,
    measure_interleaved,
    speedup_interval,
    summarize,
)
from asp_export.errors import ProviderError, RunDirError, UserInputError, held_logs
from asp_export.units import format_ms
from asp_export.versions import asp_version, gpu_name, machine_info, package_versions

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------
# running


def check_out_dir(out_dir: Path, force: bool) -> None:
    """Refuse to overwrite an existing benchmark unless `force`."""
    existing = [name for name in OUTPUT_FILES if (out_dir / name).exists()]
    if existing and not force:
        raise RunDirError(
            f"{out_dir} already holds a benchmark ({', '.join(existing)}); pass --force to overwrite it "
            "or choose another --out."
        )


def run_bench(config: BenchConfig) -> BenchResult:
    """Benchmark every selected (runtime, file, batch) and build the bench.json document.

    Nothing is written here (see `report.write_outputs`), but the output directory is checked first so a
    long run is not wasted on a refusal at the end.

    Example:
        >>> result = run_bench(BenchConfig(inputs=("runs/demo",), batches=(1, 32)))  # doctest: +SKIP
        >>> result.data["pairs"][0]["speedup_p50"]  # doctest: +SKIP
    """
    targets, default_out, source = resolve_targets(config)
    out_dir = Path(config.out) if config.out else default_out
    check_out_dir(out_dir, config.force)
    threads = config.effective_threads

    rows: list[dict[str, Any]] = []
    pairs: list[dict[str, Any]] = []
    # Named files of which none loads are refused with one line: their load warnings are held until a
    # row shows the input is good (or the refusal drops them).
    with held_logs() as held:
        for runtime_name in config.selected_runtimes:
            runtime = RUNTIMES[runtime_name]
            for group in _groups([t for t in targets if t.runtime == runtime_name]):
                fixed: dict[Path, int] = {}  # files that refused a batch: their fixed batch
                pending, done = list(config.batches), []
                while pending:
                    batch = pending.pop(0)
                    done.append(batch)
                    if not runtime.available():
                        error = f"{runtime.module} is not installed here; {runtime.install_hint}"
                        rows.extend(
                            _row(t, runtime_name, batch, threads, "unavailable", error=error) for t in group
                        )
                        held.release()  # not a refusal: the table says what is missing
                        continue
                    group_rows, pair = _bench_group(
                        group, runtime_name, batch, threads, config, out_dir, fixed
                    )
                    rows.extend(group_rows)
                    if any(row["status"] != "load_failed" for row in group_rows):
                        held.release()
                    if pair is not None:
                        pairs.append(pair)
                    if not pending:
                        pending = _fixed_batches_left(group, rows, fixed, done)

        _refuse_unloadable_files(targets, rows, config)
    profiles = _profiles(targets, config, threads, out_dir) if config.profile else []
    data = {
        "schema_version": SCHEMA_VERSION,
        "asp_version": asp_version(),
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": source,
        "machine": {**machine_info(), "gpu": gpu_name()},
        "versions": package_versions(),
        "settings": {
            "runtimes": config.selected_runtimes,
            "provider": config.provider,
            "batches": list(config.batches),
            "threads": threads,
            "warmup": config.policy.warmup,
            "min_iterations": config.policy.min_iterations,
            "min_time_s": config.policy.min_time_s,
            "max_time_s": config.policy.max_time_s,
            "block": config.policy.block,
            "ort_allow_spinning": ORT_ALLOW_SPINNING,
            "strict_provider": config.strict_provider,
            "tensorrt_cache": str(trt_cache_dir(out_dir)),
        },
        "rows": rows,
        "pairs": pairs,
        "profiles": profiles,
    }
    return BenchResult(data=data, out_dir=out_dir)


def trt_cache_dir(out_dir: Path) -> Path:
    """Where TensorRT keeps its engines and timing cache: inside the bench directory, so it goes with it."""
    return out_dir / "trt_cache"


def _refuse_unloadable_files(targets: list[Target], rows: list[dict[str, Any]], config: BenchConfig) -> None:
    """Named files of which none could even be loaded are bad input (exit 2), not a result table.

    When some files load, the broken ones stay load_failed rows and the others are still timed.
    """
    named = {str(Path(p)) for p in config.inputs}
    if not rows or any(row["status"] != "load_failed" for row in rows):
        return
    if any(str(row["error"]).startswith(ProviderError.__name__) for row in rows):
        return  # files fine, GPU provider refused (--strict-provider): exit 1 by check_strict_provider
    if all(str(target.path) in named for target in targets):
        first = rows[0]
        raise UserInputError(f"{first['path']} cannot be loaded: {first['error']}")


def _fixed_batches_left(
    group: list[Target], rows: list[dict[str, Any]], fixed: dict[Path, int], batches: list[int]
) -> list[int]:
    """Fixed batches of files that ran at none of the asked batches: timed there rather than not at all."""
    timed = {row["path"] for row in rows if row["status"] != "load_failed"}
    untimed = {fixed[t.path] for t in group if t.path in fixed and str(t.path) not in timed}
    extra = sorted(untimed - set(batches))
    for batch in extra:
        names = ", ".join(t.path.name for t in group if fixed.get(t.path) == batch)
        log.warning("%s: fixed batch %d, cannot run at batch %s; timing batch %d instead", names, batch,
                    ", ".join(map(str, batches)), batch)  # fmt: skip
    return extra


def _groups(targets: list[Target]) -> list[list[Target]]:
    """Files that share (format, precision) are timed together; dense before pruned."""
    groups: dict[tuple[str, str | None], list[Target]] = {}
    for target in targets:
        groups.setdefault((target.format, target.precision), []).append(target)
    order = {"dense": 0, "pruned": 1, None: 2}
    return [sorted(g, key=lambda t: order[t.role]) for g in groups.values()]


def _bench_group(
    group: list[Target],
    runtime_name: str,
    batch: int,
    threads: int,
    config: BenchConfig,
    out_dir: Path,
    fixed: dict[Path, int] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    runtime = RUNTIMES[runtime_name]
    loaded: dict[int, tuple[Loaded, float]] = {}
    rows: dict[int, dict[str, Any]] = {}
    for i, target in enumerate(group):
        start = time.perf_counter()
        try:
            model = runtime.load(
                target.path,
                batch=batch,
                threads=threads,
                provider=config.provider,
                strict=config.strict_provider,
                precision=target.precision,
                trt_cache=trt_cache_dir(out_dir),
            )
        except Exception as err:  # noqa: BLE001 - one broken file must not stop the others
            if isinstance(err, FixedBatchError) and fixed is not None:
                fixed[target.path] = err.fixed
            log.warning(
                "%s: %s could not be loaded at batch %d: %s", runtime_name, target.path, batch, _one_line(err)
            )
            rows[i] = _row(
                target,
                runtime_name,
                batch,
                threads,
                "load_failed",
                error=_one_line(err),
                provider_requested=_requested(runtime_name, config),
            )
            continue
        loaded[i] = (model, (time.perf_counter() - start) * 1000.0)

    measured = measure_interleaved({str(i): m.run for i, (m, _) in loaded.items()}, config.policy)
    for i, (model, load_ms) in loaded.items():
        m = measured[str(i)]
        rows[i] = _measured_row(group[i], runtime_name, batch, model, load_ms, m)
        _log_row(rows[i])
    loaded.clear()
    gc.collect()

    ordered = [rows[i] for i in range(len(group))]
    pair = _pair(group, ordered, {i: measured.get(str(i)) for i in range(len(group))})
    return ordered, pair


def _requested(runtime_name: str, config: BenchConfig) -> str | None:
    return config.provider if runtime_name == "onnxruntime" else None


def _measured_row(
    target: Target, runtime_name: str, batch: int, model: Loaded, load_ms: float, m: Measurement
) -> dict[str, Any]:
    if not m.ok:
        err = m.error if m.error is not None else RuntimeError("no timed runs")
        log.warning("%s: %s failed at batch %d: %s", runtime_name, target.path, batch, _one_line(err))
        row = _row(
            target,
            runtime_name,
            batch,
            model.threads,
            "run_failed",
            error=_one_line(err),
            **_provider_fields(model),
        )
        row["load_ms"] = load_ms
        return row
    row = _row(target, runtime_name, batch, model.threads, "ok", **_provider_fields(model))
    row.update(summarize(m.samples_ms, batch))
    row.update(
        first_inference_ms=m.first_inference_ms, load_ms=load_ms, capped=m.capped, peak_rss_mb=peak_rss_mb()
    )
    return row


def _provider_fields(model: Loaded) -> dict[str, Any]:
    return {
        "provider": model.provider,
        "provider_requested": model.provider_requested,
        "fallback": model.fallback,
        "provider_error": model.provider_error,
        "provider_options": model.provider_options,
    }


def _row(
    target: Target,
    runtime_name: str,
    batch: int,
    threads: int | None,
    status: str,
    *,
    error: str | None = None,
    provider: str | None = None,
    provider_requested: str | None = None,
    fallback: bool = False,
    provider_error: str | None = None,
    provider_options: dict[str, str] | None = None,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "model": target.model,
        "role": target.role,
        "format": target.format,
        "precision": target.precision,
        "runtime": runtime_name,
        "provider": provider,
        "provider_requested": provider_requested,
        "fallback": fallback,
        "provider_error": provider_error,
        "provider_options": provider_options,
        "batch": batch,
        "threads": threads,
        "status": status,
        "error": error,
        "flops": target.flops,
        "parity_failed": target.parity_failed,
        "path": str(target.path),
    }
    row.update(dict.fromkeys(STAT_FIELDS))
    return row


def _pair(
    group: list[Target], rows: list[dict[str, Any]], measured: dict[int, Measurement | None]
) -> dict[str, Any] | None:
    roles = {t.role: i for i, t in enumerate(group) if t.role in ROLES}
    if set(roles) != set(ROLES):
        return None
    d_i, p_i = roles["dense"], roles["pruned"]
    dense, pruned = rows[d_i], rows[p_i]
    pair = BenchPair(
        runtime=dense["runtime"],
        provider=dense["provider"] or pruned["provider"],
        format=dense["format"],
        precision=dense["precision"],
        batch=dense["batch"],
        dense_model=dense["model"],
        pruned_model=pruned["model"],
        dense_p50_ms=dense["p50_ms"],
        pruned_p50_ms=pruned["p50_ms"],
        dense_flops=dense["flops"],
        pruned_flops=pruned["flops"],
        parity_failed=[t.role for t in group if t.role in ROLES and t.parity_failed],
    )
    if dense["flops"] and pruned["flops"]:
        pair.flops_ratio = dense["flops"] / pruned["flops"]
    if dense["status"] != "ok" or pruned["status"] != "ok":
        pair.status = "incomplete"
        return pair.to_json()
    if dense["provider"] != pruned["provider"]:  # e.g. TensorRT built one engine but not the other
        pair.status = "provider_mismatch"
        pair.provider = f"{dense['provider']} vs {pruned['provider']}"
        return pair.to_json()
    d_m, p_m = measured.get(d_i), measured.get(p_i)
    interval = speedup_interval(d_m.block_medians_ms, p_m.block_medians_ms) if d_m and p_m else None
    if interval:
        pair.speedup_p10_blocks, pair.speedup_p90_blocks = interval
    figures = pair_math(dense["p50_ms"], pruned["p50_ms"], pair.flops_ratio, interval)
    return replace(pair, **figures).to_json()


def pair_math(
    dense_p50_ms: float,
    pruned_p50_ms: float,
    flops_ratio: float | None,
    interval: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """speedup_p50 = dense/pruned; efficiency = speedup / flops_ratio, only where FLOPs were cut;
    the verdict from the per-round speedup interval, and `slower` exactly when the verdict says so.

    Example:
        >>> pair_math(4.0, 2.0, 4.0, (1.8, 2.2))
        {'speedup_p50': 2.0, 'efficiency': 0.5, 'verdict': 'faster', 'slower': False}
    """
    speedup = dense_p50_ms / pruned_p50_ms
    efficiency = speedup / flops_ratio if flops_ratio and flops_ratio > 1.0 else None
    said = verdict(speedup, interval)
    return {"speedup_p50": speedup, "efficiency": efficiency, "verdict": said, "slower": said == "slower"}


def verdict(speedup_p50: float, interval: tuple[float, float] | None) -> str:
    """`faster` only if 90% of the interleaved rounds agree; `slower` likewise; else `within noise`.

    The one noise rule of every verdict: a pruned model asp calls faster (or slower) must really be,
    so the bar is the per-round speedup's 10th percentile above 1 (90th below 1), not the median.
    Without per-round speedups nothing can be told apart from noise.
    """
    if interval is None:
        return "within noise"
    low, high = interval
    if low > 1.0:
        return "faster"
    if high < 1.0:
        return "slower"
    return "within noise"


def _profiles(
    targets: list[Target], config: BenchConfig, threads: int, out_dir: Path
) -> list[dict[str, Any]]:
    if "onnxruntime" not in config.selected_runtimes or not RUNTIMES["onnxruntime"].available():
        return []
    from asp_export.bench.profile import profile_targets

    return profile_targets(
        [t for t in targets if t.format == "onnx"],
        batch=max(config.batches),
        threads=threads,
        provider=config.provider,
        strict=config.strict_provider,
        trt_cache=trt_cache_dir(out_dir),
    )


# ---------------------------------------------------------------------------------------------------
# machine facts


def peak_rss_mb() -> float | None:
    """Peak resident memory of THIS process so far (ru_maxrss) in MB (10^6 bytes, asp_export/units.py);
    it only grows, across all rows. None (not measured) where the standard library has no `resource`
    module (Windows): it is imported here, not at module level, so `asp bench` still runs there."""
    try:
        import resource  # Unix only
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (peak if sys.platform == "darwin" else peak * 1024) / 1e6  # bytes on macOS, KiB on Linux


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    text = f"{type(err).__name__}: {text}"
    return text if len(text) <= 300 else text[:297] + "..."


def _log_row(row: dict[str, Any]) -> None:
    if row["status"] == "ok":
        log.info(
            "%-11s %-22s %-6s %-5s %-8s b=%-3d p50 %11s  p90 %11s  n=%d%s",
            row["runtime"],
            row["provider"],
            row["model"][:6],
            row["format"],
            row["precision"] or "-",
            row["batch"],
            format_ms(row["p50_ms"]),
            format_ms(row["p90_ms"]),
            row["n_iter"],
            "  (noisy)" if row["dispersion_high"] else "",
        )
