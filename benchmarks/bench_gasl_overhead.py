"""Training-step time of GASL relative to plain cross-entropy, measured in one run.

    python benchmarks/bench_gasl_overhead.py [--models gasl-mnist,resnet20] [--steps 30] [--rounds 3]

For each model, the same compiled Keras model is trained for `steps` batches
with: plain CE (method none), GASL with the proximal solver (guiding term in
the loss + group soft-thresholding after every step), and GASL with the
authors' subgradient solver. The variants are interleaved round by round so
machine drift hits all of them; the median step time per variant is compared.
Target (issue 2): GASL <= 1.10x plain CE.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _time_steps(model, x, y, config, steps: int, batch: int) -> float:
    import keras

    from asp_export.prune import sparsity

    class StepTimer(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.started = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter() - self.started)

    timer = StepTimer()
    timer.times = []
    with sparsity.attach(model, config) as kernels:
        callbacks = []
        if config.solver == "proximal" and config.effective_lambda_group > 0:
            callbacks.append(sparsity.make_proximal_callback(kernels, config))
        callbacks.append(timer)  # after the prox callback, so its time is included
        model.fit(
            x,
            y,
            batch_size=batch,
            epochs=1,
            steps_per_epoch=steps,
            verbose=0,
            callbacks=callbacks,
            shuffle=False,
        )
    return statistics.median(timer.times[3:])  # the first steps include tracing


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="gasl-mnist,resnet20")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()

    import keras
    import numpy as np
    from asp_export.models import create_model, get_model_entry

    from asp_export.prune.sparsity import SparsityConfig
    from asp_export.prune.train import compile_model

    variants = {
        "plain CE": SparsityConfig(method="none"),
        "GASL proximal": SparsityConfig(method="gasl", solver="proximal"),
        "GASL subgradient": SparsityConfig(method="gasl", solver="subgradient"),
    }
    print(f"{'model':<12} {'variant':<18} {'median step ms':>15} {'vs plain CE':>12}")
    for name in args.models.split(","):
        shape = get_model_entry(name).default_input_shape
        rng = np.random.default_rng(0)
        x = rng.random((args.batch * args.steps, *shape), dtype=np.float32)
        y = rng.integers(0, 10, size=(args.batch * args.steps,))
        keras.utils.set_random_seed(0)
        timings: dict[str, list[float]] = {v: [] for v in variants}
        models = {}
        for variant in variants:
            models[variant] = create_model(name)
            compile_model(models[variant], 1e-3)
        for _ in range(args.rounds):
            for variant, config in variants.items():
                timings[variant].append(_time_steps(models[variant], x, y, config, args.steps, args.batch))
        base = statistics.median(timings["plain CE"])
        for variant in variants:
            median = statistics.median(timings[variant])
            print(f"{name:<12} {variant:<18} {1000 * median:>15.1f} {median / base:>11.2f}x")


if __name__ == "__main__":
    main()
