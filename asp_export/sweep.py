"""`asp sweep`: the (method x target) grid, resumable, and one comparison table + plot.

Why: a claim such as "GASL keeps accuracy where group lasso loses it" is only
checkable at equal cost. The sweep trains one run directory per (method, target)
with `asp prune` (same model, data, epochs, seed and surgery options for all),
plus one plain ``dense`` run (``--method none``, no pruning) that is the accuracy
every drop is measured against, then tabulates them.

Layout under ``--out``::

    sweep.json                    the grid and the pass-through prune options (checked on re-run)
    dense/                        the reference run (method none, no target)
    gasl-sparsity0.8/ ...         one `asp prune` run directory per (method, target)
    gasl-sparsity0.8-layer/ ...   ... per (method, target, scope) with ``scopes``
    comparison.json/.md/.csv/.png

Resume: a run whose report.json exists is skipped (never retrained); a run with a
config.json but no report is continued with `asp prune --resume` semantics; a
directory with neither is started afresh.

Shared training: a method's training does not depend on the target or its scope (they
only decide the cut afterwards) and is deterministic on CPU for a fixed seed, so a cell
whose options differ from a complete run's in the sweep directory only in those starts
from that run's final checkpoint (config.json records ``training_shared_with``) and runs
only the cut, evaluation and fine-tuning. A 5-target sweep trains each method once (and
l1-filter not at all: it starts from the plain reference's training), and a later sweep
into the same directory that adds targets or scopes trains nothing again.

With ``bench``, each run's ONNX export (fp32) and onnxruntime-CPU benchmark at
batch 32 are made once and reused.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from asp_export import tables
from asp_export._io import write_json_atomic, write_text_atomic
from asp_export.errors import AspError, UserInputError
from asp_export.prune.targets import KINDS, TARGET_KINDS
from asp_export.rundir import SCHEMA_VERSION, RunDir, run_lock

log = logging.getLogger(__name__)

TARGET_OPTION = {name: kind.field for name, kind in TARGET_KINDS.items()}  # kind -> flat prune option
BENCH_BATCH = 32


@dataclass(frozen=True)
class SweepOptions:
    """Everything `asp sweep` needs.

    Args:
        model, data: as for `asp prune`.
        methods: methods from `asp_export.prune.methods.METHODS` (not ``none``: that is the reference).
        targets: fractions to remove, each in (0, 1).
        out: the sweep directory.
        kind: ``sparsity`` (``--target-sparsity``), ``flops`` (``--target-flops``) or
            ``elementwise`` (``--target-elementwise``, the GASL paper's metric); magnitude
            gets ``--target-sparsity`` (its element-wise sparsity) for sparsity and
            elementwise, and fails its cells with a one-line reason for flops.
        bench: export ONNX and time dense vs pruned on onnxruntime CPU, batch 32.
        prune: flat `asp prune` options passed to every run (epochs, seed, round_to, ...).
        scopes: compare these `--target-scope`s too: one cell per (method, target, scope),
            named ``METHOD-KINDTARGET-SCOPE``; empty: each method's default scope, one cell
            per (method, target). magnitude cuts no channels, so it gets no scope.
    """

    model: str
    data: str
    methods: tuple[str, ...]
    targets: tuple[float, ...]
    out: str
    kind: str = "sparsity"
    bench: bool = False
    prune: dict[str, Any] = field(default_factory=dict)
    scopes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        from asp_export.prune.methods import METHODS

        if self.kind not in KINDS:
            raise UserInputError(f"Unknown target kind {self.kind!r}; valid: {', '.join(KINDS)}.")
        if not self.methods or not self.targets:
            raise UserInputError("Give at least one method (--methods) and one target (--targets).")
        for method in self.methods:
            if method not in METHODS or method == "none":
                valid = ", ".join(m for m in METHODS if m != "none")
                raise UserInputError(f"Unknown sweep method {method!r}; valid: {valid} (none is always run).")
        for target in self.targets:
            if not 0.0 < target < 1.0:
                raise UserInputError(
                    f"Targets are fractions to remove in (0, 1), e.g. 0.5,0.9; got {target}."
                )
        for key in ("model", "data", "out", "method", "resume_dir", "force", *TARGET_OPTION.values()):
            if key in self.prune:
                raise UserInputError(f"Sweep sets {key} itself; do not pass it as a prune option.")
        from asp_export.prune.targets import SCOPES

        for scope in self.scopes:
            if scope not in SCOPES:
                raise UserInputError(
                    f"Unknown target scope {scope!r} in --scopes; valid: {', '.join(SCOPES)}."
                )
        if self.scopes and "target_scope" in self.prune:
            raise UserInputError("Give either --target-scope (one scope) or --scopes (several), not both.")


def run_name(method: str, kind: str, target: float | None, scope: str | None = None) -> str:
    """The run directory name of one grid cell, e.g. ``gasl-sparsity0.8`` or
    ``gasl-sparsity0.8-layer``; ``dense`` for the reference."""
    if target is None:
        return "dense"
    return f"{method}-{kind}{target:g}" + (f"-{scope}" if scope else "")


def grid(options: SweepOptions) -> list[tuple[str, float | None, str | None]]:
    """(method, target, scope) per run, the dense reference first; scope None = the method's default."""
    cells: list[tuple[str, float | None, str | None]] = [("none", None, None)]
    for method in options.methods:
        scopes = options.scopes if options.scopes and method != "magnitude" else (None,)
        cells += [(method, target, scope) for target in options.targets for scope in scopes]
    return cells


def run_sweep(options: SweepOptions) -> dict[str, Any]:
    """Run (or resume) every cell of the grid, then write the comparison files.

    A failing cell is recorded (status ``failed`` with its one-line error) and the
    sweep goes on; the reference run failing stops it.

    Returns:
        The comparison dict (also written to comparison.json).
    """
    _check_targets(options)
    out = Path(options.out)
    with run_lock(out, "asp sweep"):  # a second sweep into the same --out is refused
        return _run_sweep(out, options)


def _run_sweep(out: Path, options: SweepOptions) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    _check_spec(out, options)
    statuses: dict[str, dict[str, Any]] = {}
    for method, target, scope in grid(options):
        name = run_name(method, options.kind, target, scope)
        try:
            with run_lock(out / name, "asp sweep"):  # e.g. an `asp prune --out` into this cell
                statuses[name] = _run_cell(out / name, options, method, target, scope)
        except AspError as err:
            if target is None:
                raise
            log.error("%s failed: %s", name, err)
            statuses[name] = {"status": "failed", "error": str(err)}
        if options.bench and statuses[name]["status"] in ("done", "skipped-complete"):
            try:
                with run_lock(out / name, "asp sweep"):
                    _bench_cell(out / name)
            except AspError as err:
                log.error("%s: bench failed: %s", name, err)
                statuses[name]["bench_error"] = str(err)
    comparison = compare(out, options, statuses)
    write_comparison(out, comparison)
    return comparison


def _check_targets(options: SweepOptions) -> None:
    """Refuse the sweep (exit 2) before anything trains when a cell's target is out of any
    cut's reach: each method's largest target per scope decides."""
    from asp_export.prune.options import options_from_cli
    from asp_export.prune.pipeline import check_target_reachable

    largest: dict[tuple[str, str | None], float] = {}
    for method, target, scope in grid(options)[1:]:
        if method != "magnitude" and target is not None:
            largest[(method, scope)] = max(target, largest.get((method, scope), 0.0))
    for (method, scope), target in largest.items():
        flat = {**options.prune, "model": options.model, "data": options.data, "method": method}
        flat[TARGET_OPTION[options.kind]] = target
        if scope is not None:
            flat["target_scope"] = scope
        check_target_reachable(options_from_cli({**flat, "out": options.out}))


def _check_spec(out: Path, options: SweepOptions) -> None:
    spec_path = out / "sweep.json"
    fixed = {"model": options.model, "data": options.data, "kind": options.kind, "prune": options.prune}
    if spec_path.exists():
        previous = json.loads(spec_path.read_text())
        for key, value in fixed.items():
            if previous.get(key) != json.loads(json.dumps(value)):
                raise UserInputError(
                    f"{out} holds a sweep with a different {key} ({previous.get(key)!r}); "
                    "use another --out so runs are not mixed."
                )
    write_json_atomic(spec_path, {"schema_version": SCHEMA_VERSION, **asdict(options)})


def _run_cell(
    root: Path, options: SweepOptions, method: str, target: float | None, scope: str | None = None
) -> dict[str, Any]:
    from asp_export.prune.options import options_from_cli
    from asp_export.prune.pipeline import run_prune

    run = RunDir(root)
    if run.report_json.exists():
        log.info("%s: complete, skipped", root.name)
        return {"status": "skipped-complete"}
    flat = {**options.prune, "model": options.model, "data": options.data, "out": str(root), "method": method}
    if target is not None:
        # magnitude's sparsity target is TF-MOT's element-wise final_sparsity; a FLOPs target fails (no cut)
        elementwise_magnitude = method == "magnitude" and options.kind == "elementwise"
        flat["target_sparsity" if elementwise_magnitude else TARGET_OPTION[options.kind]] = target
    if scope is not None:
        flat["target_scope"] = scope
    if run.config_json.exists():
        log.info("%s: resuming", root.name)
        run_prune(options_from_cli(flat, str(root)), resume=True)
        return {"status": "done", "resumed": True}
    prune_options = options_from_cli(flat)
    sibling = _trained_sibling(root, method, prune_options)
    if sibling is not None:
        log.info(
            "%s: training shared with %s (same training options and seed); cutting to the target",
            root.name,
            sibling.name,
        )
        _seed_from(sibling, root, prune_options)
        run_prune(options_from_cli(flat, str(root)), resume=True)
        return {"status": "done", "training_shared_with": sibling.name}
    log.info("%s: starting", root.name)
    if root.exists():  # a cell killed before its config.json: nothing in it is usable
        import shutil

        shutil.rmtree(root)
    run_prune(prune_options)
    return {"status": "done"}


# Options that only decide the cut after training (and where the run lives).
_CUT_FIELDS = ("out", "target_flops", "target_sparsity", "target_elementwise", "target_scope")
# Methods whose training is plain cross-entropy: l1-filter differs from none only in the cut.
_PLAIN_TRAINING = ("none", "l1-filter")


def _training_signature(options: dict) -> dict:
    """The part of a run's options that decides what its training produces."""
    signature = {k: v for k, v in options.items() if k not in _CUT_FIELDS}
    sparsity = dict(signature.get("sparsity") or {})
    if sparsity.get("method") in _PLAIN_TRAINING:
        sparsity["method"] = "none"
    signature["sparsity"] = sparsity
    return json.loads(json.dumps(signature))


def _trained_sibling(root: Path, method: str, prune_options) -> Path | None:
    """A complete run in the sweep directory whose training this cell would repeat.

    Training does not depend on the target or its scope (they only decide the cut
    after training), l1-filter trains exactly like the plain reference, and with the
    same seed on CPU training is deterministic, so such a run's final-epoch checkpoint
    is exactly what this cell would train. Any complete run directory beside `root`
    counts, so a later sweep that adds targets or scopes reuses the training.
    magnitude prunes while training, so it never shares.
    """
    from asp_export.rundir import read_json

    if method == "magnitude":
        return None
    wanted = _training_signature(prune_options.to_dict())
    for other in sorted(root.parent.iterdir()):
        if other == root or other.name.startswith(".") or not RunDir(other).report_json.exists():
            continue
        done = _training_signature(read_json(RunDir(other).config_json).get("options", {}))
        if wanted.get("input_range") is None:  # read from the model: the range the run recorded
            done["input_range"] = None
        if done == wanted:
            return other
    return None


def _seed_from(sibling: Path, root: Path, prune_options) -> None:
    """Start `root` from `sibling`'s finished training: its config (with this cell's
    options), state and final checkpoint; the post-training stages then run as on resume."""
    import shutil

    from asp_export.prune.train import checkpoint_files, latest_checkpoint
    from asp_export.rundir import read_json

    source, target = RunDir(sibling), RunDir(root)
    checkpoint = latest_checkpoint(source)
    if checkpoint is None:
        raise UserInputError(f"{sibling} is complete but has no checkpoint to share; delete it to retrain.")
    if root.exists():
        shutil.rmtree(root)
    target.checkpoints.mkdir(parents=True)
    for path in checkpoint_files(source, checkpoint[0]):
        if path.is_file():  # a run from before asp kept the random state has the model only
            shutil.copy2(path, target.checkpoints / path.name)
    shutil.copy2(source.state_json, target.state_json)
    config = read_json(source.config_json)
    config["options"] = prune_options.to_dict()
    config["training_shared_with"] = sibling.name
    write_json_atomic(target.config_json, config)


def _bench_cell(root: Path) -> None:
    """ONNX fp32 export + onnxruntime-CPU benchmark at batch 32, once per run."""
    from asp_export.bench import BenchConfig, run_bench, write_outputs
    from asp_export.export import ExportOptions, export_run

    run = RunDir(root)
    if not (root / "export" / "manifest.json").exists():
        export_run(root, ExportOptions(formats=("onnx",), precisions=("fp32",)), strict=False)
    if not (root / "bench" / "bench.json").exists():
        config = BenchConfig(
            inputs=(str(run.root),), runtimes=("onnxruntime",), provider="cpu", batches=(BENCH_BATCH,)
        )
        result = run_bench(config)
        write_outputs(result.data, result.out_dir)


# --- the comparison --------------------------------------------------------------------------


def _speedup(root: Path) -> float | None:
    path = root / "bench" / "bench.json"
    if not path.exists():
        return None
    for pair in json.loads(path.read_text()).get("pairs", []):
        if pair.get("batch") == BENCH_BATCH and pair.get("speedup_p50") is not None:
            return float(pair["speedup_p50"])
    return None


def _final_accuracy(report: dict) -> float:
    if report.get("finetuned"):
        return float(report["finetuned"]["accuracy"])
    return float(report["pruned"]["accuracy"])


def compare(out: Path, options: SweepOptions, statuses: dict[str, dict] | None = None) -> dict[str, Any]:
    """The comparison dict from the run directories under `out` (no training)."""
    statuses = statuses or {}
    reference_path = RunDir(out / "dense").report_json
    if not reference_path.exists():
        raise UserInputError(f"{out} has no complete dense reference run; run the sweep first.")
    reference = json.loads(reference_path.read_text())
    # The reference's *final* accuracy: with --finetune-epochs it trained as many epochs as every cell.
    ref_accuracy = _final_accuracy(reference)
    ref_flops, ref_params = reference["dense"]["flops"], reference["dense"]["params"]
    rows = []
    for method, target, scope in grid(options)[1:]:
        name = run_name(method, options.kind, target, scope)
        root = out / name
        row: dict[str, Any] = {
            "run": name,
            "method": method,
            "scope": scope,
            "target": target,
            "kind": options.kind,
        }
        report_path = RunDir(root).report_json
        if not report_path.exists():
            row.update(
                status=statuses.get(name, {}).get("status", "missing"),
                error=statuses.get(name, {}).get("error"),
            )
            rows.append(row)
            continue
        report = json.loads(report_path.read_text())
        accuracy = _final_accuracy(report)
        pruned = report["pruned"]
        reached = report.get("target") or {}
        row.update(
            status="ok",
            achieved=reached.get("achieved"),
            reached=reached.get("reached"),
            accuracy=round(accuracy, 6),
            accuracy_drop_pt=round(100 * (ref_accuracy - accuracy), 3),
            params=pruned["params"],
            flops=pruned["flops"],
            params_reduction=round(1 - pruned["params"] / ref_params, 6),
            flops_reduction=round(1 - pruned["flops"] / ref_flops, 6),
            elementwise_sparsity_as_trained=report.get("elementwise_sparsity"),
            accuracy_before_finetune=(report.get("surgery") or {}).get("accuracy_before_finetune"),
            structure=report.get("structure"),
            speedup_ort_cpu_b32=_speedup(root),
            structural_change=report.get("structural_change", True),
        )
        rows.append(row)
    return {
        "schema_version": SCHEMA_VERSION,
        "model": options.model,
        "data": options.data,
        "kind": options.kind,
        "prune_options": options.prune,
        "reference": {
            "run": "dense",
            "accuracy": ref_accuracy,
            "accuracy_as_trained": float(reference["dense"]["accuracy"]),
            "params": ref_params,
            "flops": ref_flops,
            "speedup_ort_cpu_b32": _speedup(out / "dense"),
        },
        "rows": rows,
    }


CSV_COLUMNS = (
    "run",
    "method",
    "scope",
    "kind",
    "target",
    "achieved",
    "reached",
    "accuracy",
    "accuracy_drop_pt",
    "params",
    "flops",
    "params_reduction",
    "flops_reduction",
    "accuracy_before_finetune",
    "elementwise_sparsity_as_trained",
    "structure",
    "speedup_ort_cpu_b32",
    "status",
)


def _label(row: dict) -> str:
    """A row's method, with its target scope when the sweep compares scopes."""
    return f"{row['method']} ({row['scope']})" if row.get("scope") else row["method"]


#: What an unstructured method's figures mean (magnitude: TF-MOT zeroes single weights).
UNSTRUCTURED_NOTE = (
    "element-wise: its 'reached' is the share of weights set to exactly zero; nothing is removed "
    "(same params, same FLOPs, no speedup)"
)


def series_label(rows: list[dict]) -> str:
    """The legend entry of one method's rows; says so when the method changed no structure."""
    label = _label(rows[0])
    if any(row.get("structural_change") is False for row in rows):
        return f"{label} (zeros only: nothing removed)"
    return label


def render_csv(comparison: dict) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in comparison["rows"]:
        writer.writerow({k: row.get(k) for k in CSV_COLUMNS})
    return buffer.getvalue()


_TABLE = tables.columns(
    *("method", "target", "reached", "accuracy", "drop (pt)", "params", "FLOPs removed", "structure"),
    "ORT CPU speedup b32",
    right=("target", "reached", "accuracy", "drop (pt)", "params", "FLOPs removed", "ORT CPU speedup b32"),
)


def render_markdown(comparison: dict) -> str:
    ref = comparison["reference"]
    lines = [
        f"# asp sweep: {comparison['model']} on {comparison['data']}",
        "",
        f"Reference (plain training, no pruning, same epochs incl. fine-tuning): accuracy "
        f"{100 * ref['accuracy']:.2f} %, "
        f"{ref['params']:,} params, {ref['flops']:,} FLOPs. "
        f"{TARGET_KINDS[comparison['kind']].sweep_text}; drops are in points vs the reference.",
        "",
    ]
    rows = []
    for row in comparison["rows"]:
        if row["status"] != "ok":
            rows.append(
                (_label(row), f"{row['target']:g}", row["status"], "", "", "", "", row.get("error") or "", "")
            )
            continue
        speedup = "" if row["speedup_ort_cpu_b32"] is None else f"{row['speedup_ort_cpu_b32']:.2f}x"
        achieved = "" if row["achieved"] is None else f"{row['achieved']:.3f}"
        mark = " †" if row.get("structural_change") is False else ""
        rows.append(
            (
                f"{_label(row)}{mark}",
                f"{row['target']:g}",
                achieved,
                f"{100 * row['accuracy']:.2f} %",
                f"{row['accuracy_drop_pt']:+.2f}",
                f"{row['params']:,}",
                f"{100 * row['flops_reduction']:.1f} %",
                row["structure"],
                speedup,
            )
        )
    lines.append(tables.to_markdown(_TABLE, rows))
    if any(row.get("structural_change") is False for row in comparison["rows"]):
        lines += ["", f"† {UNSTRUCTURED_NOTE}."]
    lines.append("")
    return "\n".join(lines)


# x axes of the comparison plot: the sweep's own target measure, then FLOPs (the cost that matters)
_AXES = {
    "flops": ("flops_reduction", "FLOPs removed (%)"),
    "sparsity": ("params_reduction", "params removed (%)"),
    "elementwise": ("achieved", "element-wise sparsity reached (%)"),
}


def plot(comparison: dict, path: Path) -> None:
    """Accuracy drop (pt) against the target measure reached and, unless that already is
    FLOPs, against FLOPs removed: one line per method (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from asp_export._io import atomic_path

    axes_spec = [_AXES[comparison["kind"]]]
    if comparison["kind"] != "flops":
        axes_spec.append(_AXES["flops"])
    figure, axes = plt.subplots(1, len(axes_spec), figsize=(6 * len(axes_spec), 4), squeeze=False)
    rows = [row for row in comparison["rows"] if row["status"] == "ok"]
    methods = sorted({_label(row) for row in rows})
    for axis, (measure, label) in zip(axes[0], axes_spec, strict=True):
        for method in methods:
            mine = [row for row in rows if _label(row) == method]
            points = sorted(
                (100 * row[measure], row["accuracy_drop_pt"]) for row in mine if row.get(measure) is not None
            )
            axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=series_label(mine))
        axis.axhline(0.0, color="grey", linewidth=0.8)
        axis.set_xlabel(label)
        axis.set_ylabel("accuracy drop vs dense (points)")
        if methods:
            axis.legend()
    figure.suptitle(f"{comparison['model']} on {comparison['data']}")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    plt.close(figure)


def write_comparison(out: Path, comparison: dict) -> list[Path]:
    """comparison.json/.md/.csv/.png under `out`, each written atomically."""
    paths = [out / f"comparison.{ext}" for ext in ("json", "md", "csv", "png")]
    write_json_atomic(paths[0], comparison)
    write_text_atomic(paths[1], render_markdown(comparison))
    write_text_atomic(paths[2], render_csv(comparison))
    plot(comparison, paths[3])
    return paths
