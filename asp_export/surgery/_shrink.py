"""`asp shrink` as a library call (plan + apply + report), and dead channels for tests and benchmarks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from asp_export.errors import UserInputError
from asp_export.surgery._apply import apply
from asp_export.surgery._plan import Plan, plan
from asp_export.surgery.flops import cost
from asp_export.surgery.graph import build_graph
from asp_export.surgery.layers import bn_parts

__all__ = ["make_dead_channels", "report_path", "shrink"]


# ================================================================================== shrink
def shrink(
    path: str | Path,
    out: str | Path | None,
    *,
    threshold: float,
    relative: bool = False,
    round_to: int = 1,
    min_channels: int = 1,
    exclude=(),
    dry_run: bool = False,
    force: bool = False,
) -> tuple[Plan, dict]:
    """Load a ``.keras`` model safely, plan, and (unless `dry_run`) write the smaller model.

    Writes ``out`` and ``<out stem>.report.json`` next to it, both atomically.

    Returns:
        ``(plan, report)``; report has ``before``/``after`` params and FLOPs.

    Raises:
        ModelLoadError: the file is not a loadable, safe ``.keras`` model.
        UserInputError: ``out`` exists without `force`, or bad options.
    """
    from asp_export._io import atomic_path, write_json_atomic
    from asp_export.keras_io import load_keras_model

    out_path = Path(out) if out is not None else None
    if not dry_run:
        if out_path is None:
            raise UserInputError("--out is required unless --dry-run is given.")
        if out_path.suffix != ".keras":
            raise UserInputError(f"--out must end with .keras; received {str(out_path)!r}.")
        if out_path.exists() and not force:
            raise UserInputError(f"{out_path} already exists; pass --force to overwrite it.")
    model = load_keras_model(path)
    p = plan(
        model, threshold, relative=relative, round_to=round_to, min_channels=min_channels, exclude=exclude
    )
    report = {
        "schema_version": 1,
        "source": str(path),
        "out": None,
        "before": cost(model, ("params", "flops")),
        "after": None,
        "plan": p.to_dict(),
    }
    if dry_run:
        return p, report
    small = apply(model, p)
    report["out"] = str(out_path)
    report["after"] = cost(small, ("params", "flops"))
    with atomic_path(out_path) as tmp:
        small.save(tmp)
    write_json_atomic(report_path(out_path), report)
    return p, report


def report_path(out: str | Path) -> Path:
    """Where `shrink` writes its report: ``SMALL.report.json`` next to ``SMALL.keras``."""
    out = Path(out)
    return out.with_name(out.stem + ".report.json")


# ========================================================================= test support
def make_dead_channels(model, fraction: float = 0.3, *, seed: int = 0, randomize_bn: bool = True):
    """Kill a random `fraction` of each group's removable channels in place; returns the count.

    For tests and benchmarks (a freshly initialised model has no dead channels): BN
    statistics are first randomised (so BN is not a no-op), then for each chosen channel
    every producing kernel slice and bias is zeroed and the beta of every BN on it is set so
    the BN outputs exactly zero. `plan(model, threshold=1e-6)` then finds these channels.
    """
    rng = np.random.default_rng(seed)
    g = build_graph(model, warn=False)
    if randomize_bn:
        for rec in g.flat.layers.values():
            if rec.class_name == "BatchNormalization" and rec.obj is not None:
                w = [np.array(x) for x in rec.obj.get_weights()]
                for i, x in enumerate(w):
                    w[i] = (
                        rng.uniform(0.5, 1.5, x.shape)
                        if i in (0, len(w) - 1)
                        else rng.normal(0, 0.1, x.shape)
                    ).astype(x.dtype)
                rec.obj.set_weights(w)
                rec._weights = None
    dead = np.zeros(g.n_comp, dtype=bool)
    for grp in g.groups:  # per group, never all of it, so min_channels=1 keeps nothing back
        free = grp.comps[~g.comp_frozen[grp.comps]]
        k = min(int(round(fraction * free.size)), free.size - 1)
        if k > 0:
            dead[rng.choice(free, size=k, replace=False)] = True
    for rec in g.flat.layers.values():
        kind = g.kinds.get(rec.name)
        if kind not in ("producer", "depthwise", "channelwise") or not rec.calls or rec.obj is None:
            continue
        w = rec.weights()
        if not w:
            continue
        out_ref = g.outs_of[(rec.name, 0)][0]
        drop = np.nonzero(dead[g.comp[g.ids(out_ref)]])[0]
        if not drop.size:
            continue
        h = rec.handler()
        if kind == "channelwise":
            if rec.class_name != "BatchNormalization":
                continue
            cfg = rec.config
            gi, bi, mi, vi = bn_parts(cfg, w)
            w = [np.array(x) for x in w]
            gamma = w[gi][drop] if gi is not None else 1.0
            if bi is None:
                w[mi][drop] = 0.0
            else:
                w[bi][drop] = gamma * w[mi][drop] / np.sqrt(w[vi][drop] + float(cfg.get("epsilon", 1e-3)))
        else:
            w = h.zero_out(rec.config, w, drop)
        rec.obj.set_weights(w)
    return int(dead.sum())
