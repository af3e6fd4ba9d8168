"""Surgery speed: plan + apply time on ResNet50 relative to building the model, same run.

The issue's target is plan + apply <= 3x the time Keras needs to build the model
(`keras.applications.ResNet50(weights=None)`): surgery must never be the slow step of
`asp prune`. Each step is timed `--repeats` times and the median is used; the first build
(TensorFlow start-up) is discarded. 30% of every group's removable channels are killed
first so apply really rebuilds a smaller model. Also checks the result against the masked
original. Not part of pytest.

    python benchmarks/bench_surgery.py [--model ResNet50] [--size 224] [--repeats 3]
    python benchmarks/bench_surgery.py --round-to-sweep [--zoo resnet56] [--fraction 0.3]

The second form measures what `round_to` buys at run time: it kills `--fraction` of each
group of a zoo model, plans with round_to in 1, 2, 4, 8, 16, exports dense and each small
model to ONNX (tf2onnx, opset 17) and times onnxruntime CPU (2 threads, batch 32, rounds
interleaved so machine load hits every variant alike), printing FLOPs and p50 latency.

Prints one line per step and the ratio, e.g.

    build_s 1.40  plan_s 0.20  apply_s 1.60  ratio 1.29 (target <= 3.0)
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _timed(fn, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ResNet50", help="a keras.applications constructor name")
    parser.add_argument("--size", type=int, default=224, help="input height = width")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fraction", type=float, default=0.3, help="fraction of channels killed per group")
    parser.add_argument("--round-to-sweep", action="store_true", help="measure latency vs round_to instead")
    parser.add_argument("--zoo", default="resnet56", help="zoo model for --round-to-sweep")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    if args.round_to_sweep:
        return _round_to_sweep(args)

    import keras
    import numpy as np

    from asp_export import surgery

    ctor = getattr(keras.applications, args.model)

    def build():
        return ctor(weights=None, input_shape=(args.size, args.size, 3))

    build()  # TensorFlow start-up, first-call tracing: not part of either measurement
    build_s, model = _timed(build, args.repeats)
    killed = surgery.make_dead_channels(model, args.fraction, seed=0)
    plan_s, plan = _timed(lambda: surgery.plan(model, threshold=1e-6), args.repeats)
    apply_s, small = _timed(lambda: surgery.apply(model, plan), args.repeats)

    x = np.random.default_rng(0).normal(size=(1, args.size, args.size, 3)).astype("float32")
    want = surgery.mask(model, plan)(x).numpy()
    rel = float(np.abs(small(x).numpy() - want).max() / np.abs(want).max())
    ratio = (plan_s + apply_s) / build_s
    print(f"model {args.model} {args.size}x{args.size}: {plan.summary()}")
    print(
        f"killed {killed} channels, dropped {plan.dropped}; params {model.count_params():,} -> "
        f"{small.count_params():,}; max rel diff vs masked {rel:.2e}"
    )
    print(
        f"build_s {build_s:.2f}  plan_s {plan_s:.2f}  apply_s {apply_s:.2f}  "
        f"ratio {ratio:.2f} (target <= 3.0)"
    )
    return 0 if ratio <= 3.0 and rel <= 1e-5 else 1


def _widths_of(model) -> list[int]:
    return [layer.filters for layer in model.layers if hasattr(layer, "filters")]


def _typical_widths(layers: list[dict]) -> str:
    """The most common kept width for each original width, e.g. '11-22-45' for 16-32-64."""
    from collections import Counter

    by_before: dict[int, Counter] = {}
    for row in layers:
        by_before.setdefault(row["before"], Counter())[row["after"]] += 1
    return "-".join(str(by_before[b].most_common(1)[0][0]) for b in sorted(by_before))


def _round_to_sweep(args) -> int:
    import tempfile
    from pathlib import Path

    import numpy as np
    import onnxruntime as ort
    import tensorflow as tf
    import tf2onnx
    from asp_export.models import create_model

    from asp_export import surgery
    from asp_export.surgery.flops import count

    model = create_model(args.zoo)
    surgery.make_dead_channels(model, args.fraction, seed=0)
    variants = {"dense": model}
    widths = {"dense": _typical_widths([{"before": w, "after": w} for w in _widths_of(model)])}
    for n in (1, 2, 4, 8, 16):
        p = surgery.plan(model, threshold=1e-6, round_to=n)
        variants[f"round_to={n}"] = surgery.apply(model, p)
        conv_widths = set(_widths_of(model))
        widths[f"round_to={n}"] = _typical_widths([r for r in p.layers if r["before"] in conv_widths])
    shape = tuple(model.inputs[0].shape[1:])
    x = np.random.default_rng(0).normal(size=(args.batch, *shape)).astype("float32")
    sessions = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, m in variants.items():
            path = Path(tmp) / f"{name.replace('=', '')}.onnx"
            tf2onnx.convert.from_keras(
                m,
                input_signature=[tf.TensorSpec((None, *shape), tf.float32)],
                opset=17,
                output_path=str(path),
            )
            opts = ort.SessionOptions()
            opts.intra_op_num_threads, opts.inter_op_num_threads = 2, 1
            sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            feed = {sess.get_inputs()[0].name: x}
            for _ in range(5):
                sess.run(None, feed)
            sessions[name] = (sess, feed)
    times = {name: [] for name in sessions}
    for _ in range(args.rounds):
        for name, (sess, feed) in sessions.items():
            start = time.perf_counter()
            for _ in range(3):
                sess.run(None, feed)
            times[name].append((time.perf_counter() - start) / 3 * 1e3)
    dense_flops = count(model).flops
    dense_ms = statistics.median(times["dense"])
    print(
        f"{args.zoo}, {args.fraction:.0%} of each group dead, onnxruntime CPU 2 threads, batch {args.batch}"
    )
    print(f"{'variant':<12} {'widths':<12} {'MFLOPs':>8} {'flops_x':>8} {'p50_ms':>8} {'speedup':>8}")
    for name, m in variants.items():
        flops = count(m).flops
        ms = statistics.median(times[name])
        print(
            f"{name:<12} {widths[name]:<12} {flops / 1e6:>8.1f} {dense_flops / flops:>8.2f} {ms:>8.2f} "
            f"{dense_ms / ms:>8.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
