"""`asp prune` end to end: train with GASL -> find dead groups -> rebuild smaller
-> optionally fine-tune -> write the run directory.

Each stage writes its artifact atomically and records progress in state.json,
so `--resume` continues a killed run from its last epoch checkpoint; the cheap
post-training stages (plan, surgery, evaluation) are simply recomputed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from asp_export._io import remove_stale_temporaries, write_json_atomic
from asp_export.errors import PruningFailed, held_logs
from asp_export.keras_io import save_model
from asp_export.prune import inputs
from asp_export.prune.options import PruneOptions, refuse_changed_options
from asp_export.prune.sparsity import SparsityConfig
from asp_export.prune.train import chance_accuracy, emits_logits, evaluate, load_checkpoint
from asp_export.rundir import RunDir, read_json, replacing, run_lock
from asp_export.versions import package_versions

log = logging.getLogger(__name__)


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

    from asp_export.prune import select, train

    # First TensorFlow call: multi-worker collectives must be configured at program startup.
    strategy = train.make_strategy(options.train.strategy)
    # Validate the model and the data before a run directory exists (or an old one is touched);
    # what loading them logs is shown only once they pass (bad input is one line).
    with held_logs():
        model_source = inputs.model_source(options.model)
        dataset = inputs.load_data(options, model_source)
        options = replace(options, input_range=dataset.input_range)  # config.json records the one used
        inputs.warn_degenerate(options, dataset)
        if not resume:  # before the seed is set: the model trained is built from the same seed as ever
            probe = inputs.build_model(options, model_source, dataset)  # bad input if it cannot be built
            select.validate(options, lambda: probe)
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
            model = load_checkpoint(path)
            train.restore_random_state(model, run, epochs_done)
        else:
            epochs_done = 0
            model = inputs.build_model(options, model_source, dataset)
            train.compile_model(model, options.train.learning_rate, from_logits=emits_logits(model))

    if not resume:
        write_json_atomic(
            run.config_json, inputs.config_record(options, model, model_source, dataset, strategy)
        )

    started = time.perf_counter()
    train.fit(model, dataset, run, options.train, options.sparsity, initial_epoch=epochs_done)
    training_seconds = time.perf_counter() - started + _previous_seconds(run, epochs_done)

    dense = train.to_float32(model)
    train.set_mixed_precision(False)
    save_model(dense, run.model_path("dense"))

    measured = _prune_and_evaluate(dense, dataset, run, options, strategy)
    from asp_export.prune.report import build_report, write_report

    report = build_report(
        options,
        **measured,
        dataset=dataset.name,
        devices=train.describe_devices(strategy),
        seconds=training_seconds,
        versions=package_versions(),
    )

    write_report(run, report)
    train.write_state(run, complete=True)
    return report


def check_target_reachable(options: PruneOptions) -> None:
    """Refuse a target no cut of the model can reach, before anything trains (`asp sweep`
    checks every cell up front; `asp prune` does it in `select.validate`).

    Raises:
        UserInputError: one line naming the most that can be removed.
    """
    from asp_export.prune import select

    has_target = any(
        v is not None for v in (options.target_flops, options.target_sparsity, options.target_elementwise)
    )
    if not has_target or options.sparsity.method == "magnitude":
        return
    with held_logs():  # a target refused is one line, not the data's info lines and then the error
        model_source = inputs.model_source(options.model)
        dataset = inputs.load_data(options, model_source)
        select.check_reachable(inputs.build_model(options, model_source, dataset), options)


# --- stages -------------------------------------------------------------------


def _prune_and_evaluate(dense, dataset, run: RunDir, options: PruneOptions, strategy) -> dict[str, Any]:
    """Cut, rebuild, fine-tune and measure; returns `build_report`'s measured arguments."""
    import numpy as np

    from asp_export import surgery
    from asp_export.prune import train
    from asp_export.prune.report import model_figures
    from asp_export.prune.sparsity import elementwise_sparsity, grouped_kernels

    batch = options.train.batch_size
    from_logits = emits_logits(dense)
    dense_accuracy = evaluate(dense, dataset, batch)

    from asp_export.prune.select import choose_plan

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
    save_model(final, run.model_path("pruned"))

    layers = [
        {"name": name, "groups_before": n, "groups_after": after.get(name, 0)} for name, n in before.items()
    ]
    pruned_figures = model_figures(
        final, accuracy=finetuned["accuracy"] if finetuned else pruned_accuracy, path=run.model_path("pruned")
    )
    return {
        "dense": model_figures(dense, accuracy=dense_accuracy, path=run.model_path("dense")),
        "masked_accuracy": masked_accuracy,
        "pruned": pruned_figures,
        "surgery": {
            "accuracy_before_finetune": round(pruned_accuracy, 6),
            "max_abs_diff_vs_masked": surgery_error,
        },
        "finetuned": finetuned,
        "layers": layers,
        "structure_live": _live_structure(source, options.surgery.threshold, before, target),
        "elementwise_sparsity": elementwise_sparsity(dense),
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


# --- helpers ------------------------------------------------------------------


def _remove_stale_temporaries(run: RunDir) -> None:
    for stale in remove_stale_temporaries(run.root, recursive=True):
        log.info("Removed %s (left by a killed run)", stale)


def _previous_seconds(run: RunDir, epochs_done: int) -> float:
    if not epochs_done or not run.state_json.exists():
        return 0.0
    history = read_json(run.state_json).get("history", [])
    return float(sum(h.get("seconds", 0.0) for h in history if h["epoch"] <= epochs_done))
