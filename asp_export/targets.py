"""Reach a compression target: choose which channels to cut so methods meet at one point.

Comparing pruning methods is only fair at equal cost. A *target* fixes that cost;
this module chooses how many of the lowest-scored channels to zero so that the
rebuilt model reaches it, and reports what was really reached after rounding.

Target semantics (both are fractions **removed**, so bigger means smaller models):

* ``flops`` -- ``--target-flops 0.8`` removes at least 80 % of the dense model's
  FLOPs (the pruned model keeps at most 20 %). FLOPs are `asp_export.flops.count`
  (2 x MACs) of the model `surgery.apply` really builds.
* ``elementwise`` -- ``--target-elementwise 0.8``: the GASL paper's metric reaches 0.8
  (`asp_export.sparsity.elementwise_sparsity`: mean over the regularised layers of
  the share of kernel weights with |w| <= 1e-3, measured on the trained model with the
  cut channels zeroed; rounding does not change it).
* ``sparsity`` -- ``--target-sparsity 0.8`` removes at least 80 % of the dense
  model's parameters (all of them, classifier included): ``1 - params(pruned) /
  params(dense)``. For ``magnitude`` (no structural change) it is TF-MOT's
  element-wise ``final_sparsity`` instead; see docs/evidence.md.

How channels are ranked (``scope``):

* ``global`` -- one threshold over the raw scores of every candidate channel
  (gasl/ssl: the kernel's group L2 norm, exactly ``--threshold``'s quantity;
  slimming: |BN gamma|, as Liu et al. 2017).
* ``layer`` -- one threshold over scores divided by their layer's largest score.
* ``uniform`` -- the same fraction of channels in every layer (Li et al. 2017's
  uniform ratio), realised as one threshold over each channel's rank fraction
  within its layer.

The model handed back has only the plan's dropped channels zeroed; channels chosen but
kept back by rounding (or held by a coupled channel) keep their trained weights.

Search: the candidate channels are sorted once by (normalised) score; dropping
the first k is monotone in k, so a bisection over k (log2(N) surgery builds)
finds the smallest k whose rebuilt model reaches the target. Each probe zeroes
the chosen channels (kernel slice, bias, gamma/beta of a BatchNormalization
reading them: the channel then carries exactly 0, so surgery drops it), plans
with the run's ``--threshold``/``--round-to``/``--min-channels``, applies and
counts. Rounding (``round_to``) only keeps channels back, so the reached value
may overshoot the target by up to one rounding step per layer; both the
rounded and the unrounded figures are reported.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from asp_export.errors import UserInputError

log = logging.getLogger(__name__)

KINDS = ("flops", "sparsity", "elementwise")
SCOPES = ("global", "layer", "uniform")


def validate_target(
    target_flops: float | None,
    target_sparsity: float | None,
    scope: str | None,
    target_elementwise: float | None = None,
) -> None:
    """Refuse impossible target options with a one-line message.

    Raises:
        UserInputError: both targets given, a value outside (0, 1), or an unknown scope.
    """
    given = [v for v in (target_flops, target_sparsity, target_elementwise) if v is not None]
    if len(given) > 1:
        raise UserInputError(
            "Give one of --target-flops, --target-sparsity, --target-elementwise, not several."
        )
    for name, value in (
        ("--target-flops", target_flops),
        ("--target-sparsity", target_sparsity),
        ("--target-elementwise", target_elementwise),
    ):
        if value is not None and not 0.0 < float(value) < 1.0:
            raise UserInputError(
                f"{name} is the fraction to remove, strictly between 0 and 1 (0.8 removes 80 %); got {value}."
            )
    if scope is not None and scope not in SCOPES:
        raise UserInputError(f"Unknown target scope {scope!r}; valid: {', '.join(SCOPES)}.")


@dataclass(frozen=True)
class Target:
    """A compression target: `kind` ("flops" or "sparsity") and the fraction to remove."""

    kind: str
    value: float

    @classmethod
    def from_options(
        cls,
        target_flops: float | None,
        target_sparsity: float | None,
        target_elementwise: float | None = None,
    ) -> Target | None:
        validate_target(target_flops, target_sparsity, None, target_elementwise)
        if target_elementwise is not None:
            return cls("elementwise", float(target_elementwise))
        if target_flops is not None:
            return cls("flops", float(target_flops))
        if target_sparsity is not None:
            return cls("sparsity", float(target_sparsity))
        return None

    def reduction(self, dense: dict[str, int], pruned: dict[str, int]) -> float:
        """Fraction of the dense FLOPs (or params) the pruned model removes."""
        key = "flops" if self.kind == "flops" else "params"
        return 1.0 - pruned[key] / max(dense[key], 1)


# --- zeroing channels ----------------------------------------------------------------------


def _channel_axis(grouped) -> int:
    rank = len(grouped.variable.shape)
    (axis,) = [a for a in range(rank) if a not in grouped.reduce_axes]
    return axis


def zero_channels(grouped_kernels: list, drop: dict[str, np.ndarray], originals: dict[str, list]) -> None:
    """Set every layer's variables from `originals`, then zero the `drop` channels.

    A dropped channel's kernel slice and its companions (bias, gamma/beta of a
    BatchNormalization reading it) become 0, so the channel carries exactly 0 and
    `surgery.plan` removes it at any threshold >= 0.
    """
    for grouped in grouped_kernels:
        arrays = [np.array(a, copy=True) for a in originals[grouped.name]]
        indices = drop.get(grouped.name)
        if indices is not None and len(indices):
            index = [slice(None)] * arrays[0].ndim
            index[_channel_axis(grouped)] = indices
            arrays[0][tuple(index)] = 0.0
            for companion in arrays[1:]:
                companion[indices] = 0.0
        for variable, value in zip((grouped.variable, *grouped.companions), arrays, strict=True):
            variable.assign(value)


def snapshot(grouped_kernels: list) -> dict[str, list]:
    """Copies of each grouped kernel's variables (kernel first, then companions)."""
    return {
        g.name: [np.array(np.asarray(v), copy=True) for v in (g.variable, *g.companions)]
        for g in grouped_kernels
    }


