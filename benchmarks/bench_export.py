"""Export time per format and file size dense vs pruned, against the params ratio.

Exports a run directory's dense and pruned models to every FORMATS row at every precision the
row supports (into a temporary directory, so the run's own export/ is untouched), through the
same `export_run` the CLI uses, and prints one row per (format, precision):

    format  precision  dense_KB  pruned_KB  size_ratio  params_ratio  dense_s  pruned_s  parity

size_ratio = pruned / dense file size; params_ratio = pruned / dense parameter count. For float
formats the two should be close (a file is mostly weights); quantized files carry a fixed overhead
that weighs more in a small model. dense_s / pruned_s are conversion + write seconds per file
(parity excluded). Finally, an independent check loads `<model>.onnx` with onnxruntime and
`<model>.keras` with Keras (no asp code in between) and compares them at 1e-4. Not part of pytest.

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
        independent = _independent_check(Path(args.run_dir), out, result.manifest["data"])

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
    for line in independent:
        print(line)
    return 0 if result.ok else 1


def _independent_check(run_dir: Path, out: Path, data: str) -> list[str]:
    """Load each <model>.onnx with onnxruntime and <model>.keras with Keras, nothing from asp in between."""
    import keras
    import numpy as np
    import onnxruntime as ort

    from asp_export.rundir import MODEL_KINDS, RunDir, read_json

    lines = []
    for kind in MODEL_KINDS:
        onnx_path, keras_path = out / f"{kind}.onnx", RunDir(run_dir).model_path(kind)
        if not (onnx_path.is_file() and keras_path.is_file()):
            continue
        model = keras.saving.load_model(keras_path, compile=False)
        if data.startswith("test split"):
            from asp_export.data import load_dataset

            x = load_dataset(**read_json(RunDir(run_dir).config_json)["data"]).sample(256, split="test")
        else:
            x = np.random.default_rng(0).uniform(size=(256, *model.input_shape[1:])).astype(np.float32)
        session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        got = session.run(None, {"input": x})[0]
        want = np.asarray(model(x, training=False))
        diff = float(np.abs(got - want).max())
        verdict = (
            "agrees to 1e-4" if np.allclose(got, want, atol=1e-4, rtol=1e-4) else "DISAGREES beyond 1e-4"
        )
        lines.append(
            f"independent check {kind}.onnx (onnxruntime {session.get_providers()[0]}) "
            f"vs {kind}.keras (Keras) on {len(x)} samples: max_abs_diff {diff:.3g}, {verdict}"
        )
    return lines


if __name__ == "__main__":
    sys.exit(main())
