"""`asp prune` end to end: train with GASL -> find dead groups -> rebuild smaller
-> optionally fine-tune -> write the run directory.

Each stage writes its artifact atomically and records progress in state.json,
so `--resume` continues a killed run from its last epoch checkpoint; the cheap
post-training stages (plan, surgery, evaluation) are simply recomputed.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from asp_export._io import atomic_path, remove_stale_temporaries, write_json_atomic
from asp_export.errors import PruningFailed, RunDirError, UserInputError
from asp_export.input_range import check_input_range
from asp_export.prune.sparsity import SparsityConfig
from asp_export.prune.train import TrainConfig
from asp_export.rundir import SCHEMA_VERSION, RunDir, read_json, replacing, run_lock
from asp_export.versions import asp_version, package_versions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SurgeryConfig:
    """When a group counts as dead, and how the smaller network is shaped.

    Args:
        threshold: a group (filter/neuron) is dead when its L2 norm is at or
            below this. The proximal solver sets dead groups to exactly zero,
            so the default only has to be small; it matches the paper's
            |w| <= 1e-3 element-wise rule.
        round_to: round kept channels per group up to a multiple of this
            (runtime-friendly widths); 1 keeps exactly the live channels.
            Default 8: on onnxruntime CPU, rounded widths turned 0.81 of the
            FLOPs cut into time against 0.45 unrounded (demo model, batch 32;
            docs/results.md), and were faster in absolute terms.
    """

    threshold: float = 1e-3
    round_to: int = 8
    min_channels: int = 1

    def __post_init__(self) -> None:
        if not self.threshold >= 0:
            raise UserInputError(f"threshold must be >= 0, got {self.threshold}.")
        if self.round_to < 1 or self.min_channels < 1:
            raise UserInputError("--round-to and --min-channels must be >= 1.")


@dataclass(frozen=True)
class PruneOptions:
    """Everything `asp prune` needs; the CLI builds exactly this object."""

    model: str
    out: str
    data: str = "digits"
    data_dir: str | None = None
    input_shape: tuple[int, int, int] | None = None
    input_range: str | None = None  # 0-1 | 0-255 | -1-1; None: read from the model, else 0-1
    val_fraction: float = 0.1
    augment: bool = False
    finetune_epochs: int = 0
    finetune_lr: float | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)
    surgery: SurgeryConfig = field(default_factory=SurgeryConfig)
    target_flops: float | None = None  # fraction of dense FLOPs to remove (asp_export/prune/targets.py)
    target_sparsity: float | None = None  # fraction of dense params to remove
    target_scope: str | None = None  # global | global-raw | layer | uniform; default per method
    target_elementwise: float | None = None  # the paper's element-wise sparsity of the cut model

    def __post_init__(self) -> None:
        from asp_export.prune.targets import validate_target

        validate_target(self.target_flops, self.target_sparsity, self.target_scope, self.target_elementwise)
        if self.input_range is not None:
            check_input_range(self.input_range)
        if not 0.0 <= self.val_fraction < 1.0:
            raise UserInputError(f"val fraction must be in [0, 1), got {self.val_fraction}.")
        if self.finetune_epochs < 0:
            raise UserInputError(f"finetune epochs must be >= 0, got {self.finetune_epochs}.")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["train"] = self.train.to_dict()
        data["sparsity"] = self.sparsity.to_dict()
        data["input_shape"] = list(self.input_shape) if self.input_shape else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PruneOptions:
        data = dict(data)
        data["train"] = TrainConfig(**data["train"])
        data["sparsity"] = SparsityConfig.from_dict(data["sparsity"])
        data["surgery"] = SurgeryConfig(**data["surgery"])
        if data.get("input_shape"):
            data["input_shape"] = tuple(data["input_shape"])
        return cls(**data)


def run_prune(
    options: PruneOptions,
    *,
    force: bool = False,
    resume: bool = False,
    given: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the whole prune pipeline into `options.out`; return the report dict.

    The run directory is owned by this process throughout (`run_lock`: a second process is
    refused with exit 2). With `force` an existing run is replaced only once the new one is
    complete (`replacing`). With `resume`, `given` holds the options the user passed with
    it; any that differ from the run's config.json are refused, naming them.
    """
    with run_lock(options.out, "asp prune"):
        return _run_prune(options, force=force, resume=resume, given=given or {})