# --- ordering -------------------------------------------------------------------------------


def order_channels(scores: dict[str, np.ndarray], scope: str) -> list[tuple[str, int]]:
    """All candidate channels, lowest (normalised) score first.

    Ties are broken by layer order then channel index, so the order is deterministic.
    """
    if scope not in SCOPES:
        raise UserInputError(f"Unknown target scope {scope!r}; valid: {', '.join(SCOPES)}.")
    keyed = []
    for layer_index, (name, values) in enumerate(scores.items()):
        values = np.asarray(values, dtype=np.float64)
        if scope == "layer":
            top = float(values.max()) if values.size else 0.0
            normalised = values / top if top > 0 else np.zeros_like(values)
        elif scope == "uniform":
            ranks = np.empty(values.size)
            ranks[np.argsort(values, kind="stable")] = np.arange(1, values.size + 1)
            normalised = ranks / max(values.size, 1)
        else:
            normalised = values
        keyed += [(float(normalised[c]), layer_index, c, name) for c in range(values.size)]
    keyed.sort()
    return [(name, channel) for _, _, channel, name in keyed]


def _drop_sets(order: list[tuple[str, int]], k: int) -> dict[str, np.ndarray]:
    chosen: dict[str, list[int]] = {}
    for name, channel in order[:k]:
        chosen.setdefault(name, []).append(channel)
    return {name: np.asarray(sorted(channels), dtype=np.int64) for name, channels in chosen.items()}


# --- the search -----------------------------------------------------------------------------


@dataclass
class TargetResult:
    """What `reach` chose: the model to cut (chosen channels zeroed), its plan and the figures."""

    model: Any
    plan: Any
    record: dict[str, Any]


