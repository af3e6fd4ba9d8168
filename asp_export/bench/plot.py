"""latency.png: p50 bars with p90/p99 whiskers, one panel per runtime/provider, grouped by batch.

Matplotlib with the Agg backend (no display needed); the y axis is logarithmic because batch 1 and
batch 32 differ by an order of magnitude.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from asp_export._io import atomic_path


def plot_latency(data: dict[str, Any], path: str | Path) -> Path:
    """Draw the ok rows of a bench document into a PNG at `path` (atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in data["rows"] if r["status"] == "ok"]
    panels = list(dict.fromkeys((r["runtime"], r["provider"]) for r in rows)) or [
        ("no successful rows", None)
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(max(5.0, 4.5 * len(panels)), 4.2), squeeze=False)
    for ax, (runtime, provider) in zip(axes[0], panels, strict=True):
        panel = [r for r in rows if (r["runtime"], r["provider"]) == (runtime, provider)]
        batches = sorted({r["batch"] for r in panel})
        series = list(dict.fromkeys(_series(r) for r in panel))
        width = 0.8 / max(len(series), 1)
        for s_i, name in enumerate(series):
            xs, p50, up90, p99 = [], [], [], []
            for b_i, batch in enumerate(batches):
                match = [r for r in panel if r["batch"] == batch and _series(r) == name]
                if match:
                    r = match[0]
                    xs.append(b_i + (s_i - (len(series) - 1) / 2) * width)
                    p50.append(r["p50_ms"])
                    up90.append(max(r["p90_ms"] - r["p50_ms"], 0.0))
                    p99.append(r["p99_ms"])
            ax.bar(xs, p50, width=width * 0.9, label=name)
            ax.errorbar(xs, p50, yerr=[[0.0] * len(xs), up90], fmt="none", ecolor="black", capsize=3, lw=1)
            ax.scatter(xs, p99, marker="_", s=120, color="black", linewidths=1.5, zorder=3)
        ax.set_xticks(range(len(batches)), [f"batch {b}" for b in batches])
        ax.set_yscale("log")
        ax.set_ylabel("latency per call (ms)")
        ax.set_title(f"{runtime}\n{provider or ''}", fontsize=9)
        if series:
            ax.legend(fontsize=7, title="bar p50 · whisker p90 · tick p99", title_fontsize=7)
        ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def _series(row: dict[str, Any]) -> str:
    return " ".join(str(p) for p in (row["model"], row["format"], row["precision"]) if p)