def _run_prune(
    options: PruneOptions, *, force: bool, resume: bool, given: Mapping[str, Any]
) -> dict[str, Any]:
    run = None
    if resume:
        run = RunDir.open(options.out)
        options = PruneOptions.from_dict(read_json(run.config_json)["options"])
        refuse_changed_options(options, given, run.root)
        _remove_stale_temporaries(run)
        state = read_json(run.state_json) if run.state_json.is_file() else {}
        if state.get("complete") and run.report_json.is_file():
            log.warning("%s is already complete; nothing to resume (to redo it, use --force).", run.root)
            return read_json(run.report_json)
        log.info("Resuming %s", run.root)
    else:
        RunDir.create(options.out, force=force, dry_run=True)  # refuse early, before any work

    if options.sparsity.method == "magnitude":  # TF-MOT needs tf_keras: its own process
        from asp_export.prune.magnitude import run_magnitude

        return run_magnitude(options, force=force, resume=resume, run_dir=run.root if run else None)

    from asp_export.prune import methods, train

    # First TensorFlow call: multi-worker collectives must be configured at program startup.
    strategy = train.make_strategy(options.train.strategy)
    # Validate the model and the data before a run directory exists (or an old one is touched).
    model_source = _model_source(options.model)
    dataset = _load_data(options, model_source)
    options = replace(options, input_range=dataset.input_range)  # config.json records the one used
    warn_degenerate(options, dataset)
    if not resume:  # before the seed is set: the model trained is built from the same seed as ever
        probe = _build_model(options, model_source, dataset)  # fails as bad input if it cannot be built
        methods.validate(options, lambda: probe)
        del probe
    train.set_mixed_precision(options.train.mixed_precision)
    train.set_determinism(options.train.seed)
    if run is not None:
        return _train_and_report(options, run, strategy, model_source, dataset, resume=True)
    with replacing(options.out, force=force) as new_run:  # an old run stays until this one is done
        RunDir.create(new_run.root)
        return _train_and_report(options, new_run, strategy, model_source, dataset, resume=False)


def _train_and_report(
    options: PruneOptions, run: RunDir, strategy, model_source: str, dataset, *, resume: bool
) -> dict[str, Any]:
    from asp_export.prune import train

    checkpoint = train.resume_checkpoint(run, strategy, options.train.epochs) if resume else None
    with strategy.scope():
        if checkpoint is not None:
            epochs_done, path = checkpoint
            log.info("Continuing from %s (epoch %d of %d)", path.name, epochs_done, options.train.epochs)
            model = _load_checkpoint(path)
            train.restore_random_state(model, run, epochs_done)
        else:
            epochs_done = 0
            model = _build_model(options, model_source, dataset)
            train.compile_model(model, options.train.learning_rate, from_logits=_emits_logits(model))

    if not resume:
        write_json_atomic(run.config_json, _config_record(options, model, model_source, dataset, strategy))

    started = time.perf_counter()
    train.fit(model, dataset, run, options.train, options.sparsity, initial_epoch=epochs_done)
    training_seconds = time.perf_counter() - started + _previous_seconds(run, epochs_done)

    dense = train.to_float32(model)
    train.set_mixed_precision(False)
    _save_model(dense, run.model_path("dense"))

    report = _prune_and_evaluate(dense, dataset, run, options, strategy)
    report.update(
        model=options.model,
        dataset=dataset.name,
        method=options.sparsity.method,
        seed=options.train.seed,
        config=options.to_dict(),
        versions=package_versions(),
        devices=train.describe_devices(strategy),
        training={"epochs": options.train.epochs, "seconds": round(training_seconds, 1)},
    )
    from asp_export.prune.report import write_report

    write_report(run, report)
    train.write_state(run, complete=True)
    return report


def check_target_reachable(options: PruneOptions) -> None:
    """Refuse a target no cut of the model can reach, before anything trains (`asp sweep`
    checks every cell up front; `asp prune` does it in `methods.validate`).

    Raises:
        UserInputError: one line naming the most that can be removed.
    """
    from asp_export.prune import methods

    has_target = any(
        v is not None for v in (options.target_flops, options.target_sparsity, options.target_elementwise)
    )
    if not has_target or options.sparsity.method == "magnitude":
        return
    model_source = _model_source(options.model)
    dataset = _load_data(options, model_source)
    methods.check_reachable(_build_model(options, model_source, dataset), options)


# --- stages -------------------------------------------------------------------