def reach(
    model,
    grouped_kernels: list,
    scores: dict[str, np.ndarray],
    target: Target,
    *,
    scope: str,
    threshold: float,
    round_to: int,
    min_channels: int,
    cost: Callable | None = None,
) -> TargetResult:
    """Zero the fewest lowest-scored channels of `model` so the rebuilt model reaches `target`.

    Args:
        model: a *work copy* (its weights are overwritten; the caller's dense model stays intact).
        grouped_kernels: `sparsity.grouped_kernels(model)` entries for the candidate layers.
        scores: ``{layer name: per-channel score}``; low scores are cut first.
        target: what to reach.
        scope: ``global``, ``layer`` or ``uniform`` (module docstring).
        threshold, round_to, min_channels: the run's surgery options.
        cost: ``model -> {"flops", "params"}`` (default: `asp_export.flops.count`).

    Returns:
        A `TargetResult` whose model has exactly the plan's dropped channels zeroed
        (for ``elementwise``: every chosen channel, kept or not); ``record`` holds
        requested/achieved values, the rounding and how many channels were zeroed. If
        even cutting every candidate channel cannot reach the target, the largest
        reachable cut is returned with ``reached: false``.
    """
    from asp_export import surgery

    cost = cost or _flops_cost
    candidates = [g for g in grouped_kernels if g.name in scores]
    if not candidates:
        raise UserInputError(
            "No layer has channels this method can rank; nothing to prune toward the target."
        )
    originals = snapshot(candidates)
    zero_channels(candidates, {}, originals)
    dense_cost = cost(model)
    order = order_channels({g.name: scores[g.name] for g in candidates}, scope)

    probes: dict[int, tuple[float, Any]] = {}

    def measure(k: int, rounding: int = round_to) -> tuple[float, Any, dict]:
        zero_channels(candidates, _drop_sets(order, k), originals)
        plan = surgery.plan(model, threshold=threshold, round_to=rounding, min_channels=min_channels)
        small_cost = cost(surgery.apply(model, plan))
        if target.kind == "elementwise":
            from asp_export.sparsity import elementwise_sparsity

            return elementwise_sparsity(model), plan, small_cost
        return target.reduction(dense_cost, small_cost), plan, small_cost

    def achieved(k: int) -> float:
        if k not in probes:
            value, plan, _ = measure(k)
            probes[k] = (value, plan)
            log.debug("target search: zero %d channels -> %s reduction %.4f", k, target.kind, value)
        return probes[k][0]

    surgery_log = logging.getLogger("asp_export.surgery")
    level = surgery_log.level
    surgery_log.setLevel(max(level, logging.WARNING))  # one "channels kept" line per probe is noise
    try:
        k, reached = _bisect(achieved, len(order), target.value)
        value, plan, small_cost = measure(k)
        unrounded, _, _ = measure(k, 1)
    finally:
        surgery_log.setLevel(level)
    if target.kind == "elementwise":  # the zeros are the target: keep every chosen channel zeroed
        zero_channels(candidates, _drop_sets(order, k), originals)
        cut = model
    else:
        # Channels chosen but kept by the plan (kept back by round_to, or coupled through an Add to a
        # channel that stays) get their trained weights back: zeroing them would cost accuracy and
        # save nothing. Only the plan's dropped channels are zeroed (surgery.mask).
        zero_channels(candidates, {}, originals)
        cut = surgery.mask(model, plan)
    if not reached:
        log.warning(
            "Target %s %.3f is out of reach: cutting every rankable channel removes only %.3f.",
            target.kind,
            target.value,
            value,
        )
    record = {
        "kind": target.kind,
        "requested": target.value,
        "achieved": round(value, 6),
        "achieved_unrounded": round(unrounded, 6),
        "reached": bool(value >= target.value),
        "meaning": _MEANING[target.kind],
        "scope": scope,
        "round_to": round_to,
        "channels_zeroed": int(k),
        "channels_candidate": len(order),
        "probes": len(probes) + 2,
        "dense": dense_cost,
        "pruned": small_cost,
    }
    return TargetResult(model=cut, plan=plan, record=record)


_MEANING = {
    "flops": "fraction of the dense model's FLOPs removed",
    "sparsity": "fraction of the dense model's params removed",
    "elementwise": "mean over regularised layers of the share of kernel weights with |w| <= 1e-3",
}


def _bisect(achieved: Callable[[int], float], n: int, goal: float) -> tuple[int, bool]:
    """Smallest k in [0, n] with achieved(k) >= goal (achieved is non-decreasing); (n, False) if none."""
    if achieved(n) < goal:
        return n, False
    if achieved(0) >= goal:
        return 0, True
    low, high = 0, n
    while high - low > 1:  # invariant: achieved(low) < goal <= achieved(high)
        middle = (low + high) // 2
        if achieved(middle) >= goal:
            high = middle
        else:
            low = middle
    return high, True


def _flops_cost(model) -> dict[str, int]:
    from asp_export.flops import count

    counted = count(model)
    return {"flops": int(counted.flops), "params": int(counted.params)}
