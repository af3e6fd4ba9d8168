"""What `asp bench` is asked to do (BenchConfig), and the fixed vocabulary of bench.json (roles, statuses)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asp_export.bench.providers import PROVIDER_CHOICES
from asp_export.bench.runtimes import RUNTIMES
from asp_export.bench.stats import TimingPolicy
from asp_export.errors import UserInputError, unknown_name_error
from asp_export.rundir import MODEL_KINDS

SCHEMA_VERSION = 1


ROLES = MODEL_KINDS  # a pair's roles are the run directory's model kinds (asp_export.rundir)


STATUSES = ("ok", "load_failed", "run_failed", "unavailable")


OUTPUT_FILES = ("bench.json", "bench.md", "bench.csv", "latency.png")


@dataclass(frozen=True)
class BenchConfig:
    """Everything `asp bench` was asked to do; the CLI builds exactly this object.

    Attributes:
        inputs: one run directory, or one or more model files (.onnx, .tflite, .keras, SavedModel dir).
        runtimes: names from RUNTIMES, or ("all",).
        provider: onnxruntime provider request: auto|tensorrt|cuda|cpu.
        batches: batch sizes to time.
        threads: intra-op threads for every runtime (default: all cores).
        policy: warm-up / iteration / time rules.
        out: output directory (default RUN_DIR/bench, or `bench/` next to the first file).
        force: overwrite an existing bench directory's files.
        profile: also write an onnxruntime per-op profile for each .onnx file (largest batch).
        strict_provider: onnxruntime must run on a GPU provider: no CPU in the list, no node on the CPU
            (`session.disable_cpu_ep_fallback`); `providers.check_strict_provider` makes any other
            outcome exit 1.
    """

    inputs: tuple[str, ...]
    runtimes: tuple[str, ...] = ("all",)
    provider: str = "auto"
    batches: tuple[int, ...] = (1, 8, 32)
    threads: int | None = None
    policy: TimingPolicy = field(default_factory=TimingPolicy)
    out: str | None = None
    force: bool = False
    profile: bool = False
    strict_provider: bool = False

    def __post_init__(self) -> None:
        if not self.inputs:
            raise UserInputError("Give a run directory or at least one model file to benchmark.")
        for name in self.runtimes:
            if name != "all" and name not in RUNTIMES:
                raise unknown_name_error("runtime", name, [*RUNTIMES, "all"])
        if self.provider not in PROVIDER_CHOICES:
            raise unknown_name_error("provider", self.provider, PROVIDER_CHOICES)
        if not self.batches or any(b < 1 for b in self.batches):
            raise UserInputError(f"Batch sizes must be positive integers, got {list(self.batches)}.")
        if self.threads is not None and self.threads < 1:
            raise UserInputError(f"--threads must be >= 1, got {self.threads}.")
        if self.strict_provider and self.provider == "cpu":
            raise UserInputError(
                "--strict-provider needs a GPU provider: use --provider auto, cuda or tensorrt."
            )

    @property
    def selected_runtimes(self) -> list[str]:
        return list(RUNTIMES) if "all" in self.runtimes else list(dict.fromkeys(self.runtimes))

    @property
    def effective_threads(self) -> int:
        return self.threads or os.cpu_count() or 1


@dataclass
class BenchResult:
    """The bench.json document plus where it was (or will be) written."""

    data: dict[str, Any]
    out_dir: Path
