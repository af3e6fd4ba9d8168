"""report.json and report.md: what `asp prune` measured, in one place.

report.json is the record later stages and `asp check` read; report.md is the
same figures for people. Accuracies are fractions in [0, 1]; FLOPs are
2 x multiply-accumulates (asp_export.surgery.flops).
"""

from __future__ import annotations

from typing import Any

from asp_export import tables
from asp_export._io import write_json_atomic, write_text_atomic
from asp_export.rundir import SCHEMA_VERSION, RunDir
from asp_export.units import format_bytes


def model_figures(model, *, accuracy: float | None, path=None) -> dict[str, Any]:
    """Accuracy, params, FLOPs and file size of one model."""
    from asp_export.surgery.flops import cost

    figures = {"accuracy": None if accuracy is None else round(float(accuracy), 6), **cost(model)}
    if path is not None and path.exists():
        figures["size_bytes"] = path.stat().st_size
    return figures


def structure_string(layers: list[dict]) -> str:
    """Kept groups per regularised layer, e.g. "3-11-109" (the paper's notation)."""
    return "-".join(str(layer["groups_after"]) for layer in layers)


def build_report(
    options,
    *,
    dense: dict[str, Any],
    masked_accuracy: float,
    pruned: dict[str, Any],
    surgery: dict[str, Any] | None,
    finetuned: dict[str, Any] | None,
    layers: list[dict],
    structure_live: str,
    elementwise_sparsity: float,
    plan: dict[str, Any],
    target: dict[str, Any] | None,
    dataset: str,
    devices: dict[str, Any],
    seconds: float,
    versions: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """report.json's fields, in their order: what the run measured, then how it was made.

    The one builder for both paths of `asp prune` (prune.pipeline for the structured methods,
    prune.magnitude for TF-MOT); `extra` holds fields only one path has, placed before the run's.

    Args:
        options: the run's `PruneOptions` (model, method, seed, epochs and the whole config).
        dense, pruned: `model_figures` of the trained and the final model.
        masked_accuracy: accuracy with the cut channels zeroed, before the rebuild.
        surgery, finetuned: the rebuild's own figures and the fine-tuned accuracy, or None.
        layers: per regularised layer, groups before and after.
        structure_live: the live groups per layer before rounding (`structure_string` notation).
        elementwise_sparsity: the paper's metric on the dense model.
        plan, target: the replayable surgery plan and the target record (or None).
        dataset, devices, seconds, versions: the dataset name, devices, training time, versions.
    """
    return {
        "dense": dense,
        "masked": {"accuracy": round(masked_accuracy, 6)},
        "pruned": pruned,
        "surgery": surgery,
        "finetuned": finetuned,
        "layers": layers,
        "structure": structure_string(layers),
        "structure_live": structure_live,
        "elementwise_sparsity": round(elementwise_sparsity, 6),
        "plan": plan,
        "target": target,
        **(extra or {}),
        "model": options.model,
        "dataset": dataset,
        "method": options.sparsity.method,
        "seed": options.train.seed,
        "config": options.to_dict(),
        "versions": versions,
        "devices": devices,
        "training": {"epochs": options.train.epochs, "seconds": round(seconds, 1)},
    }


def write_report(run: RunDir, report: dict[str, Any]) -> None:
    report = {"schema_version": SCHEMA_VERSION, **report}
    write_json_atomic(run.report_json, report)
    write_text_atomic(run.report_md, render_markdown(report))


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f} %"


def _count(value: int | None) -> str:
    if value is None:
        return "n/a"
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.2f}{unit}"
    return str(value)


_MODELS_TABLE = tables.columns(
    "model", "accuracy", "params", "FLOPs", "file", right=("accuracy", "params", "FLOPs", "file")
)
_LAYERS_TABLE = tables.columns(
    "layer", "groups before", "groups after", right=("groups before", "groups after")
)


def _model_row(label: str, entry: dict[str, Any], sizes: bool = True) -> tuple[str, ...]:
    """One line of the models table; a masked or fine-tuned model has the sizes of the line above it."""
    figures = (_count(entry.get("params")), _count(entry.get("flops")), format_bytes(entry.get("size_bytes")))
    return (label, _pct(entry.get("accuracy")), *(figures if sizes else ("", "", "")))


def render_markdown(report: dict[str, Any]) -> str:
    dense, pruned, masked = report["dense"], report.get("pruned") or {}, report.get("masked") or {}
    lines = [
        f"# asp prune: {report['model']} on {report['dataset']}",
        "",
        f"Method **{report['method']}**, seed {report['seed']}, {report['training']['epochs']} epochs"
        f" ({report['training']['seconds']:.0f} s on {report['devices']['device']}).",
        "",
    ]
    rows = [
        _model_row("dense (as trained)", dense),
        _model_row("dense, dead groups zeroed", masked, sizes=False),
    ]
    if pruned:
        rows.append(_model_row("pruned (rebuilt)", pruned))
    if report.get("finetuned"):
        rows.append(_model_row("pruned, fine-tuned", report["finetuned"], sizes=False))
    lines.append(tables.to_markdown(_MODELS_TABLE, rows))
    lines += [
        "",
        f"Structure (kept groups per layer): **{report['structure']}**"
        + (f" (live before rounding: {report['structure_live']})" if report.get("structure_live") else ""),
    ]
    if pruned.get("flops") and dense.get("flops"):
        flops_ratio = dense["flops"] / pruned["flops"]
        params_ratio = dense["params"] / pruned["params"]
        lines[-1] += f"; {flops_ratio:.2f}x fewer FLOPs, {params_ratio:.2f}x fewer params."
    target = report.get("target")
    if target:
        lines.append(
            f"Target: {target['kind']} {target['requested']:g} ({target.get('meaning', '')}); "
            f"achieved {target['achieved']:.3f}{'' if target['reached'] else ' (out of reach)'}"
            + (
                f"; rounding to {target['round_to']} gave way in {', '.join(target['rounding_gave_way'])} "
                "to reach it."
                if target.get("rounding_gave_way")
                else "."
            )
        )
    lines += [
        "",
        f"Element-wise sparsity (the paper's metric, |w| <= 1e-3): {_pct(report['elementwise_sparsity'])}.",
        "",
    ]
    layers = [
        (layer["name"], str(layer["groups_before"]), str(layer["groups_after"])) for layer in report["layers"]
    ]
    lines.append(tables.to_markdown(_LAYERS_TABLE, layers))
    lines.append("")
    return "\n".join(lines)
