"""Plan channel surgery: decide which channels go (the cut itself is `_apply`).

Why two steps: *deciding* which channels are dead (`plan`) is cheap, changes nothing and
can be printed, stored in report.json and replayed; *cutting* (`apply`) writes a new model
from the plan. Zeroed weights alone make nothing faster; `apply` removes the channels from
the config (fewer filters/units) and slices every weight that touches them, honouring the
channel-dependency groups of `asp_export.surgery.graph`.

The contract, checked by the tests: ``apply(model, plan)(x) == mask(model, plan)(x)``
(within 1e-5 relative), where `mask` is the original model with the dropped channels'
producing kernels, biases and BN gamma/beta set to zero.

    >>> from asp_export import surgery
    >>> p = surgery.plan(model, threshold=1e-3)
    >>> print(p.summary())
    >>> small = surgery.apply(model, p)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from asp_export.errors import UserInputError
from asp_export.surgery.graph import ChannelGraph, build_graph

__all__ = ["PLAN_SCHEMA_VERSION", "GroupPlan", "Plan", "plan", "producer_outputs"]

PLAN_SCHEMA_VERSION = 1


# ==================================================================================== plan
@dataclass
class GroupPlan:
    """One coupled group: which of its channels survive.

    ``keep``/``drop`` index the group's channels in a fixed order (for a simple group,
    channel i is channel i of its first producer's output).
    """

    id: int
    members: str
    total: int
    keep: list[int]
    drop: list[int]
    frozen: int = 0
    frozen_reason: str = ""

    def __str__(self) -> str:
        return f"Group({self.members}; {self.total} ch, keep {len(self.keep)})"


@dataclass
class Plan:
    """Which channels each coupled group drops. Nothing is changed until `apply`.

    Attributes:
        model: the model's name.
        threshold / relative / round_to / min_channels / exclude: the options used.
        unrounded: producer layers whose kept count was not rounded to `round_to`.
        groups: one `GroupPlan` per coupled group (every group, frozen ones included).
        layers: per producer layer ``{"name", "before", "after"}`` output channels.
    """

    model: str
    threshold: float
    relative: bool = False
    round_to: int = 1
    min_channels: int = 1
    exclude: list[str] = field(default_factory=list)
    unrounded: list[str] = field(default_factory=list)
    groups: list[GroupPlan] = field(default_factory=list)
    layers: list[dict] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(g.total for g in self.groups)

    @property
    def dropped(self) -> int:
        return sum(len(g.drop) for g in self.groups)

    def to_dict(self) -> dict:
        """JSON-able dict (replayable with `Plan.from_dict` + `apply`)."""
        d = asdict(self)
        d["schema_version"] = PLAN_SCHEMA_VERSION
        return d

    @classmethod
    def from_dict(cls, data: dict) -> Plan:
        """Rebuild a plan from `to_dict` output.

        Raises:
            UserInputError: not a plan dict, or from a newer schema.
        """
        if not isinstance(data, dict) or "groups" not in data:
            raise UserInputError("Not a surgery plan: expected a dict with 'groups' (from Plan.to_dict()).")
        version = data.get("schema_version", PLAN_SCHEMA_VERSION)
        if version > PLAN_SCHEMA_VERSION:
            raise UserInputError(
                f"Plan schema_version {version} is newer than this asp understands ({PLAN_SCHEMA_VERSION}); "
                "upgrade asp."
            )
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["groups"] = [GroupPlan(**g) for g in data["groups"]]
        return cls(**fields)

    def summary(self) -> str:
        """One line: how many channels and groups are dropped."""
        touched = sum(1 for g in self.groups if g.drop)
        frozen = sum(1 for g in self.groups if g.frozen == g.total)
        pct = 100.0 * self.dropped / self.total if self.total else 0.0
        return (
            f"{self.model}: drop {self.dropped:,} of {self.total:,} channels ({pct:.1f}%) in {touched} of "
            f"{len(self.groups)} groups; {frozen} groups fully frozen (threshold {self.threshold:g}"
            f"{' relative' if self.relative else ''}, round_to {self.round_to})"
        )

    def __str__(self) -> str:
        rows = [f"{'id':>4} {'total':>6} {'keep':>6} {'drop':>6} {'frozen':>6}  group"]
        for g in self.groups:
            members = g.members if len(g.members) <= 90 else g.members[:87] + "..."
            rows.append(f"{g.id:>4} {g.total:>6} {len(g.keep):>6} {len(g.drop):>6} {g.frozen:>6}  {members}")
        rows.append(self.summary())
        return "\n".join(rows)


def _check_options(threshold: float, round_to: int, min_channels: int) -> None:
    if not isinstance(threshold, (int, float)) or not math.isfinite(threshold) or threshold < 0:
        raise UserInputError(f"threshold must be a finite number >= 0; received {threshold!r}.")
    if int(round_to) != round_to or round_to < 1:
        raise UserInputError(f"round_to must be an integer >= 1; received {round_to!r}.")
    if int(min_channels) != min_channels or min_channels < 1:
        raise UserInputError(f"min_channels must be an integer >= 1; received {min_channels!r}.")


def plan(
    model,
    threshold: float = 1e-3,
    *,
    norms: dict | None = None,
    relative: bool = False,
    round_to: int = 1,
    min_channels: int = 1,
    exclude=(),
    priority: dict | None = None,
    unrounded=(),
) -> Plan:
    """Decide, per coupled channel group, which channels are dead. Changes nothing.

    A channel is dropped only if, in its group, (1) every producer's kernel slice has L2 norm
    <= t (Conv kernel[..., c], Dense kernel[:, c], Depthwise kernel[:, :, c, :],
    SeparableConv pointwise[..., c]; or the value from `norms`), and (2) the constant the
    channel still carries with those kernels zero (activation(bias), through
    BatchNormalization: gamma*(bias-mean)/sqrt(var+eps)+beta, summed over Add, ...) has
    |value| <= t wherever a layer consumes it. t = threshold, or threshold x the group's
    largest norm when `relative`. Channels that cannot be removed exactly are frozen.

    Args:
        model: a functional or Sequential ``keras.Model``.
        threshold: dead-channel threshold (>= 0).
        norms: ``{layer_name: per-output-channel array}`` overriding the kernel norms.
        relative: threshold is a fraction of each group's largest norm.
        round_to: round each producer's kept channel count up to a multiple of this
            (the highest-priority dropped channels are kept back).
        min_channels: keep at least this many channels in each producer's output.
        exclude: layer names whose output channels are all kept.
        priority: ``{layer_name: per-output-channel score}`` deciding which dropped channels
            `round_to`/`min_channels` keep back (highest first); default: the kernel norms.
            A target's cut zeroes the channels it chose, so their norms are all 0 and only
            their scores can tell the strongest apart.
        unrounded: producer layer names whose kept count is not rounded to `round_to`
            (`min_channels` still holds).

    Returns:
        A `Plan`.

    Raises:
        UserInputError: bad option values or unknown layer names.
    """
    _check_options(threshold, round_to, min_channels)
    g = build_graph(model, norms=norms, exclude=exclude)
    unknown = [name for name in list(unrounded) + list(priority or {}) if name not in g.flat.layers]
    if unknown:
        raise UserInputError(f"plan: no layer named {unknown[0]!r} in {g.flat.name!r}.")
    keep = np.ones(g.n_comp, dtype=bool)
    for grp in g.groups:
        c = grp.comps
        norm = g.comp_norm[c]
        t = threshold * float(norm.max()) if relative and norm.size else float(threshold)
        dead = ~g.comp_frozen[c] & (norm <= t) & (g.comp_offset[c] <= t)
        keep[c[dead]] = False
    _enforce_widths(g, keep, int(min_channels), int(round_to), _comp_priority(g, priority), set(unrounded))
    return _make_plan(
        g,
        keep,
        model=g.flat.name,
        threshold=threshold,
        relative=relative,
        round_to=int(round_to),
        min_channels=int(min_channels),
        exclude=list(exclude),
        unrounded=sorted(unrounded),
    )


def _comp_priority(g: ChannelGraph, priority: dict | None) -> np.ndarray:
    """Per component: the largest given priority of its producers, else its norm."""
    if not priority:
        return g.comp_norm
    given = np.full(g.n_comp, -np.inf)
    for name, values in priority.items():
        out = g.outs_of.get((name, 0))
        if not out:
            continue
        ids = g.ids(out[0])
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if values.size != ids.size:
            raise UserInputError(
                f"priority[{name!r}] has {values.size} values; the layer has {ids.size} output channels."
            )
        np.maximum.at(given, g.comp[ids], values)
    return np.where(np.isfinite(given), given, g.comp_norm)


def producer_outputs(g: ChannelGraph) -> list:
    out = []
    for rec in g.flat.layers.values():
        if g.kinds.get(rec.name) in ("producer", "depthwise") and rec.calls:
            out.append((rec.name, g.outs_of[(rec.name, 0)][0]))
    return out


def _enforce_widths(
    g: ChannelGraph,
    keep: np.ndarray,
    min_channels: int,
    round_to: int,
    priority: np.ndarray,
    unrounded: set,
) -> None:
    """Keep back the highest-priority dropped channels until every producer output is wide enough."""
    producers = producer_outputs(g)
    targets = [ref for _, ref in producers]
    exact = {ref for name, ref in producers if name in unrounded}
    all_refs = list(g.shapes)
    for _ in range(100):
        changed = False
        for ref in targets + all_refs:
            comps = g.comp[g.ids(ref)]
            total = comps.size
            if total == 0:
                continue
            kept = int(keep[comps].sum())
            if ref in g.shapes and ref not in targets:
                need = 1 if kept == 0 else kept
            else:
                need = min(total, max(min_channels, kept))
                if round_to > 1 and ref not in exact:
                    need = min(total, math.ceil(need / round_to) * round_to)
            while kept < need:
                dropped = np.unique(comps[~keep[comps]])
                best = dropped[np.argmax(priority[dropped])]
                keep[best] = True
                kept = int(keep[comps].sum())
                changed = True
        if not changed:
            return


def _make_plan(g: ChannelGraph, keep: np.ndarray, **opts) -> Plan:
    groups = []
    for grp in g.groups:
        k = keep[grp.comps]
        reasons = [r for r in grp.frozen if r]
        groups.append(
            GroupPlan(
                id=grp.id,
                members=grp.describe(),
                total=grp.total,
                keep=np.nonzero(k)[0].tolist(),
                drop=np.nonzero(~k)[0].tolist(),
                frozen=len(reasons),
                frozen_reason=reasons[0] if reasons else "",
            )
        )
    layers = [
        {"name": name, "before": g.width(ref), "after": int(g.keep_indices(ref, keep).size)}
        for name, ref in producer_outputs(g)
    ]
    return Plan(groups=groups, layers=layers, **opts)