def _prune_and_evaluate(dense, dataset, run: RunDir, options: PruneOptions, strategy) -> dict[str, Any]:
    import numpy as np

    from asp_export import surgery
    from asp_export.prune import train
    from asp_export.prune.report import model_figures, structure_string
    from asp_export.prune.sparsity import elementwise_sparsity, grouped_kernels

    batch = options.train.batch_size
    from_logits = _emits_logits(dense)
    dense_accuracy = evaluate(dense, dataset, batch)

    from asp_export.prune.methods import choose_plan

    source, plan, target = choose_plan(
        dense, options
    )  # source: dense, or a copy with the cut channels zeroed
    masked = surgery.mask(source, plan)
    masked_accuracy = evaluate(masked, dataset, batch)
    with strategy.scope():  # fine-tuning, if asked, trains this very model
        pruned = surgery.apply(source, plan)
    pruned_accuracy = evaluate(pruned, dataset, batch)

    probe = dataset.sample(min(64, dataset.n_test), split="test")
    surgery_error = float(np.max(np.abs(masked(probe, training=False) - pruned(probe, training=False))))

    finetuned = None
    final = pruned
    if options.finetune_epochs > 0:
        with strategy.scope():
            train.compile_model(
                final, options.finetune_lr or options.train.learning_rate / 10, from_logits=from_logits
            )
        finetune_config = replace(options.train, epochs=options.finetune_epochs)
        train.fit(final, dataset, run, finetune_config, SparsityConfig(method="none"), stage="finetune")
        finetuned = {"accuracy": round(evaluate(final, dataset, batch), 6)}
    before = {k.name: len(k.norms()) for k in grouped_kernels(dense)}
    after = {k.name: len(k.norms()) for k in grouped_kernels(final)}
    _refuse_dead(dense_accuracy, finetuned["accuracy"] if finetuned else pruned_accuracy, dataset, after)
    _save_model(final, run.model_path("pruned"))

    layers = [
        {"name": name, "groups_before": n, "groups_after": after.get(name, 0)} for name, n in before.items()
    ]
    pruned_figures = model_figures(
        final, accuracy=finetuned["accuracy"] if finetuned else pruned_accuracy, path=run.model_path("pruned")
    )
    return {
        "dense": model_figures(dense, accuracy=dense_accuracy, path=run.model_path("dense")),
        "masked": {"accuracy": round(masked_accuracy, 6)},
        "pruned": pruned_figures,
        "surgery": {
            "accuracy_before_finetune": round(pruned_accuracy, 6),
            "max_abs_diff_vs_masked": surgery_error,
        },
        "finetuned": finetuned,
        "layers": layers,
        "structure": structure_string(layers),
        "structure_live": _live_structure(source, options.surgery.threshold, before, target),
        "elementwise_sparsity": round(elementwise_sparsity(dense), 6),
        "plan": plan.to_dict(),
        "target": target,
    }


def _live_structure(source, threshold: float, regularised: dict[str, int], target: dict | None) -> str:
    """Live groups per regularised layer before rounding (the paper's notation): with a
    target, the widths its cut leaves unrounded; without, the trained model's live groups."""
    from asp_export import surgery

    if target is not None:
        live = target["widths_before_rounding"]
    else:
        live = {entry["name"]: entry["after"] for entry in surgery.plan(source, threshold=threshold).layers}
    return "-".join(str(live.get(name, total)) for name, total in regularised.items())


def chance_accuracy(dataset) -> float:
    """The accuracy of always answering the test split's most frequent class."""
    import numpy as np

    labels = np.asarray(dataset.labels("test")).reshape(-1)
    return float(np.bincount(labels).max() / labels.size) if labels.size else 0.0


def _refuse_dead(dense_accuracy: float, accuracy: float, dataset, widths: dict[str, int]) -> None:
    """A pruned model at chance where the dense model learnt is a failed run, not a result.

    At chance: within three binomial standard deviations of always answering the most
    frequent class; learnt: the dense model is at least twice that margin above it.
    """
    import math

    chance = chance_accuracy(dataset)
    n = max(len(dataset.labels("test")), 1)
    margin = 3 * math.sqrt(max(chance * (1 - chance), 1e-6) / n)
    if dense_accuracy >= chance + 2 * margin and accuracy <= chance + margin:
        structure = "-".join(str(w) for w in widths.values())
        raise PruningFailed(
            f"The pruned model is at chance ({100 * accuracy:.2f} % vs {100 * chance:.2f} % for always "
            f"answering the most frequent class) where the dense model reached {100 * dense_accuracy:.2f} %: "
            f"the cut (structure {structure}) destroyed what it learnt; ask for a smaller target, another "
            "--target-scope, or more --finetune-epochs."
        )


