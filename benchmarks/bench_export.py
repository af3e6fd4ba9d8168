"""Export time per format and file size dense vs pruned, against the params ratio.

Exports a run directory's dense and pruned models to every FORMATS row at every precision the
row supports (into a temporary directory, so the run's own export/ is untouched), through the
same `export_run` the CLI uses, and prints one row per (format, precision):

    format  precision  dense_KB  pruned_KB  size_ratio  params_ratio  dense_s  pruned_s  parity

size_ratio = pruned / dense file size; params_ratio = pruned / dense parameter count. For float
formats the two should be close (a file is mostly weights); quantized files carry a fixed overhead
that weighs more in a small model. dense_s / pruned_s are conversion + write seconds per file
(parity excluded). Not part of pytest.

    python benchmarks/bench_export.py runs/demo [--parity-samples 256] [--keep DIR]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", default="runs/demo", help="run directory (default runs/demo)")
    parser.add_argument("--parity-samples", type=int, default=256)
    parser.add_argument("--calibration-samples", type=int, default=200)
    parser.add_argument("--keep", type=Path, help="write the files here instead of a temporary directory")
    args = parser.parse_args(argv)

    from asp_export.export import FORMATS, ExportOptions, export_run

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    with tempfile.TemporaryDirectory(prefix="bench_export_") as tmp:
        out = args.keep or Path(tmp) / "export"
        options = ExportOptions(
            formats=tuple(FORMATS),
            precisions=("fp32", "fp16", "int8", "dynamic"),
            out=out,
            parity_samples=args.parity_samples,
            calibration_samples=args.calibration_samples,
            force=True,
        )
        started = time.perf_counter()
        result = export_run(args.run_dir, options, strict=False)
        wall = time.perf_counter() - started

    rows = {(e["format"], e["precision"], e["model"]): e for e in result.entries}
    print(f"run: {args.run_dir}   data: {result.manifest['data']}   total wall time: {wall:.1f} s")
    header = (
        "format",
        "precision",
        "dense_KB",
        "pruned_KB",
        "size_ratio",
        "params_ratio",
        "dense_s",
        "pruned_s",
        "parity",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for fmt in FORMATS.values():
        for precision in fmt.precisions:
            dense, pruned = rows.get((fmt.key, precision, "dense")), rows.get((fmt.key, precision, "pruned"))
            if dense is None and pruned is None:
                continue
            cells = [fmt.key, precision]
            cells += [f"{e['size_bytes'] / 1024:.1f}" if e else "-" for e in (dense, pruned)]
            if dense and pruned:
                cells += [
                    f"{pruned['size_bytes'] / dense['size_bytes']:.3f}",
                    f"{pruned['params'] / dense['params']:.3f}",
                ]
            else:
                cells += ["-", "-"]
            cells += [f"{e['export_seconds']:.2f}" if e else "-" for e in (dense, pruned)]
            cells.append("ok" if all(e["parity"]["passed"] for e in (dense, pruned) if e) else "FAILED")
            print("| " + " | ".join(cells) + " |")
    for failure in result.failures:
        print(f"conversion failed: {failure['error']}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
