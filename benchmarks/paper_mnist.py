"""Set `asp sweep` results on MNIST next to the GASL paper's MNIST numbers.

    python benchmarks/paper_mnist.py chart runs/evidence/gasl-mnist-s0 --scope uniform --plot out.png
    python benchmarks/paper_mnist.py seeds runs/evidence/lenet5-flops-s0 runs/evidence/lenet5-flops-s1 ...

Reads the sweeps' comparison.json (nothing is trained here) and prints the Markdown
tables used in docs/results.md:

* ``chart``: for every element-wise target of one sweep, the paper's accuracy drop for
  GSS (= GASL) and SSL beside the drops asp measured, and what each cut removed. The
  paper's values were read off its bar chart (../shared/docs/METHOD.md), so they carry
  about +-0.02 pt of reading error.
* ``seeds``: the same grid run with several seeds, one row per (method, target): the
  structure each seed reached, the mean and spread of the accuracy drop, FLOPs removed
  and the measured onnxruntime-CPU speedup.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# accuracy drop (points) at element-wise sparsity 50..90 %, read off the authors' chart
PAPER_DROP_PT = {
    "gasl": {0.5: 0.25, 0.6: 0.23, 0.7: 0.44, 0.8: 0.51, 0.9: 0.62},
    "ssl": {0.5: 0.11, 0.6: 0.15, 0.7: 0.38, 0.8: 0.91, 0.9: 1.61},
}


def rows_by_cell(comparison: dict, scope: str | None = None) -> dict[tuple[str, float], dict]:
    """The sweep's completed rows by (method, target), for one target scope (None: the default)."""
    return {
        (row["method"], round(row["target"], 4)): row
        for row in comparison["rows"]
        if row["status"] == "ok" and row["target"] is not None and row.get("scope") == scope
    }


def markdown(comparison: dict, scope: str | None = None) -> str:
    cells = rows_by_cell(comparison, scope)
    targets = sorted({target for _, target in cells})
    lines = [
        "| element-wise sparsity | paper GSS drop | paper SSL drop | asp gasl drop | asp ssl drop "
        "| gasl: FLOPs removed, structure | ssl: FLOPs removed, structure |",
        "| ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for target in targets:
        gasl, ssl = cells.get(("gasl", target)), cells.get(("ssl", target))
        lines.append(
            f"| {100 * target:.0f} % | {_paper(target, 'gasl')} | {_paper(target, 'ssl')} | "
            f"{_drop(gasl)} | {_drop(ssl)} | {_cut(gasl)} | {_cut(ssl)} |"
        )
    return "\n".join(lines)


def _paper(target: float, method: str) -> str:
    value = PAPER_DROP_PT[method].get(target)
    return "" if value is None else f"{value:+.2f}"


def _drop(row: dict | None) -> str:
    return "" if row is None else f"{row['accuracy_drop_pt']:+.2f}"


def _cut(row: dict | None) -> str:
    if row is None:
        return ""
    return f"{100 * row['flops_reduction']:.1f} %, {row['structure']}"


def seeds_markdown(comparisons: list[dict]) -> str:
    import numpy as np

    cells: dict[tuple[str, float], list[dict]] = {}
    for comparison in comparisons:
        for key, row in rows_by_cell(comparison).items():
            cells.setdefault(key, []).append(row)
    references = ", ".join(f"{100 * c['reference']['accuracy']:.2f} %" for c in comparisons)
    lines = [
        f"References (plain training, per seed): {references}.",
        "",
        "| method | target | structure per seed | drop (pt), mean ± sd | FLOPs removed, mean | "
        "params, mean | ORT CPU speedup b32, mean |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for (method, target), rows in cells.items():
        drops = np.array([row["accuracy_drop_pt"] for row in rows])
        speedups = [row["speedup_ort_cpu_b32"] for row in rows if row.get("speedup_ort_cpu_b32")]
        speedup = f"{np.mean(speedups):.2f}x" if speedups else ""
        spread = f" ± {drops.std(ddof=1):.2f}" if len(drops) > 1 else ""
        lines.append(
            f"| {method} | {target:g} | {' / '.join(row['structure'] for row in rows)} | "
            f"{drops.mean():+.2f}{spread} (n={len(drops)}) | "
            f"{100 * np.mean([row['flops_reduction'] for row in rows]):.1f} % | "
            f"{np.mean([row['params'] for row in rows]):,.0f} | {speedup} |"
        )
    return "\n".join(lines)


def plot(comparison: dict, path: Path, scope: str | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = rows_by_cell(comparison, scope)
    figure, axis = plt.subplots(figsize=(7, 4))
    styles = {"gasl": "tab:blue", "ssl": "tab:orange"}
    for method, color in styles.items():
        paper = sorted(PAPER_DROP_PT[method].items())
        axis.plot(
            [100 * t for t, _ in paper], [d for _, d in paper], "--", color=color, label=f"paper {method}"
        )
        ours = sorted((t, row["accuracy_drop_pt"]) for (m, t), row in cells.items() if m == method)
        axis.plot([100 * t for t, _ in ours], [d for _, d in ours], "-o", color=color, label=f"asp {method}")
    axis.axhline(0.0, color="grey", linewidth=0.8)
    axis.set_xlabel("element-wise sparsity (%)")
    axis.set_ylabel("accuracy drop vs dense (points)")
    where = f", {scope} scope" if scope else ""
    axis.set_title(f"{comparison['model']} on {comparison['data']}{where}: paper (dashed) vs asp (solid)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    chart = commands.add_parser("chart", help="an element-wise sweep next to the paper's chart")
    chart.add_argument("sweep", type=Path, help="an element-wise asp sweep directory (comparison.json)")
    chart.add_argument("--scope", help="the rows of this --scopes entry (default: the unscoped rows)")
    chart.add_argument("--plot", type=Path, help="also write the comparison plot here (PNG)")
    seeds = commands.add_parser("seeds", help="one grid over several seeds: mean and spread")
    seeds.add_argument("sweeps", type=Path, nargs="+", help="sweep directories of the same grid")
    args = parser.parse_args()
    if args.command == "seeds":
        print(seeds_markdown([json.loads((d / "comparison.json").read_text()) for d in args.sweeps]))
        return
    comparison = json.loads((args.sweep / "comparison.json").read_text())
    if comparison["kind"] != "elementwise":
        parser.error(f"{args.sweep} is a {comparison['kind']} sweep; the paper's chart is element-wise.")
    print(markdown(comparison, args.scope))
    if args.plot:
        plot(comparison, args.plot, args.scope)


if __name__ == "__main__":
    main()