def evaluate(model, dataset, batch_size: int) -> float:
    """Top-1 accuracy on the test split (argmax: the same for logits and probabilities)."""
    import keras
    import numpy as np

    correct = 0
    total = 0
    for x, y in dataset.test(batch_size):
        logits = model(x, training=False)
        correct += int(np.sum(np.argmax(keras.ops.convert_to_numpy(logits), axis=-1) == np.asarray(y)))
        total += int(np.asarray(y).shape[0])
    if total == 0:
        raise UserInputError(f"The test split of {dataset.name} is empty; nothing to evaluate.")
    return correct / total


# --- helpers ------------------------------------------------------------------


def _model_source(model: str) -> str:
    if model.endswith(".keras") or Path(model).exists():
        return "file"
    from asp_export.models import get_model_entry

    get_model_entry(model)  # unknown names fail here, with a did-you-mean
    return "zoo"


def _load_data(options: PruneOptions, model_source: str):
    """The dataset at the model's input shape and pixel range (`asp_export.input_range`)."""
    from asp_export.data import load_dataset
    from asp_export.input_range import resolve_input_range

    input_shape = options.input_shape
    model = None
    if model_source == "file":
        from asp_export.keras_io import load_keras_model

        model = load_keras_model(options.model)
        input_shape = input_shape or tuple(model.input_shape[1:])
    elif input_shape is None:
        from asp_export.models import get_model_entry

        input_shape = get_model_entry(options.model).default_input_shape
    input_range, why = resolve_input_range(options.input_range, model)
    dataset = load_dataset(
        options.data,
        data_dir=options.data_dir,
        input_shape=input_shape,
        val_fraction=options.val_fraction,
        seed=options.train.seed,
        augment=options.augment,
        input_range=input_range,
    )
    log.info("input range %s: %s", input_range, why)  # after loading: bad data is one line
    return dataset


def warn_degenerate(options: PruneOptions, dataset) -> None:
    """Say so when options that run will produce little of use (docs/reliability.md)."""
    config = options.train
    if config.learning_rate > 0.1:
        log.warning(
            "--lr %g is far above Adam's useful range (1e-4..1e-2); the run stops if the loss explodes.",
            config.learning_rate,
        )
    if config.batch_size > dataset.n_train:
        log.warning(
            "--batch-size %d is larger than the %d training images: %s.",
            config.batch_size,
            dataset.n_train,
            "every epoch is one step" if config.steps_per_epoch is None else "every batch repeats images",
        )
    if options.val_fraction > 0.5:
        log.warning(
            "--val-fraction %g holds out more than it trains on: %d training images, %d for validation.",
            options.val_fraction,
            dataset.n_train,
            dataset.n_val,
        )


def _build_model(options: PruneOptions, model_source: str, dataset):
    if model_source == "zoo":
        from asp_export.models import create_model, get_model_entry

        try:
            return create_model(
                options.model, input_shape=dataset.input_shape, num_classes=dataset.num_classes
            )
        except ValueError as err:  # Keras: e.g. a pooling/conv stack that shrinks the image to nothing
            default = ",".join(map(str, get_model_entry(options.model).default_input_shape))
            reason = str(err).split(". ")[0].strip().rstrip(".")
            raise UserInputError(
                f"{options.model} cannot be built for input shape "
                f"{','.join(map(str, dataset.input_shape))} ({reason}); give a larger --input-shape "
                f"(its default is {default}) or another --model."
            ) from None
    from asp_export.keras_io import load_keras_model

    model = load_keras_model(options.model)
    outputs = model.output_shape[-1]
    if outputs != dataset.num_classes:
        raise UserInputError(
            f"{options.model} has {outputs} outputs but {dataset.name} has {dataset.num_classes} classes; "
            "give a model whose last layer matches the dataset."
        )
    return model


def _emits_logits(model) -> bool:
    """False when the model ends in a softmax (then the loss takes probabilities)."""
    last = model.layers[-1]
    activation = getattr(last, "activation", None)
    name = getattr(activation, "__name__", str(activation))
    return not (type(last).__name__ == "Softmax" or name == "softmax")


def _load_checkpoint(path: Path):
    import keras

    try:
        return keras.saving.load_model(path, compile=True, safe_mode=True)
    except Exception as err:  # noqa: BLE001 - any load failure means an unusable checkpoint
        raise RunDirError(
            f"Checkpoint {path} cannot be loaded ({err}); delete it to resume from the one before."
        ) from None


