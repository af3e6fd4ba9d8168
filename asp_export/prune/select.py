"""How each method chooses channels, and the refusals before a run starts (the methods are the
registry in `asp_export.prune.methods`; this module holds the decisions, so that the registry
imports nothing and `prune.sparsity` can read it without an import cycle).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from asp_export.errors import UserInputError
from asp_export.prune.methods import get_method

log = logging.getLogger(__name__)


# --- validation (before a run directory exists) --------------------------------------------


def validate(options, build_model) -> None:
    """Refuse a method/model/target combination that cannot work, with one line.

    Args:
        options: the run's `PruneOptions`.
        build_model: returns the untrained model (called only when the method must inspect it).

    Raises:
        UserInputError: l1-filter/slimming without a target, slimming on a model
            without BatchNormalization after a prunable layer, a FLOPs target for magnitude,
            an --exclude name that is not a prunable layer of the model, a target no cut can
            reach (`check_reachable`).
    """
    method = get_method(options.sparsity.method)
    built: list = []

    def model():
        if not built:
            built.append(build_model())
        return built[0]

    if options.sparsity.exclude:
        check_exclude(model(), options.sparsity.exclude)
    has_target = any(
        value is not None
        for value in (options.target_flops, options.target_sparsity, options.target_elementwise)
    )
    if method.needs_target and not has_target:
        raise UserInputError(
            f"--method {method.name} ranks channels but has no natural cut-off; give --target-flops or "
            "--target-sparsity (e.g. --target-flops 0.5 removes half the FLOPs)."
        )
    if method.needs_batch_norm and not gamma_scores(model(), options.sparsity):
        raise UserInputError(
            "--method slimming needs BatchNormalization layers (it prunes channels by their BN scale "
            "gamma), "
            f"and {model().name} has none after a prunable layer; use --method l1-filter, ssl or gasl."
        )
    if method.name == "magnitude" and options.target_flops is not None:
        raise UserInputError(
            "--method magnitude zeroes single weights and removes no FLOPs; give --target-sparsity instead."
        )
    if method.name == "magnitude" and options.target_elementwise is not None:
        raise UserInputError(
            "--method magnitude: give its element-wise sparsity as --target-sparsity "
            "(TF-MOT's final_sparsity)."
        )
    if has_target and method.name != "magnitude":
        check_reachable(model(), options)


def check_reachable(model, options) -> float:
    """Refuse a target that no cut of `model` can reach (the architecture decides; call it
    on the untrained model, before training). Returns the most that can be removed.

    Raises:
        UserInputError: the target exceeds what cutting every rankable channel but
            ``--min-channels`` per layer reaches, rounding aside.
    """
    import math

    from asp_export.prune.sparsity import grouped_kernels
    from asp_export.prune.targets import TARGET_KINDS, Target, limit

    target = Target.from_options(options.target_flops, options.target_sparsity, options.target_elementwise)
    config = options.sparsity
    kernels = grouped_kernels(model, include_classifier=config.include_classifier, exclude=config.exclude)
    scores = channel_scores(model, config, kernels)
    if not scores:
        return 0.0
    most = limit(
        model,
        kernels,
        scores,
        target,
        scope=options.target_scope or get_method(config.method).scope,
        threshold=options.surgery.threshold,
        min_channels=options.surgery.min_channels,
        divisors=score_divisors(config, kernels),
    )
    if target.value > most:
        keep, kind = options.surgery.min_channels, TARGET_KINDS[target.kind]
        raise UserInputError(
            f"{kind.option} {target.value:g} cannot be reached on {model.name}: cutting every "
            f"prunable channel but {keep} per layer removes at most {most:.4f} "
            f"({kind.short}); ask for {math.floor(most * 1000) / 1000:g} or less."
        )
    return most


def check_exclude(model, names) -> None:
    """Refuse `--exclude` names that are not prunable layers of `model` (a typo would protect nothing)."""
    from asp_export.errors import unknown_name_error
    from asp_export.prune.sparsity import grouped_kernels

    valid = [k.name for k in grouped_kernels(model, include_classifier=True)]
    for name in names:
        if name not in valid:
            raise unknown_name_error("--exclude layer", name, valid)


# --- scores -------------------------------------------------------------------------------


def gamma_scores(model, config) -> dict[str, np.ndarray]:
    """{producer layer: abs(gamma) of the BatchNormalization reading it} (slimming's score)."""
    from asp_export.prune.sparsity import grouped_kernels

    scores = {}
    for grouped in grouped_kernels(
        model, include_classifier=config.include_classifier, exclude=config.exclude
    ):
        gammas = [c for c in grouped.companions if c.path.endswith("gamma")]
        if gammas:
            scores[grouped.name] = np.abs(np.asarray(gammas[0], dtype=np.float64))
    return scores


def channel_scores(model, config, kernels: list) -> dict[str, np.ndarray]:
    """Per-channel scores of every candidate layer for `config.method` (low = cut first)."""
    method = get_method(config.method)
    if method.score == "gamma":
        return gamma_scores(model, config)
    if method.score == "l1":
        return {grouped.name: _l1_norms(grouped) for grouped in kernels}
    return {grouped.name: grouped.norms() for grouped in kernels}  # the group L2 norms


def score_divisors(config, kernels: list) -> dict[str, float]:
    """Per layer, what divides a channel's score into a score *per weight* (``global`` scope):
    sqrt(group size) for L2 norms (the group's root mean square), the group size for L1
    norms (its mean |w|), 1 for |gamma| (one number per channel)."""
    score = get_method(config.method).score
    divisors = {}
    for grouped in kernels:
        shape = grouped.variable.shape
        size = float(np.prod([shape[axis] for axis in grouped.reduce_axes]))
        divisors[grouped.name] = {"l2": np.sqrt(size), "l1": size}.get(score, 1.0)
    return divisors


def _l1_norms(grouped) -> np.ndarray:
    return np.sum(np.abs(np.asarray(grouped.variable, dtype=np.float64)), axis=grouped.reduce_axes)


# --- choosing the cut ------------------------------------------------------------------------


def choose_plan(dense, options) -> tuple[Any, Any, dict | None]:
    """The model to cut, its surgery plan, and the target record (None without a target).

    Without a target: ``(dense, surgery.plan(dense, threshold...), None)``. With one, a
    copy of `dense` whose chosen channels are zeroed (`asp_export.prune.targets.reach`); the
    caller masks and applies the plan to that copy, and keeps `dense` as trained.
    """
    import keras

    from asp_export import surgery
    from asp_export.prune.sparsity import grouped_kernels
    from asp_export.prune.targets import TARGET_KINDS, Target, reach

    target = Target.from_options(options.target_flops, options.target_sparsity, options.target_elementwise)
    opts = options.surgery
    if target is None:
        plan = surgery.plan(
            dense, threshold=opts.threshold, round_to=opts.round_to, min_channels=opts.min_channels
        )
        return dense, plan, None
    work = keras.models.clone_model(dense)
    work.set_weights(dense.get_weights())
    config = options.sparsity
    kernels = grouped_kernels(work, include_classifier=config.include_classifier, exclude=config.exclude)
    scores = channel_scores(work, config, kernels)
    scope = options.target_scope or get_method(config.method).scope
    result = reach(
        work,
        kernels,
        scores,
        target,
        scope=scope,
        threshold=opts.threshold,
        round_to=opts.round_to,
        min_channels=opts.min_channels,
        divisors=score_divisors(config, kernels),
    )
    if not result.record["reached"]:  # refused before training unless training was shared or resumed
        kind = TARGET_KINDS[target.kind]
        raise UserInputError(
            f"{kind.option} {target.value:g} cannot be reached on {dense.name}: the largest cut "
            f"removes {result.record['achieved_unrounded']:.4f} ({kind.short}); "
            "ask for less."
        )
    log.info(
        "target %s %.3f: zeroed %d of the %d output channels of the %d pruned layers (each layer's "
        "strongest %d never cut), reached %.4f (%.4f before rounding to %d)",
        target.kind,
        target.value,
        result.record["channels_zeroed"],
        result.record["channels_candidate"] + result.record["channels_protected"],
        len(scores),
        max(1, opts.min_channels),
        result.record["achieved"],
        result.record["achieved_unrounded"],
        opts.round_to,
    )
    return result.model, result.plan, result.record
