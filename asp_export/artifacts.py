"""Typed records of the run directory's JSON artifacts, shared by their writer and their readers.

Standard library only (asp check reads them on a bare CI runner). A record's fields are the JSON keys in
the order they are written, so `to_json()` is the artifact's JSON object unchanged. So far: one dense/pruned
pair of bench/bench.json (written by asp_export.bench.run; read by asp check and
benchmarks/summarize_run.py). docs/bench.md describes each field.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class BenchPair:
    """One entry of bench.json's "pairs": the dense and the pruned file timed together at one batch."""

    runtime: str
    provider: str | None
    format: str
    precision: str | None
    batch: int
    dense_model: str
    pruned_model: str
    status: str = "ok"  # ok | incomplete (a row failed) | provider_mismatch
    dense_p50_ms: float | None = None
    pruned_p50_ms: float | None = None
    speedup_p50: float | None = None  # dense p50 / pruned p50
    speedup_p10_blocks: float | None = None
    speedup_p90_blocks: float | None = None
    dense_flops: int | None = None
    pruned_flops: int | None = None
    flops_ratio: float | None = None
    efficiency: float | None = None  # speedup / flops_ratio, only where FLOPs were cut
    slower: bool | None = None
    verdict: str | None = None  # faster | slower | within noise
    # roles whose file failed export parity: the speedup compares a file that computes something else
    parity_failed: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BenchPair:
        """A pair read back; keys it does not know are ignored, missing optional ones take their default.

        Values are not validated here: `asp check` validates the figures it gates (check/metrics.py).
        """
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def id(self) -> str:
        """runtime/provider/format[/precision]/bN: the pair's name in `asp check` metrics and baselines."""
        return pair_id(self.to_json())


def pair_id(pair: dict[str, Any]) -> str:
    """The id of a pair as read from JSON (any field may be missing or odd in a hostile file).

    Precision is part of the id when bench records it: TFLite fp32/fp16/int8 pairs share runtime,
    provider, format and batch.
    """
    keys = (
        ("runtime", "provider", "format", "precision")
        if pair.get("precision")
        else ("runtime", "provider", "format")
    )
    return "/".join(str(pair.get(k) or "-") for k in keys) + f"/b{pair.get('batch', '?')}"
