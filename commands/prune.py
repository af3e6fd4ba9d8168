"""`asp prune`: train with GASL, rebuild the network without its dead filters, write a run dir."""

from __future__ import annotations

import dataclasses

import click
from click.core import ParameterSource

from asp_export.input_range import INPUT_RANGES
from asp_export.prune.methods import METHODS
from asp_export.prune.options import PruneOptions, SurgeryConfig
from asp_export.prune.sparsity import SOLVERS, WEIGHTINGS, SparsityConfig
from asp_export.prune.targets import SCOPES
from asp_export.prune.train import STRATEGIES, TrainConfig


def _text(value) -> str:
    """A default as the help writes it: 1e-3 rather than 0.001, 0.1 as is."""
    if isinstance(value, float) and 0 < abs(value) < 0.1:
        mantissa, exponent = f"{value:e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return str(value)


def _default(config: type, name: str) -> str:
    """The help's ``  [default: X]``, read from the dataclass field, so it cannot drift from the code."""
    (value,) = (f.default for f in dataclasses.fields(config) if f.name == name)
    assert value is not dataclasses.MISSING, f"{config.__name__}.{name} has no plain default"
    return f"  [default: {_text(value)}]"


def _input_shape(ctx, param, value):
    if value is None:
        return None
    try:
        shape = tuple(int(part) for part in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected H,W,C such as 28,28,1, got {value!r}") from None
    if len(shape) != 3 or min(shape) < 1:
        raise click.BadParameter(f"expected three positive sizes H,W,C, got {value!r}")
    return shape


@click.command("prune")
@click.option(
    "--model",
    "model",
    default="gasl-mnist",
    show_default=True,
    help="Zoo model name (see `asp models`) or a .keras file (loaded in safe mode).",
)
@click.option(
    "--data",
    default=PruneOptions.data,
    show_default=True,
    help="digits, mnist, fashion-mnist, cifar10, cifar100, folder:PATH or npz:PATH.",
)
@click.option(
    "--data-dir", type=click.Path(file_okay=True), help="Folder holding the dataset's official files."
)
@click.option("--input-shape", callback=_input_shape, help="H,W,C the model is built for (zoo models).")
@click.option(
    "--input-range",
    type=click.Choice(list(INPUT_RANGES)),
    help="Pixel range the model expects.  [default: read from the model (a leading Rescaling(1/255) "
    "or keras.applications preprocessing means 0-255), else 0-1]",
)
@click.option("--out", type=click.Path(), help="Run directory to write.  [default: runs/MODEL-DATA]")
@click.option("--force", is_flag=True, help="Replace an existing run directory once the new run is complete.")
@click.option(
    "--resume",
    "resume_dir",
    type=click.Path(),
    help="Continue the killed run in this directory, with its own options (others given are refused).",
)
@click.option(
    "--method",
    type=click.Choice(METHODS),
    help=f"{SparsityConfig.method} (default), ssl (lambda_var=0), none, l1-filter, slimming (BN models) "
    "or magnitude (TF-MOT, unstructured); docs/evidence.md.",
)
@click.option(
    "--target-flops",
    type=float,
    help="Fraction of the dense FLOPs to REMOVE (0.8 keeps at most 20 %); picks the cut to reach it.",
)
@click.option(
    "--target-sparsity",
    type=float,
    help="Fraction of the dense params to REMOVE (magnitude: element-wise weight sparsity).",
)
@click.option(
    "--target-elementwise",
    type=float,
    help="The paper's element-wise sparsity to reach: mean over pruned layers of the share of |w| <= 1e-3.",
)
@click.option(
    "--target-scope",
    type=click.Choice(SCOPES),
    help="How a target ranks channels: global (score per weight, comparable across layers), global-raw "
    "(raw scores), layer (divided by the layer's largest) or uniform (same share of every layer).  "
    "[default: per method; docs/evidence.md]",
)
@click.option(
    "--lambda-group", type=float, help="Group-lasso weight." + _default(SparsityConfig, "lambda_group")
)
@click.option(
    "--lambda-var",
    type=float,
    help="Guiding (1/variance) term weight." + _default(SparsityConfig, "lambda_var"),
)
@click.option(
    "--solver",
    type=click.Choice(SOLVERS),
    help="How group lasso is applied." + _default(SparsityConfig, "solver"),
)
@click.option(
    "--group-weighting",
    type=click.Choice(WEIGHTINGS),
    help="none: the authors' unweighted group lasso; sqrt: weight each layer by sqrt(group size)."
    + _default(SparsityConfig, "group_weighting"),
)
@click.option("--include-classifier", is_flag=True, default=None, help="Also regularise the output layer.")
@click.option(
    "--exclude",
    multiple=True,
    help="Conv/Dense layer never regularised or pruned (repeatable); other names are refused.",
)
@click.option(
    "--threshold",
    type=float,
    help="A group is dead when its L2 norm is <= this." + _default(SurgeryConfig, "threshold"),
)
@click.option(
    "--round-to",
    type=int,
    help="Round kept channels up to a multiple of N (faster on real runtimes)."
    + _default(SurgeryConfig, "round_to"),
)
@click.option("--epochs", type=int, help="Training epochs, >= 1." + _default(TrainConfig, "epochs"))
@click.option("--batch-size", type=int, help="Global batch size." + _default(TrainConfig, "batch_size"))
@click.option(
    "--lr",
    "learning_rate",
    type=float,
    help="Adam learning rate." + _default(TrainConfig, "learning_rate"),
)
@click.option("--steps-per-epoch", type=int, help="Batches per epoch (default: one pass over the data).")
@click.option(
    "--seed",
    type=int,
    help="Random seed; same seed on CPU gives the same report." + _default(TrainConfig, "seed"),
)
@click.option(
    "--val-fraction",
    type=float,
    help="Share of train held out for validation." + _default(PruneOptions, "val_fraction"),
)
@click.option("--augment", is_flag=True, default=None, help="CIFAR-style crop+flip augmentation.")
@click.option(
    "--finetune-epochs",
    type=int,
    help="Fine-tune the pruned model for N epochs." + _default(PruneOptions, "finetune_epochs"),
)
@click.option("--finetune-lr", type=float, help="Fine-tuning learning rate.  [default: lr/10]")
@click.option("--mixed-precision", is_flag=True, default=None, help="Train in mixed float16 (GPU).")
@click.option(
    "--strategy",
    type=click.Choice(STRATEGIES),
    help="tf.distribute strategy." + _default(TrainConfig, "strategy"),
)
def command(**options):
    """Train a model with attention-guided group sparsity, then rebuild it without its dead filters.

    \b
    Writes RUN_DIR/config.json, dense.keras, pruned.keras, report.json, report.md,
    checkpoints/ (resume with --resume RUN_DIR) and logs/ (TensorBoard).
    Example: asp prune --model lenet5 --data mnist --data-dir ~/data/mnist --out runs/lenet5
    """
    from asp_export.prune.options import options_from_cli
    from asp_export.prune.pipeline import run_prune

    resume_dir = options.pop("resume_dir")
    force = options.pop("force")
    if resume_dir and force:
        raise click.UsageError("--resume and --force contradict each other; use one.")
    prune_options = options_from_cli({k: v for k, v in options.items() if v not in (None, ())}, resume_dir)
    context = click.get_current_context()
    given = {k: v for k, v in options.items() if context.get_parameter_source(k) != ParameterSource.DEFAULT}
    report = run_prune(
        prune_options, force=force, resume=bool(resume_dir), given=given if resume_dir else None
    )
    click.echo(_summary(report, prune_options.out))


def _summary(report: dict, out: str) -> str:
    dense, pruned = report["dense"], report["pruned"]
    how = "rebuilt, fine-tuned" if report.get("finetuned") else "rebuilt"
    live = f"  (live before rounding: {report['structure_live']})" if report.get("structure_live") else ""
    flops_ratio = dense["flops"] / max(pruned["flops"], 1)
    params_ratio = dense["params"] / max(pruned["params"], 1)
    lines = [
        f"dense accuracy   {100 * dense['accuracy']:.2f} %",
        f"masked accuracy  {100 * report['masked']['accuracy']:.2f} %  (dead groups zeroed)",
        f"pruned accuracy  {100 * pruned['accuracy']:.2f} %  ({how})",
        f"structure        {report['structure']}{live}",
        f"FLOPs            {dense['flops']:,} -> {pruned['flops']:,}  ({flops_ratio:.2f}x fewer)",
        f"params           {dense['params']:,} -> {pruned['params']:,}  ({params_ratio:.2f}x fewer)",
        f"run directory    {out}  (next: asp export {out})",
    ]
    target = report.get("target")
    if target:  # docs/evidence.md: what the target means and how it is reached
        unrounded = target.get("achieved_unrounded")
        before = f", {unrounded:.3f} before rounding to {target['round_to']}" if unrounded is not None else ""
        if target.get("rounding_gave_way"):
            before += f"; rounding gave way in {', '.join(target['rounding_gave_way'])} to reach it"
        lines.insert(
            -1,
            f"target           {target['kind']} {target['requested']:g} requested, "
            f"{target['achieved']:.3f} reached{before}  ({target['meaning']})",
        )
    if report.get("structural_change") is False:
        lines.insert(-1, f"note             {report.get('note', 'no structural change')}")
    return "\n".join(lines)
