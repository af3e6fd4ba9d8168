"""Reach a compression target: choose which channels to cut so methods meet at one point.

Comparing pruning methods is only fair at equal cost. A *target* fixes that cost;
this module chooses how many of the lowest-scored channels to zero so that the
rebuilt model reaches it, and reports what was really reached after rounding.

Target semantics (both are fractions **removed**, so bigger means smaller models):

* ``flops`` -- ``--target-flops 0.8`` removes at least 80 % of the dense model's
  FLOPs (the pruned model keeps at most 20 %). FLOPs are `asp_export.surgery.flops.count`
  (2 x MACs) of the model `surgery.apply` really builds.
* ``elementwise`` -- ``--target-elementwise 0.8``: the GASL paper's metric reaches 0.8
  (`asp_export.prune.sparsity.elementwise_sparsity`: mean over the regularised layers of
  the share of kernel weights with |w| <= 1e-3, measured on the trained model with the
  cut channels zeroed; rounding does not change it).
* ``sparsity`` -- ``--target-sparsity 0.8`` removes at least 80 % of the dense
  model's parameters (all of them, classifier included): ``1 - params(pruned) /
  params(dense)``. For ``magnitude`` (no structural change) it is TF-MOT's
  element-wise ``final_sparsity`` instead; see docs/evidence.md.

How channels are ranked (``scope``):

* ``global`` -- one threshold over every candidate channel's score *per weight*: the score
  divided by its layer's divisor (gasl/ssl/none: group L2 norm / sqrt(group size), the
  root mean square of the group's weights; l1: L1 norm / group size, the mean |w|;
  slimming: |BN gamma| as it is, one number per channel), so layers whose groups hold
  25 weights and layers whose groups hold 4,000 compare fairly.
* ``global-raw`` -- one threshold over the raw scores (gasl/ssl: the kernel's group L2
  norm, exactly ``--threshold``'s quantity). Raw norms grow with the group size, so this
  cuts the layers with small groups (conv1) first; it was the default before issue 12.
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
rounded and the unrounded figures are reported. Where rounding would keep the target out
of reach, it gives way in the fewest layers that need it (`_release_rounding`), and the
report names them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from asp_export.errors import UserInputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TargetKind:
    """One kind of compression target: its `asp prune` option and how each output words it."""

    name: str
    meaning: str  # report.json's target.meaning
    short: str  # "cannot be reached ... (removes at most X SHORT)"
    sweep_text: str  # the sweep comparison's caption

    @property
    def option(self) -> str:
        """The `asp prune` option, e.g. ``--target-flops``."""
        return f"--target-{self.name}"

    @property
    def field(self) -> str:
        """The `PruneOptions` field (and flat prune option), e.g. ``target_flops``."""
        return f"target_{self.name}"


# The one registry of target kinds (in `asp sweep --target-kind`'s order: its default first).
TARGET_KINDS: dict[str, TargetKind] = {
    "sparsity": TargetKind(
        "sparsity",
        meaning="fraction of the dense model's params removed",
        short="of its params",
        sweep_text="Targets are fractions of the dense params to remove",
    ),
    "flops": TargetKind(
        "flops",
        meaning="fraction of the dense model's FLOPs removed",
        short="of its FLOPs",
        sweep_text="Targets are fractions of the dense FLOPs to remove",
    ),
    "elementwise": TargetKind(
        "elementwise",
        meaning="mean over regularised layers of the share of kernel weights with |w| <= 1e-3",
        short="element-wise sparsity",
        sweep_text="Targets are element-wise sparsities "
        "(mean over pruned layers of the share of |w| <= 1e-3)",
    ),
}
KINDS = tuple(TARGET_KINDS)
SCOPES = ("global", "global-raw", "layer", "uniform")


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
    values = {"flops": target_flops, "sparsity": target_sparsity, "elementwise": target_elementwise}
    if sum(value is not None for value in values.values()) > 1:
        options = ", ".join(TARGET_KINDS[kind].option for kind in values)
        raise UserInputError(f"Give one of {options}, not several.")
    for kind, value in values.items():
        if value is not None and not 0.0 < float(value) < 1.0:
            raise UserInputError(
                f"{TARGET_KINDS[kind].option} is the fraction to remove, strictly between 0 and 1 "
                f"(0.8 removes 80 %); got {value}."
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


def order_channels(
    scores: dict[str, np.ndarray], scope: str, divisors: dict[str, float] | None = None
) -> list[tuple[str, int]]:
    """All candidate channels, lowest (normalised) score first.

    `divisors` (``global`` only): per layer, what turns a score into a score per weight
    (default 1). Ties are broken by layer order then channel index, so the order is
    deterministic.
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
        elif scope == "global":
            normalised = values / float((divisors or {}).get(name, 1.0))
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


