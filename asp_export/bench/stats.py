"""Timing statistics for `asp bench`: the loop that decides how long to measure, and the numbers it reports.

Pure Python + numpy, no runtime imports, so every rule here is testable with a fake clock.

Why these rules:
- Warm-up first: the first inference pays for lazy allocation, kernel selection and (TensorRT) engine
  builds; it is reported separately as `first_inference_ms`, never mixed into the steady-state numbers.
- Stop only when BOTH a minimum count and a minimum measured time are reached: a count alone gives
  too few samples on a fast model (timer noise), a time alone gives too few on a slow one. A wall-clock
  cap (`max_time_s` per model) keeps a pathological model from running forever.
- Dense and pruned run interleaved in short blocks (A B A B ...): thermal throttling, a noisy
  neighbour or a frequency change then hits both models equally, and each pair of blocks gives one
  drift-free speedup sample (`block_speedups`).
- p50 is the headline: latency distributions are skewed by interruptions, the median is not.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

# The timing figures of one bench row, in report order (bench.json rows, bench.csv columns).
STAT_FIELDS = (
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "mean_ms",
    "std_ms",
    "min_ms",
    "cv",
    "throughput",
    "n_iter",
    "n_outliers",
    "dispersion_high",
    "capped",
    "first_inference_ms",
    "load_ms",
    "peak_rss_mb",
)

#: Relative spread (p90 - p50) / p50 above which a row is flagged as noisy.
DISPERSION_SPREAD = 0.25
#: Coefficient of variation (std / mean) above which a row is flagged as noisy.
DISPERSION_CV = 0.30


@dataclass(frozen=True)
class TimingPolicy:
    """How long to measure one model (or one interleaved group of models).

    Attributes:
        warmup: untimed calls before measuring (the first one is timed as first-inference).
        min_iterations: timed calls each model must reach.
        min_time_s: measured seconds each model must accumulate (sum of its timed calls).
        max_time_s: wall-clock cap per model; the group stops after `max_time_s * n_models`.
        block: consecutive calls of one model before switching to the next (the A or B in ABAB).
    """

    warmup: int = 10
    min_iterations: int = 50
    min_time_s: float = 1.0
    max_time_s: float = 30.0
    block: int = 5

    def __post_init__(self) -> None:
        if self.warmup < 1:
            raise ValueError(f"warmup must be >= 1 (the first call is timed separately), got {self.warmup}")
        if self.min_iterations < 1:
            raise ValueError(f"min_iterations must be >= 1, got {self.min_iterations}")
        if self.min_time_s < 0:
            raise ValueError(f"min_time_s must be >= 0, got {self.min_time_s}")
        if self.max_time_s <= 0:
            raise ValueError(f"max_time_s must be > 0, got {self.max_time_s}")
        if self.block < 1:
            raise ValueError(f"block must be >= 1, got {self.block}")


@dataclass
class Measurement:
    """What the loop measured for one model. Times in milliseconds."""

    first_inference_ms: float | None = None
    samples_ms: list[float] = field(default_factory=list)
    block_medians_ms: list[float] = field(default_factory=list)
    error: BaseException | None = None
    capped: bool = False  # stopped by max_time_s before min_iterations/min_time were met

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.samples_ms)


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between order statistics (numpy default)."""
    if len(samples) == 0:
        raise ValueError("percentile of an empty sample")
    return float(np.percentile(np.asarray(samples, dtype=np.float64), q))


def summarize(samples_ms: Sequence[float], batch: int) -> dict[str, float | int | bool]:
    """Latency statistics of one model at one batch size.

    Percentiles and min use every sample. Mean, std and cv use the samples inside Tukey's far fences
    (`Q1 - 3 IQR .. Q3 + 3 IQR`, at least 10% of the median wide): one 15 ms preemption among 2000
    calls of 0.02 ms would otherwise make the mean and the coefficient of variation describe the
    scheduler, not the model. The dropped
    samples are counted in `n_outliers`; p99 still shows them.

    Args:
        samples_ms: steady-state latencies of single calls, in milliseconds.
        batch: samples per call, for throughput.

    Returns:
        `p50_ms, p90_ms, p99_ms, mean_ms, std_ms (population), min_ms, cv, throughput, n_iter, n_outliers,
        dispersion_high`. `throughput` is samples per second at the median latency:
        `batch * 1000 / p50_ms` (one stream, one call at a time).

    Example:
        >>> summarize([1.0, 2.0, 3.0, 4.0], batch=2)["throughput"]
        800.0
    """
    if len(samples_ms) == 0:
        raise ValueError("no samples to summarize")
    arr = np.asarray(samples_ms, dtype=np.float64)
    p50, p90, p99 = (float(v) for v in np.percentile(arr, [50, 90, 99]))
    kept = clip_outliers(arr)
    mean = float(kept.mean())
    std = float(kept.std())
    cv = std / mean if mean > 0 else 0.0
    return {
        "p50_ms": p50,
        "p90_ms": p90,
        "p99_ms": p99,
        "mean_ms": mean,
        "std_ms": std,
        "min_ms": float(arr.min()),
        "cv": cv,
        "throughput": batch * 1000.0 / p50 if p50 > 0 else float("inf"),
        "n_iter": int(arr.size),
        "n_outliers": int(arr.size - kept.size),
        "dispersion_high": is_dispersion_high(p50, p90, cv),
    }


