"""Measure how much of a FLOPs cut becomes latency, on onnxruntime (CPU) and TFLite, at batch 1 and 32.

Two sources:

    python benchmarks/bench_latency.py [RUN_DIR]   # default runs/demo (needs `asp export` first;
                                                   # TFLite at batch 32 needs `asp export --batch dynamic`)
    python benchmarks/bench_latency.py --resnet56  # ResNet-56, inner block widths cut by surgery

The ResNet-56 variant builds `create_model("resnet56")` (random weights: latency does not depend on how
well a model is trained), kills the inner channels of every basic block (conv1 output -> bn1 -> conv2
input) beyond --keep (default 7-14-23 of 16-32-64), lets `asp_export.surgery.plan(threshold, round_to)`
find those dead channels and `surgery.apply` remove them, exports dense and pruned with `asp export`'s
library to ONNX and TFLite (fp32, dynamic batch), and benchmarks them with `asp bench`'s library. It does
this for each --round-to (default 1 and 8): round_to 1 keeps the unaligned widths 7-14-23 (2.5x fewer
FLOPs), round_to 8 keeps back channels up to 8-16-24 (2.2x fewer FLOPs) -- which shows what channel
alignment does to real speed. Run one --round-to per call to stay under a few minutes each.

Prints, per runtime and batch: dense and pruned p50, speedup, FLOPs ratio and efficiency (speedup /
FLOPs ratio; goal >= 0.8 at batch 32). Full reports land in <work dir>/bench/ (bench.md, latency.png,
per-op profiles). Takes a few minutes on 2 cores; nothing here is part of pytest.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from asp_export.bench import BenchConfig, TimingPolicy, run_bench, write_outputs  # noqa: E402
from asp_export.rundir import MODEL_KINDS  # noqa: E402

GOAL_EFFICIENCY = 0.8
STAGE_WIDTHS = (16, 32, 64)
DEFAULT_KEEP = (7, 14, 23)


def bench_dir(run_dir: Path, args: argparse.Namespace) -> dict:
    config = BenchConfig(
        inputs=(str(run_dir),),
        runtimes=("onnxruntime", "tflite"),
        provider="cpu",
        batches=tuple(args.batch),
        threads=args.threads,
        policy=TimingPolicy(warmup=args.warmup, min_iterations=args.iterations, min_time_s=args.min_time),
        out=str(run_dir / "bench"),
        force=True,
        profile=True,
    )
    result = run_bench(config)
    write_outputs(result.data, result.out_dir)
    return result.data


def print_summary(title: str, data: dict) -> None:
    print(f"\n== {title}")
    print(
        f"{'runtime':<12}{'format':<8}{'prec':<6}{'batch':>6}{'dense ms':>11}{'pruned ms':>11}{'speedup':>9}"
        f"{'FLOPs x':>9}{'eff.':>7}  verdict"
    )
    for p in data["pairs"]:
        if p["status"] != "ok":
            print(
                f"{p['runtime']:<12}{p['format']:<8}{p['precision'] or '-':<6}{p['batch']:>6}  (a row failed)"
            )
            continue
        eff = p["efficiency"]
        goal = (
            ""
            if p["batch"] < 32 or eff is None
            else ("  goal met" if eff >= GOAL_EFFICIENCY else "  below goal")
        )
        print(
            f"{p['runtime']:<12}{p['format']:<8}{p['precision'] or '-':<6}{p['batch']:>6}"
            f"{p['dense_p50_ms']:>11.3f}{p['pruned_p50_ms']:>11.3f}{p['speedup_p50']:>9.2f}"
            f"{(p['flops_ratio'] or float('nan')):>9.2f}{(eff if eff is not None else float('nan')):>7.2f}  "
            f"{'SLOWER' if p['slower'] else p['verdict']}{goal}"
        )
    for prof in data.get("profiles", []):
        if prof.get("ops"):
            top = " · ".join(f"{o['op_type']} {o['share'] * 100:.0f}%" for o in prof["ops"][:4])
            print(
                f"  profile {prof['model']} b{prof['batch']}: "
                f"{prof['total_ms_per_run']:.2f} ms/run in kernels: {top}"
            )
    failed = [r for r in data["rows"] if r["status"] != "ok"]
    for row in failed:
        print(
            f"  {row['runtime']} {row['model']} {row['format']} b{row['batch']}: "
            f"{row['status']}: {row['error']}"
        )


# ---------------------------------------------------------------------------------------------------
# ResNet-56 with inner widths cut by surgery


def zero_inner_channels(model, keep: tuple[int, int, int]) -> int:
    """Make channels keep..width of every block's conv1 output exactly dead; returns how many."""
    import numpy as np

    dead = 0
    for layer in model.layers:
        if not (layer.name.startswith("stage") and layer.name.endswith("_conv1")):
            continue
        stage = int(layer.name[len("stage")])
        drop = slice(keep[stage - 1], STAGE_WIDTHS[stage - 1])
        block = layer.name[: -len("_conv1")]
        (kernel,) = layer.get_weights()
        kernel[..., drop] = 0.0
        layer.set_weights([kernel])
        bn = model.get_layer(f"{block}_bn1")
        gamma, beta, mean, var = bn.get_weights()
        gamma[drop], beta[drop], mean[drop] = 0.0, 0.0, 0.0
        bn.set_weights([gamma, beta, mean, var])
        conv2 = model.get_layer(f"{block}_conv2")
        (kernel2,) = conv2.get_weights()
        kernel2[:, :, drop, :] = 0.0
        conv2.set_weights([kernel2])
        dead += int(np.arange(STAGE_WIDTHS[stage - 1])[drop].size)
    return dead


