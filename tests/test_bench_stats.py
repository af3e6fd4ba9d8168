"""Timing statistics of `asp bench` on known samples and with a fake clock (no runtime involved)."""

from __future__ import annotations

import numpy as np
import pytest

from asp_export.bench.report import pair_sentence, to_markdown
from asp_export.bench.run import pair_math, verdict
from asp_export.bench.stats import (
    TimingPolicy,
    clip_outliers,
    is_dispersion_high,
    measure_interleaved,
    percentile,
    speedup_interval,
    summarize,
)


class FakeClock:
    """A clock that only moves when a fake model 'runs'."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def model(self, seconds: float):
        def run() -> None:
            self.now += seconds

        return run


def test_percentiles_interpolate_linearly_between_order_statistics():
    samples = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    assert percentile(samples, 50) == pytest.approx(5.5)
    assert percentile(samples, 90) == pytest.approx(9.1)
    assert percentile(samples, 0) == 1.0 and percentile(samples, 100) == 10.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_summarize_reports_every_statistic_and_median_throughput():
    stats = summarize([1.0, 2.0, 3.0, 4.0], batch=8)
    assert stats["p50_ms"] == pytest.approx(2.5)
    assert stats["p90_ms"] == pytest.approx(3.7)
    assert stats["p99_ms"] == pytest.approx(3.97)
    assert stats["mean_ms"] == pytest.approx(2.5)
    assert stats["std_ms"] == pytest.approx(np.std([1, 2, 3, 4]))
    assert stats["min_ms"] == 1.0
    assert stats["n_iter"] == 4
    assert stats["throughput"] == pytest.approx(8 * 1000 / 2.5)  # samples/s at the median latency


def test_one_preemption_does_not_move_mean_or_cv_but_shows_in_p99():
    samples = [1.0] * 99 + [50.0]
    stats = summarize(samples, batch=1)
    assert stats["n_outliers"] == 1
    assert stats["mean_ms"] == pytest.approx(1.0)
    assert stats["cv"] == pytest.approx(0.0)
    assert stats["p99_ms"] > 1.4  # the interruption is still visible in the tail
    assert clip_outliers(np.array([1.0, 1.05, 0.97, 1.02])).size == 4  # ordinary jitter is kept


def test_dispersion_flag_uses_p90_spread_or_cv():
    assert not is_dispersion_high(p50=10.0, p90=12.0, cv=0.1)
    assert is_dispersion_high(p50=10.0, p90=13.0, cv=0.1)  # (p90 - p50) / p50 = 0.3 > 0.25
    assert is_dispersion_high(p50=10.0, p90=11.0, cv=0.5)
    assert summarize([1.0] * 50 + [2.0] * 50, batch=1)["dispersion_high"]


def test_loop_runs_until_both_min_count_and_min_time_are_reached():
    clock = FakeClock()
    policy = TimingPolicy(warmup=2, min_iterations=5, min_time_s=0.2, block=5)
    result = measure_interleaved({"m": clock.model(0.010)}, policy, clock=clock)["m"]
    assert result.ok and not result.capped
    assert len(result.samples_ms) == 20  # 5 would satisfy the count; 0.2 s / 10 ms needs 20
    assert result.first_inference_ms == pytest.approx(10.0)
    assert all(s == pytest.approx(10.0) for s in result.samples_ms)

    clock = FakeClock()
    policy = TimingPolicy(warmup=1, min_iterations=30, min_time_s=0.01, block=5)
    result = measure_interleaved({"m": clock.model(0.010)}, policy, clock=clock)["m"]
    assert len(result.samples_ms) == 30  # the time is met after 1 call; the count decides


def test_interleaved_models_get_equal_samples_in_abab_blocks():
    clock = FakeClock()
    calls: list[str] = []

    def traced(name: str, seconds: float):
        step = clock.model(seconds)

        def run() -> None:
            calls.append(name)
            step()

        return run

    policy = TimingPolicy(warmup=1, min_iterations=4, min_time_s=0.05, block=2)
    result = measure_interleaved(
        {"dense": traced("A", 0.010), "pruned": traced("B", 0.001)}, policy, clock=clock
    )
    # the fast model needs 50 x 1 ms; the slow one keeps running alongside so drift hits both
    assert len(result["pruned"].samples_ms) == len(result["dense"].samples_ms) == 50
    assert calls[:2] == ["A", "B"]  # warm-up, one each
    assert calls[2:10] == ["A", "A", "B", "B", "A", "A", "B", "B"]
    assert speedup_interval(
        result["dense"].block_medians_ms, result["pruned"].block_medians_ms
    ) == pytest.approx((10.0, 10.0))


def test_time_cap_stops_a_slow_model_and_marks_it_capped():
    clock = FakeClock()
    policy = TimingPolicy(warmup=1, min_iterations=1000, min_time_s=0.0, max_time_s=3.0, block=1)
    result = measure_interleaved({"slow": clock.model(1.0)}, policy, clock=clock)["slow"]
    assert result.capped
    assert len(result.samples_ms) == 3


def test_a_model_that_raises_is_dropped_and_the_other_keeps_running():
    clock = FakeClock()

    def broken() -> None:
        raise RuntimeError("kernel exploded")

    policy = TimingPolicy(warmup=1, min_iterations=3, min_time_s=0.0, block=1)
    result = measure_interleaved({"bad": broken, "good": clock.model(0.001)}, policy, clock=clock)
    assert isinstance(result["bad"].error, RuntimeError) and not result["bad"].ok
    assert result["good"].ok and len(result["good"].samples_ms) == 3


def test_policy_rejects_nonsense():
    with pytest.raises(ValueError, match="min_iterations"):
        TimingPolicy(min_iterations=0)
    with pytest.raises(ValueError, match="warmup"):
        TimingPolicy(warmup=0)


def test_pair_math_speedup_efficiency_and_slower_flag():
    assert pair_math(dense_p50_ms=6.0, pruned_p50_ms=2.0, flops_ratio=4.0, interval=(2.8, 3.2)) == {
        "speedup_p50": pytest.approx(3.0),
        "efficiency": pytest.approx(0.75),
        "verdict": "faster",
        "slower": False,
    }
    slower = pair_math(dense_p50_ms=1.0, pruned_p50_ms=1.25, flops_ratio=2.1, interval=(0.7, 0.9))
    assert slower["slower"] and slower["speedup_p50"] == pytest.approx(0.8)
    assert pair_math(2.0, 1.0, None)["efficiency"] is None


def test_efficiency_only_where_flops_were_cut():
    # lenet5 that pruned nothing: dense and pruned FLOPs equal, so no share of a cut "became time"
    same = pair_math(dense_p50_ms=0.704, pruned_p50_ms=0.683, flops_ratio=1.0, interval=(1.01, 1.05))
    assert same["efficiency"] is None and same["verdict"] == "faster"
    assert pair_math(1.0, 1.0, 0.5)["efficiency"] is None  # more FLOPs: no cut either
    sentence = pair_sentence({**_pair(1.0), **same})
    assert "no FLOPs were cut" in sentence and "became time" not in sentence


def test_one_noise_rule_for_every_verdict_and_sentence():
    # 0.704 vs 0.705 ms, rounds on both sides of 1: within noise, never "PRUNED IS SLOWER"
    tiny = pair_math(dense_p50_ms=0.704, pruned_p50_ms=0.705, flops_ratio=2.0, interval=(0.97, 1.03))
    assert tiny["verdict"] == "within noise" and tiny["slower"] is False
    sentence = pair_sentence({**_pair(2.0), **tiny})
    assert "SLOWER" not in sentence and "within noise" in sentence and "faster" not in sentence
    markdown = to_markdown(_bench_data([{**_pair(2.0), **tiny}]))
    assert "**SLOWER**" not in markdown
    assert pair_math(0.704, 0.705, 2.0)["verdict"] == "within noise"  # no rounds: nothing to tell apart
    really = pair_math(dense_p50_ms=0.5, pruned_p50_ms=0.8, flops_ratio=2.0, interval=(0.55, 0.7))
    assert "PRUNED IS SLOWER" in pair_sentence({**_pair(2.0), **really})
    assert "**SLOWER**" in to_markdown(_bench_data([{**_pair(2.0), **really}]))


def _pair(flops_ratio: float) -> dict:
    return {
        "runtime": "onnxruntime",
        "provider": "CPUExecutionProvider",
        "format": "onnx",
        "precision": "fp32",
        "batch": 1,
        "status": "ok",
        "dense_p50_ms": 0.704,
        "pruned_p50_ms": 0.705,
        "flops_ratio": flops_ratio,
        "parity_failed": [],
    }


def _bench_data(pairs: list) -> dict:
    machine = {"cpu": "test", "cpu_count": 2}
    settings = {"threads": 1, "provider": "cpu", "warmup": 1, "min_iterations": 3, "min_time_s": 0}
    settings.update(max_time_s=1, block=1)
    return {
        "source": "t",
        "created_utc": "now",
        "machine": machine,
        "versions": {},
        "settings": settings,
        "pairs": pairs,
        "rows": [],
    }


def test_verdict_claims_faster_only_when_nine_rounds_in_ten_agree():
    assert verdict(1.5, (1.2, 1.8)) == "faster"
    assert verdict(1.05, (0.9, 1.2)) == "within noise"
    assert verdict(0.8, (0.7, 0.9)) == "slower"
    assert speedup_interval([], [1.0]) is None