class _Search:
    """Cut the first k channels of the order, plan, rebuild and count (one *probe*).

    Each layer's `min_channels` (at least one) highest-scored channels never enter the
    order: no cut leaves a layer without a live channel.
    """

    def __init__(
        self, model, grouped_kernels, scores, target, *, scope, threshold, min_channels, cost, divisors=None
    ):
        self.model, self.target, self.threshold = model, target, threshold
        self.min_channels = min_channels
        self.cost = cost or _flops_cost
        self.candidates = [g for g in grouped_kernels if g.name in scores]
        if not self.candidates:
            raise UserInputError(
                "No layer has channels this method can rank; nothing to prune toward the target."
            )
        self.scores = {g.name: np.asarray(scores[g.name], dtype=np.float64) for g in self.candidates}
        self.originals = snapshot(self.candidates)
        zero_channels(self.candidates, {}, self.originals)
        self.dense_cost = self.cost(model)
        protected = {name: _top(values, max(1, min_channels)) for name, values in self.scores.items()}
        self.order = [
            (name, c) for name, c in order_channels(self.scores, scope, divisors) if c not in protected[name]
        ]
        self.probes = 0

    def measure(self, k: int, round_to: int, unrounded=()) -> tuple[float, Any, dict]:
        from asp_export import surgery

        self.probes += 1
        zero_channels(self.candidates, _drop_sets(self.order, k), self.originals)
        plan = surgery.plan(
            self.model,
            threshold=self.threshold,
            round_to=round_to,
            min_channels=self.min_channels,
            priority=self.scores,
            unrounded=unrounded,
        )
        small_cost = self.cost(surgery.apply(self.model, plan))
        if self.target.kind == "elementwise":
            from asp_export.prune.sparsity import elementwise_sparsity

            return elementwise_sparsity(self.model), plan, small_cost
        return self.target.reduction(self.dense_cost, small_cost), plan, small_cost

    def restore(self) -> None:
        zero_channels(self.candidates, {}, self.originals)


def _top(values: np.ndarray, n: int) -> set[int]:
    """Indices of the n highest values (ties: the lower index)."""
    return {int(c) for c in np.argsort(-values, kind="stable")[:n]}


@contextlib.contextmanager
def _quiet_surgery():
    surgery_log = logging.getLogger("asp_export.surgery")
    level = surgery_log.level
    surgery_log.setLevel(max(level, logging.WARNING))  # one "channels kept" line per probe is noise
    try:
        yield
    finally:
        surgery_log.setLevel(level)


