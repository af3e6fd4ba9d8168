"""Which target ranking (``--target-scope``) keeps the most accuracy? Measured on the validation split.

    python benchmarks/compare_scopes.py --epochs 1 --targets 0.5,0.7,0.9 --out /tmp/scopes

Trains each method once (``asp prune`` without a target: its dense.keras), then cuts that one
trained model to every (target, ranking) with `asp_export.prune.targets.reach` (the run's defaults:
threshold 1e-3, round_to 8, min_channels 1) and prints, as Markdown, the validation accuracy
of the rebuilt model before any fine-tuning. The test split is not looked at. Rankings:

* the scopes of `asp_export.prune.targets.SCOPES` (``global`` = score per weight, ``global-raw``,
  ``layer``, ``uniform``);
* ``global-cost``: the raw score divided by the params one channel of its layer costs
  (its own weights and those of the next layer reading it), measured by rebuilding the model
  without one channel of that layer.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _val_accuracy(model, dataset, batch_size: int = 256) -> float:
    import numpy as np

    correct = total = 0
    for x, y in dataset.val(batch_size):
        predicted = np.argmax(np.asarray(model(x, training=False)), axis=-1)
        correct += int(np.sum(predicted == np.asarray(y)))
        total += int(np.asarray(y).shape[0])
    return correct / max(total, 1)


def _channel_costs(model, kernels) -> dict[str, float]:
    """Params removed by cutting one channel of each candidate layer (no rounding)."""
    from asp_export import surgery
    from asp_export.prune.targets import snapshot, zero_channels

    originals = snapshot(kernels)
    base = surgery.apply(model, surgery.plan(model, threshold=1e-3)).count_params()
    costs = {}
    for grouped in kernels:
        zero_channels(kernels, {grouped.name: [0]}, originals)
        small = surgery.apply(model, surgery.plan(model, threshold=1e-3))
        costs[grouped.name] = float(max(base - small.count_params(), 1))
    zero_channels(kernels, {}, originals)
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="gasl-mnist")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--methods", default="gasl,ssl")
    parser.add_argument("--targets", default="0.5,0.7,0.9")
    parser.add_argument("--kind", default="sparsity", choices=("sparsity", "flops"))
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="/tmp/compare-scopes")
    args = parser.parse_args()

    import keras

    from asp_export import surgery
    from asp_export.prune.inputs import load_data
    from asp_export.prune.options import options_from_cli
    from asp_export.prune.pipeline import run_prune
    from asp_export.prune.select import channel_scores, score_divisors
    from asp_export.prune.sparsity import grouped_kernels
    from asp_export.prune.targets import SCOPES, Target, reach

    targets = [float(t) for t in args.targets.split(",")]
    rankings = [*SCOPES, "global-cost"]
    results = {}
    for method in args.methods.split(","):
        out = Path(args.out) / method
        flat = {"model": args.model, "data": args.data, "method": method, "epochs": args.epochs}
        options = options_from_cli({**flat, "seed": args.seed, "out": str(out)})
        if not (out / "report.json").exists():
            run_prune(options, force=True)
        dense = keras.saving.load_model(out / "dense.keras", safe_mode=True, compile=False)
        dataset = load_data(options, "zoo")
        results[(method, "dense")] = _val_accuracy(dense, dataset)
        for value in targets:
            for ranking in rankings:
                work = keras.models.clone_model(dense)
                work.set_weights(dense.get_weights())
                config = options.sparsity
                kernels = grouped_kernels(work, exclude=config.exclude)
                scores = channel_scores(work, config, kernels)
                divisors = score_divisors(config, kernels)
                scope = ranking
                if ranking == "global-cost":
                    divisors, scope = _channel_costs(work, kernels), "global"
                result = reach(
                    work,
                    kernels,
                    scores,
                    Target(args.kind, value),
                    scope=scope,
                    threshold=options.surgery.threshold,
                    round_to=options.surgery.round_to,
                    min_channels=options.surgery.min_channels,
                    divisors=divisors,
                )
                pruned = surgery.apply(result.model, result.plan)
                widths = "-".join(str(layer["after"]) for layer in result.plan.layers[:-1])
                results[(method, value, ranking)] = (_val_accuracy(pruned, dataset), widths)
    print(f"val accuracy, {args.model} on {args.data}, {args.epochs} epoch(s), seed {args.seed}, {args.kind}")
    print("| method | dense | target | " + " | ".join(rankings) + " |")
    print("| --- | ---: | ---: | " + " | ".join("---" for _ in rankings) + " |")
    for method in args.methods.split(","):
        for value in targets:
            cells = [
                f"{100 * results[(method, value, r)][0]:.1f} % ({results[(method, value, r)][1]})"
                for r in rankings
            ]
            print(
                f"| {method} | {100 * results[(method, 'dense')]:.1f} % | {value:g} | "
                + " | ".join(cells)
                + " |"
            )
    Path(args.out, "scopes.json").write_text(
        json.dumps({" ".join(map(str, k)): v for k, v in results.items()}, indent=1)
    )


if __name__ == "__main__":
    main()