def clip_outliers(samples: np.ndarray, k: float = 3.0) -> np.ndarray:
    """Samples inside Tukey's fences `[Q1 - k IQR, Q3 + k IQR]` (k=3: 'far out' points only).

    The fence distance is at least 10% of the median: on a 20 us model the IQR can be a couple of timer
    ticks, and ordinary jitter must not count as an outlier.
    """
    q1, q50, q3 = np.percentile(samples, [25, 50, 75])
    reach = max(k * (q3 - q1), 0.1 * q50)
    kept = samples[(samples >= q1 - reach) & (samples <= q3 + reach)]
    return kept if kept.size else samples


def is_dispersion_high(p50: float, p90: float, cv: float) -> bool:
    """True when the distribution is too wide to trust small differences (see module constants)."""
    return dispersion_reason(p50, p90, cv) is not None


def dispersion_reason(p50: float, p90: float, cv: float) -> str | None:
    """The measure(s) that crossed their limit, in words; None when the row is not noisy.

    Example:
        >>> dispersion_reason(1.0, 1.4, 0.02)
        'p90 is 40 % above p50 (limit 25 %)'
    """
    spread = (p90 - p50) / p50 if p50 > 0 else 0.0
    reasons = []
    if spread > DISPERSION_SPREAD:
        reasons.append(f"p90 is {100 * spread:.0f} % above p50 (limit {100 * DISPERSION_SPREAD:.0f} %)")
    if cv > DISPERSION_CV:
        reasons.append(f"cv {cv:.2f} after outlier clipping (limit {DISPERSION_CV:.2f})")
    return "; ".join(reasons) or None


def speedup_interval(
    dense_blocks: Sequence[float], pruned_blocks: Sequence[float]
) -> tuple[float, float] | None:
    """10th and 90th percentile of per-round speedups (dense block median / pruned block median).

    Each ABAB round measures both models within a short window, so its ratio is free of slow drift;
    the spread of those ratios says how sure we are that the pruned model is really faster.
    """
    n = min(len(dense_blocks), len(pruned_blocks))
    if n == 0:
        return None
    ratios = [d / p for d, p in zip(dense_blocks[:n], pruned_blocks[:n], strict=True) if p > 0]
    if not ratios:
        return None
    return percentile(ratios, 10), percentile(ratios, 90)


def _timed_call(fn: Callable[[], object], clock: Callable[[], float]) -> float:
    start = clock()
    fn()
    return (clock() - start) * 1000.0


def measure_interleaved(
    fns: Mapping[str, Callable[[], object]],
    policy: TimingPolicy,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Measurement]:
    """Warm up each callable, then time them in round-robin blocks until every one is done.

    A model is done when it has `policy.min_iterations` timed calls AND `policy.min_time_s` seconds
    of them; all models keep running until all are done (the interleaving stays symmetric), or until
    the wall-clock cap `policy.max_time_s * len(fns)` is hit. A callable that raises is dropped and
    its `Measurement.error` set; the others carry on.

    Args:
        fns: name -> zero-argument callable doing one complete inference (output ready on return).
        policy: counts and times.
        clock: seconds, monotonic; injectable for tests.

    Returns:
        name -> Measurement, in the order of `fns`.

    Example:
        >>> policy = TimingPolicy(warmup=1, min_iterations=3, min_time_s=0)
        >>> len(measure_interleaved({"a": lambda: None}, policy)["a"].samples_ms) >= 3
        True
    """
    results = {name: Measurement() for name in fns}
    active = dict(fns)

    for name, fn in list(active.items()):
        try:
            results[name].first_inference_ms = _timed_call(fn, clock)
            for _ in range(policy.warmup - 1):
                fn()
        except Exception as err:  # noqa: BLE001 - a failing model must not stop the others
            results[name].error = err
            del active[name]

    def done(name: str) -> bool:
        samples = results[name].samples_ms
        return len(samples) >= policy.min_iterations and sum(samples) / 1000.0 >= policy.min_time_s

    cap_s = policy.max_time_s * max(len(active), 1)
    start = clock()
    while active:
        for name, fn in list(active.items()):
            try:
                block = [_timed_call(fn, clock) for _ in range(policy.block)]
            except Exception as err:  # noqa: BLE001
                results[name].error = err
                del active[name]
                continue
            results[name].samples_ms.extend(block)
            results[name].block_medians_ms.append(float(np.median(block)))
        if all(done(name) for name in active):
            break
        if clock() - start >= cap_s:
            for name in active:
                results[name].capped = not done(name)
            break
    return results