def build_resnet56_run(work: Path, keep: tuple[int, ...], round_to: int) -> Path:
    """dense.keras + surgically pruned pruned.keras + export/ (ONNX, TFLite fp32) in `work`."""
    import keras
    from asp_export.models import create_model

    from asp_export import surgery
    from asp_export.export import ExportOptions, export_model
    from asp_export.surgery import flops

    work.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    dense = create_model("resnet56", input_shape=(32, 32, 3), num_classes=10)
    zero_inner_channels(dense, keep)
    plan = surgery.plan(dense, threshold=1e-12, round_to=round_to)
    pruned = surgery.apply(dense, plan)
    dense_flops, pruned_flops = flops.count(dense).flops, flops.count(pruned).flops
    ratio = dense_flops / pruned_flops
    inner = {layer.filters for layer in pruned.layers if layer.name.endswith("_conv1")}
    widths = "-".join(str(w) for w in sorted(inner))
    print(
        f"resnet56 round_to {round_to}: inner widths {widths} (of 16-32-64), "
        f"FLOPs {dense_flops:,} -> {pruned_flops:,} ({ratio:.2f}x fewer)"
    )
    if ratio < 2.0:
        print("  warning: less than 2x fewer FLOPs; choose a smaller --keep", file=sys.stderr)
    dense.save(work / "dense.keras")
    pruned.save(work / "pruned.keras")
    report = {
        "schema_version": 1,
        "model": "resnet56",
        "dense": {"flops": dense_flops},
        "pruned": {"flops": pruned_flops},
        "plan": plan.to_dict(),
    }
    (work / "report.json").write_text(json.dumps(report, indent=2, default=str))
    # dynamic batch: asp export's TFLite default (batch 1) cannot be resized to batch 32
    options = ExportOptions(
        formats=("onnx", "tflite"), precisions=("fp32",), batch="dynamic", out=work / "export", force=True
    )
    for name in MODEL_KINDS:
        export_model(work / f"{name}.keras", options)
    return work


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", nargs="?", default="runs/demo", help="run directory with an export")
    parser.add_argument("--resnet56", action="store_true", help="build, prune and export ResNet-56 instead")
    parser.add_argument("--work", default="runs/bench-resnet56", help="work directory of the ResNet-56 runs")
    parser.add_argument("--keep", type=_ints, default=list(DEFAULT_KEEP), help="inner widths left alive")
    parser.add_argument("--round-to", type=_ints, default=[1, 8], help="surgery round_to values to compare")
    parser.add_argument("--batch", type=_ints, default=[1, 32])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--min-time", type=float, default=2.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    if not args.resnet56:
        run_dir = Path(args.run_dir)
        print_summary(f"{run_dir} (onnxruntime CPU, TFLite)", bench_dir(run_dir, args))
        print(f"\nreport: {run_dir / 'bench' / 'bench.md'}")
        return 0

    try:
        from asp_export.models import list_models

        import asp_export.surgery  # noqa: F401
    except ImportError as err:
        print(f"the ResNet-56 variant needs asp_export.surgery ({err}); bench a run dir.", file=sys.stderr)
        return 2
    if "resnet56" not in list_models():
        print("the ResNet-56 variant needs the resnet56 zoo model.", file=sys.stderr)
        return 2
    for round_to in args.round_to:
        work = build_resnet56_run(Path(args.work) / f"round_to_{round_to}", tuple(args.keep), round_to)
        print_summary(f"resnet56 round_to {round_to}", bench_dir(work, args))
        print(f"report: {work / 'bench' / 'bench.md'}")
    return 0


if __name__ == "__main__":
    from asp_export.errors import AspError

    try:
        sys.exit(main())
    except AspError as err:  # e.g. no export yet: one line, as the CLI would print it
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
