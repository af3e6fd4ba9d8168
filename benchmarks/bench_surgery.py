"""Surgery speed: plan + apply time on ResNet50 relative to building the model, same run.

The issue's target is plan + apply <= 3x the time Keras needs to build the model
(`keras.applications.ResNet50(weights=None)`): surgery must never be the slow step of
`asp prune`. Each step is timed `--repeats` times and the median is used; the first build
(TensorFlow start-up) is discarded. 30% of every group's removable channels are killed
first so apply really rebuilds a smaller model. Also checks the result against the masked
original. Not part of pytest.

    python benchmarks/bench_surgery.py [--model ResNet50] [--size 224] [--repeats 3]

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
    args = parser.parse_args(argv)

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
    print(f"killed {killed} channels, dropped {plan.dropped}; params {model.count_params():,} -> "
          f"{small.count_params():,}; max rel diff vs masked {rel:.2e}")
    print(f"build_s {build_s:.2f}  plan_s {plan_s:.2f}  apply_s {apply_s:.2f}  ratio {ratio:.2f} (target <= 3.0)")
    return 0 if ratio <= 3.0 and rel <= 1e-5 else 1


if __name__ == "__main__":
    raise SystemExit(main())
