"""Latency benchmarking of exported models on the runtimes users deploy on.

`asp bench` measures what really happens to a pruned model on onnxruntime, TFLite (LiteRT) and
TensorFlow, and says how much of the FLOPs reduction turned into time. This package root imports no
runtime: `asp bench` on ONNX or TFLite files must run where TensorFlow is not installed.

    from asp_export.bench import BenchConfig, run_bench, write_outputs
    result = run_bench(BenchConfig(inputs=("runs/demo",), batches=(1, 32)))
    write_outputs(result.data, result.out_dir)
"""

from __future__ import annotations

from asp_export.bench.config import BenchConfig, BenchResult
from asp_export.bench.report import write_outputs
from asp_export.bench.run import run_bench
from asp_export.bench.stats import TimingPolicy

__all__ = ["BenchConfig", "BenchResult", "TimingPolicy", "run_bench", "write_outputs"]