def limit(model, grouped_kernels: list, scores: dict[str, np.ndarray], target: Target, **options) -> float:
    """The most any cut can reach: every rankable channel cut but each layer's `min_channels`
    (at least one), no rounding. For flops and sparsity this depends on the architecture
    only, so an untrained model tells it before training. `model`'s weights are restored.

    Args:
        options: ``scope``, ``threshold``, ``min_channels`` and optionally ``cost`` and
            ``divisors``, as for `reach`.
    """
    options.setdefault("cost", None)
    search = _Search(model, grouped_kernels, scores, target, **options)
    try:
        with _quiet_surgery():
            value, _, _ = search.measure(len(search.order), 1)
    finally:
        search.restore()
    return value


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
    divisors: dict[str, float] | None = None,
) -> TargetResult:
    """Zero the fewest lowest-scored channels of `model` so the rebuilt model reaches `target`.

    Targets first, rounding second: when rounding every layer to `round_to` cannot reach
    the target, rounding gives way in as few layers as needed (those where it costs most),
    named in ``record["rounding_gave_way"]``.

    Args:
        model: a *work copy* (its weights are overwritten; the caller's dense model stays intact).
        grouped_kernels: `sparsity.grouped_kernels(model)` entries for the candidate layers.
        scores: ``{layer name: per-channel score}``; low scores are cut first, and rounding
            keeps back the highest-scored of the cut ones.
        target: what to reach.
        scope: ``global``, ``global-raw``, ``layer`` or ``uniform`` (module docstring).
        threshold, round_to, min_channels: the run's surgery options.
        cost: ``model -> {"flops", "params"}`` (default: `asp_export.surgery.flops.count`).
        divisors: ``{layer name: divisor}`` making scores per weight for ``global``
            (`asp_export.prune.select.score_divisors`); default 1.

    Returns:
        A `TargetResult` whose model has exactly the plan's dropped channels zeroed
        (for ``elementwise``: every chosen channel, kept or not); ``record`` holds
        requested/achieved values, the rounding and how many channels were zeroed. If
        even the largest cut cannot reach the target (`limit` refuses that before
        training), the largest cut is returned with ``reached: false``.
    """
    from asp_export import surgery

    search = _Search(
        model, grouped_kernels, scores, target,
        scope=scope, threshold=threshold, min_channels=min_channels, cost=cost, divisors=divisors,
    )  # fmt: skip
    n = len(search.order)
    unrounded: list[str] = []
    with _quiet_surgery():
        if round_to > 1 and search.measure(n, round_to)[0] < target.value:
            unrounded = _release_rounding(search, round_to, target.value)
        probes: dict[int, float] = {}

        def achieved(k: int) -> float:
            if k not in probes:
                probes[k] = search.measure(k, round_to, unrounded)[0]
                log.debug("target search: zero %d channels -> %s reduction %.4f", k, target.kind, probes[k])
            return probes[k]

        k, reached = _bisect(achieved, n, target.value)
        exact_value, exact_plan, _ = search.measure(k, 1)
        value, plan, small_cost = search.measure(k, round_to, unrounded)
    if target.kind == "elementwise":  # the zeros are the target: keep every chosen channel zeroed
        zero_channels(search.candidates, _drop_sets(search.order, k), search.originals)
        cut = model
    else:
        # Channels chosen but kept by the plan (kept back by round_to, or coupled through an Add to a
        # channel that stays) get their trained weights back: zeroing them would cost accuracy and
        # save nothing. Only the plan's dropped channels are zeroed (surgery.mask).
        search.restore()
        cut = surgery.mask(model, plan)
    if not reached:
        log.warning(
            "Target %s %.3f is out of reach: the largest cut removes only %.3f.",
            target.kind,
            target.value,
            value,
        )
    if unrounded:
        log.warning(
            "Target %s %.3f: rounding to %d gave way in %s (widths not rounded there) to reach it.",
            target.kind,
            target.value,
            round_to,
            ", ".join(unrounded),
        )
    record = {
        "kind": target.kind,
        "requested": target.value,
        "achieved": round(value, 6),
        "achieved_unrounded": round(exact_value, 6),
        "reached": bool(value >= target.value),
        "meaning": TARGET_KINDS[target.kind].meaning,
        "scope": scope,
        "round_to": round_to,
        "rounding_gave_way": unrounded,
        "channels_zeroed": int(k),
        "channels_candidate": n,
        "channels_protected": sum(len(v) for v in search.scores.values()) - n,
        "widths_before_rounding": {entry["name"]: entry["after"] for entry in exact_plan.layers},
        "probes": search.probes,
        "dense": search.dense_cost,
        "pruned": small_cost,
    }
    return TargetResult(model=cut, plan=plan, record=record)


def _release_rounding(search: _Search, round_to: int, goal: float) -> list[str]:
    """The fewest layers whose rounding must give way for the largest cut to reach `goal`:
    layers are released in the order of what rounding costs in each (largest first)."""
    n = len(search.order)
    names = [g.name for g in search.candidates]
    base = search.measure(n, round_to)[0]
    gain = {name: search.measure(n, round_to, [name])[0] - base for name in names}
    released: list[str] = []
    for name in sorted(names, key=lambda name: -gain[name]):
        released.append(name)
        if search.measure(n, round_to, released)[0] >= goal:
            break
    return released


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
    from asp_export.surgery.flops import cost

    return cost(model, ("flops", "params"))  # the key order report.json's target record keeps
