"""One unit convention in every printed figure (asp_export/units.py): sizes in decimal MB, latencies
with enough digits that the printed numbers give back the printed ratio."""

from __future__ import annotations

import re

import pytest

from asp_export.bench.report import notes, pair_sentence
from asp_export.prune.report import render_markdown

_UNIT = {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}


def _report(size_bytes: int) -> dict:
    figures = {"accuracy": 0.9, "params": 1000, "flops": 2000, "size_bytes": size_bytes}
    return {
        "model": "m",
        "dataset": "d",
        "method": "gasl",
        "seed": 0,
        "training": {"epochs": 1, "seconds": 1.0},
        "devices": {"device": "CPU"},
        "dense": figures,
        "masked": {"accuracy": 0.9},
        "pruned": figures,
        "structure": "8",
        "elementwise_sparsity": 0.0,
        "layers": [],
    }


def printed_bytes(text: str) -> list[float]:
    return [float(v) * _UNIT[u] for v, u in re.findall(r"([\d.]+) (B|kB|MB|GB)\b", text)]


def test_report_md_sizes_are_decimal_megabytes_with_four_digits():
    text = render_markdown(_report(59_945_661))
    assert "59.95 MB" in text  # not 57.2 (MiB) nor 60.0
    assert all(v == pytest.approx(59_945_661, rel=5e-4) for v in printed_bytes(text))


@pytest.mark.parametrize(("dense", "pruned"), [(0.0041234, 0.0028431), (12.3456, 0.98765), (1234.5, 987.65)])
def test_printed_latencies_give_back_the_printed_speedup(dense, pruned):
    pair = {
        "runtime": "onnxruntime",
        "provider": "CPUExecutionProvider",
        "format": "onnx",
        "precision": "fp32",
        "batch": 1,
        "status": "ok",
        "dense_p50_ms": dense,
        "pruned_p50_ms": pruned,
        "speedup_p50": dense / pruned,
        "flops_ratio": None,
        "efficiency": None,
        "slower": False,
        "verdict": "faster",
    }
    sentence = pair_sentence(pair)
    speedup = re.search(r"([\d.]+)x faster", sentence).group(1)
    a, b = (float(v) for v in re.findall(r"p50 ([\d.]+) ms dense vs ([\d.]+) ms", sentence)[0])
    assert f"{a / b:.2f}" == speedup, sentence


def test_a_noisy_row_names_the_measure_that_crossed_its_limit():
    row = {
        "runtime": "onnxruntime",
        "model": "dense",
        "format": "onnx",
        "precision": "fp32",
        "batch": 1,
        "status": "ok",
        "provider_requested": None,
        "provider": "CPUExecutionProvider",
        "fallback": False,
        "p50_ms": 0.010,
        "p90_ms": 0.014,
        "cv": 0.02,
        "dispersion_high": True,
    }
    (line,) = notes({"rows": [row]})
    assert "p90 is 40 % above p50 (limit 25 %)" in line
    assert "cv" not in line  # a low cv must not be shown as the reason for high dispersion
