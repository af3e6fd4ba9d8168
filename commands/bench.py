"""`asp bench`: latency of dense vs pruned exports on onnxruntime, TFLite and TensorFlow."""

from __future__ import annotations

import click

from asp_export.bench.config import BenchConfig

# The tables only: these modules import no runtime (onnxruntime, LiteRT, TensorFlow load inside runners).
from asp_export.bench.providers import PROVIDER_CHOICES
from asp_export.bench.runtimes import RUNTIME_CHOICES
from asp_export.bench.stats import TimingPolicy
from asp_export.errors import UserInputError


def _parse_batches(value: str) -> tuple[int, ...]:
    try:
        batches = tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise UserInputError(
            f"--batch takes comma-separated positive integers like 1,8,32, got {value!r}."
        ) from None
    if not batches or any(b < 1 for b in batches):
        raise UserInputError(f"--batch takes comma-separated positive integers like 1,8,32, got {value!r}.")
    return batches


@click.command("bench")
@click.argument("inputs", nargs=-1, required=True, metavar="RUN_DIR|FILE...")
@click.option(
    "--runtime",
    "runtimes",
    multiple=True,
    type=click.Choice(RUNTIME_CHOICES),
    default=BenchConfig.runtimes,
    show_default=True,
    help="Runtime(s) to time; repeatable.",
)
@click.option(
    "--provider",
    type=click.Choice(PROVIDER_CHOICES),
    default=BenchConfig.provider,
    show_default=True,
    help="onnxruntime provider; auto tries TensorRT -> CUDA -> CPU. The one that ran is recorded.",
)
@click.option(
    "--batch",
    "batch",
    default=",".join(map(str, BenchConfig.batches)),
    show_default=True,
    help="Comma-separated batch sizes.",
)
@click.option(
    "--threads", type=int, default=None, help="Intra-op threads for every runtime [default: all cores]."
)
@click.option(
    "--warmup", type=int, default=TimingPolicy.warmup, show_default=True, help="Untimed runs before timing."
)
@click.option(
    "--iterations",
    type=int,
    default=TimingPolicy.min_iterations,
    show_default=True,
    help="Minimum timed runs per model.",
)
@click.option(
    "--min-time",
    type=float,
    default=TimingPolicy.min_time_s,
    show_default=True,
    help="Minimum timed seconds per model.",
)
@click.option(
    "--max-time",
    type=float,
    default=TimingPolicy.max_time_s,
    show_default=True,
    help="Wall-clock cap per model, seconds.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Output directory [default: RUN_DIR/bench, or bench/ next to the first file].",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(("table", "json", "md", "csv")),
    default="table",
    show_default=True,
    help="What to print; all files are always written.",
)
@click.option(
    "--profile",
    is_flag=True,
    help="Also write an onnxruntime per-op-type profile per .onnx file, with nodes counted per provider.",
)
@click.option(
    "--strict-provider",
    is_flag=True,
    help="onnxruntime must run on a GPU provider, no node on the CPU (for CI); else exit 1.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing benchmark in --out.")
def command(
    inputs,
    runtimes,
    provider,
    batch,
    threads,
    warmup,
    iterations,
    min_time,
    max_time,
    out,
    fmt,
    profile,
    strict_provider,
    force,
) -> None:
    """Time dense vs pruned exports of RUN_DIR (or model files) and report the real speedup.

    \b
    asp bench runs/demo --batch 1,32
    asp bench runs/demo --runtime onnxruntime --provider cuda --profile
    asp bench runs/demo --runtime onnxruntime --provider cuda --strict-provider
    asp bench dense.onnx pruned.onnx --format json
    """
    from asp_export.bench import BenchConfig, TimingPolicy, run_bench, write_outputs
    from asp_export.bench.sources import run_dir_of
    from asp_export.rundir import run_lock

    try:
        policy = TimingPolicy(
            warmup=warmup, min_iterations=iterations, min_time_s=min_time, max_time_s=max_time
        )
    except ValueError as err:
        raise UserInputError(f"Invalid timing option: {err}.") from None
    config = BenchConfig(
        inputs=tuple(inputs),
        runtimes=tuple(runtimes),
        provider=provider,
        batches=_parse_batches(batch),
        threads=threads,
        policy=policy,
        out=out,
        force=force,
        profile=profile,
        strict_provider=strict_provider,
    )
    with run_lock(run_dir_of(config), "asp bench"):  # one writer per run directory
        result = run_bench(config)
        written = write_outputs(result.data, result.out_dir)
    from asp_export.bench.report import to_terminal

    click.echo(to_terminal(result.data, fmt))
    if fmt == "table":
        click.echo(f"Wrote {', '.join(sorted(written))} to {result.out_dir}")
    from asp_export.bench.providers import check_strict_provider

    check_strict_provider(result.data)
