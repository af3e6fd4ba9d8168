"""Print a run directory's figures as the Markdown tables used in docs/results.md.

    python benchmarks/summarize_run.py runs/demo

Reads report.json, export/manifest.json and bench/bench.json (whichever exist);
prints only what those files hold, so the published tables are the measured ones.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from asp_export import tables
from asp_export.artifacts import BenchPair


def _load(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def _pct(x):
    return "n/a" if x is None else f"{100 * x:.2f} %"


def _two(x) -> str:
    return "-" if x is None else f"{x:.2f}"  # efficiency is null where no FLOPs were cut


_PAIR_COLUMNS = tables.columns(
    *("runtime", "format", "precision", "batch", "dense p50 ms", "pruned p50 ms", "speedup", "FLOPs ratio"),
    "efficiency",
    right=("batch", "dense p50 ms", "pruned p50 ms", "speedup", "FLOPs ratio", "efficiency"),
)


def _pair_cells(pair: BenchPair) -> tuple[str, ...]:
    """One pair's cells; a pair that was not measured (a row failed) says its status instead of figures."""
    ms = ["-" if x is None else f"{x:.3f}" for x in (pair.dense_p50_ms, pair.pruned_p50_ms)]
    speedup = pair.status if pair.speedup_p50 is None else f"{pair.speedup_p50:.2f}x"
    return (pair.runtime, pair.format, pair.precision or "", str(pair.batch), *ms, speedup,
            _two(pair.flops_ratio), _two(pair.efficiency))  # fmt: skip


def main(run: Path) -> None:
    report = _load(run / "report.json")
    manifest = _load(run / "export" / "manifest.json")
    bench = _load(run / "bench" / "bench.json")
    if report:
        dense, pruned = report["dense"], report["pruned"]
        options = report["config"]
        print(
            f"Run `{run}`: {report['model']} on {report['dataset']}, method {report['method']}, "
            f"seed {report['seed']}, λ_g {options['sparsity']['lambda_group']}, "
            f"{options['train']['epochs']} epochs + {options['finetune_epochs']} fine-tuning, "
            f"{report['training']['seconds']:.0f} s training on {report['devices']['device']}.\n"
        )
        print("| model | test accuracy | params | FLOPs | .keras size |")
        print("| --- | ---: | ---: | ---: | ---: |")
        print(
            f"| dense | {_pct(dense['accuracy'])} | {dense['params']:,} | {dense['flops']:,} | "
            f"{dense.get('size_bytes', 0):,} B |"
        )
        print(f"| dense, dead groups zeroed | {_pct(report['masked']['accuracy'])} | | | |")
        print(f"| pruned before fine-tuning | {_pct(report['surgery']['accuracy_before_finetune'])} | | | |")
        print(
            f"| pruned (final) | {_pct(pruned['accuracy'])} | {pruned['params']:,} | {pruned['flops']:,} | "
            f"{pruned.get('size_bytes', 0):,} B |"
        )
        print(
            f"\nStructure {report['structure']} (live before rounding {report.get('structure_live')}); "
            f"{dense['flops'] / pruned['flops']:.2f}x fewer FLOPs, {dense['params'] / pruned['params']:.2f}x "
            f"fewer params; element-wise sparsity {_pct(report['elementwise_sparsity'])}; surgery max |diff| "
            f"vs masked {report['surgery']['max_abs_diff_vs_masked']:.1e}.\n"
        )
    if manifest:
        print("| file | size | parity |")
        print("| --- | ---: | --- |")
        for entry in manifest["files"]:
            parity = entry["parity"]
            figure = (
                f"max rel {parity['max_rel_diff']:.1e}"
                if entry["precision"] in ("fp32", "fp16")
                else f"top-1 agreement {parity['top1_agreement']:.4f}"
            )
            print(
                f"| {entry['path']} | {entry['size_bytes']:,} B | {figure}, "
                f"{'passed' if parity['passed'] else 'FAILED'} |"
            )
        print()
    if bench:
        machine = bench.get("machine", {})
        print(f"Latency on {machine.get('cpu', '?')}, {machine.get('cpu_count', '?')} cores:\n")
        rows = [_pair_cells(BenchPair.from_json(p)) for p in bench["pairs"]]
        print(tables.to_markdown(_PAIR_COLUMNS, rows))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]))