def _save_model(model, path: Path) -> None:
    """Save weights and architecture only: Keras 3 writes a compiled model's
    optimizer slots into .keras files (tripling an Adam-trained file)."""
    import keras

    inference_copy = keras.Model.from_config(model.get_config())
    inference_copy.set_weights(model.get_weights())
    with atomic_path(path) as tmp:
        inference_copy.save(tmp)


def _remove_stale_temporaries(run: RunDir) -> None:
    for stale in remove_stale_temporaries(run.root, recursive=True):
        log.info("Removed %s (left by a killed run)", stale)


def _previous_seconds(run: RunDir, epochs_done: int) -> float:
    if not epochs_done or not run.state_json.exists():
        return 0.0
    history = read_json(run.state_json).get("history", [])
    return float(sum(h.get("seconds", 0.0) for h in history if h["epoch"] <= epochs_done))


def _config_record(options: PruneOptions, model, model_source: str, dataset, strategy) -> dict[str, Any]:
    from asp_export.prune.train import describe_devices

    return {
        "schema_version": SCHEMA_VERSION,
        "asp_version": asp_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": options.model,
        "model_source": model_source,
        "data": dataset.describe(),
        "input_shape": list(dataset.input_shape),
        "input_range": dataset.input_range,
        "num_classes": dataset.num_classes,
        "seed": options.train.seed,
        "method": options.sparsity.method,
        "options": options.to_dict(),
        "versions": package_versions(),
        "devices": describe_devices(strategy),
    }


_TRAIN_KEYS = {
    "epochs",
    "batch_size",
    "learning_rate",
    "steps_per_epoch",
    "seed",
    "mixed_precision",
    "strategy",
}
_SPARSITY_KEYS = {
    "method",
    "lambda_group",
    "lambda_var",
    "solver",
    "group_weighting",
    "include_classifier",
    "exclude",
}
_SURGERY_KEYS = {"threshold", "round_to", "min_channels"}


def refuse_changed_options(options: PruneOptions, given: Mapping[str, Any], root: Path) -> None:
    """Refuse options given with `--resume` that differ from the run's (in CLI names).

    A resumed run continues exactly as configured: a different epoch count, target, method
    or data would mix two runs in one directory (training to the old epochs, or calling a
    complete run of one target a run of another), so none is applied.

    Raises:
        RunDirError: the differing options, as `--name=GIVEN (run: STORED)` (exit 2).
    """
    stored = options.to_dict()
    for section in ("train", "sparsity", "surgery"):
        stored.update(stored.pop(section))
    differing = []
    for key, value in given.items():
        flag = _FLAGS.get(key, f"--{key.replace('_', '-')}")
        if key == "out":
            if Path(value).resolve() != Path(root).resolve():
                differing.append(f"{flag}={value} (resuming {root})")
            continue
        wanted, had = json.loads(json.dumps(value)), stored.get(key)
        if wanted != had:
            differing.append(f"{flag}={_shown(wanted)} (run: {_shown(had)})")
    if differing:
        raise RunDirError(
            f"--resume continues {root} as its config.json says, but these options differ: "
            f"{', '.join(differing)}. Drop them to resume, or start a new run with them "
            "(another --out, or --force to replace this one)."
        )


_FLAGS = {"learning_rate": "--lr"}


def _shown(value: Any) -> str:
    if value is None:
        return "not set"
    return value if isinstance(value, str) else json.dumps(value)


def options_from_cli(flat: dict[str, Any], resume_dir: str | None = None) -> PruneOptions:
    """Build PruneOptions from the CLI's flat options; unset options keep library defaults."""
    flat = dict(flat)
    if resume_dir:
        return PruneOptions(model=flat.get("model", "gasl-mnist"), out=resume_dir)
    train_config = TrainConfig(**{k: flat.pop(k) for k in list(flat) if k in _TRAIN_KEYS})
    sparsity_config = SparsityConfig(**{k: flat.pop(k) for k in list(flat) if k in _SPARSITY_KEYS})
    surgery_config = SurgeryConfig(**{k: flat.pop(k) for k in list(flat) if k in _SURGERY_KEYS})
    model = flat.pop("model", "gasl-mnist")
    data = flat.pop("data", "digits")
    out = flat.pop("out", None) or f"runs/{Path(model).stem}-{data.replace(':', '-').replace('/', '_')}"
    return PruneOptions(
        model=model,
        data=data,
        out=out,
        train=train_config,
        sparsity=sparsity_config,
        surgery=surgery_config,
        **flat,
    )
