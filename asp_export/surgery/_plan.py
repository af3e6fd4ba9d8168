"""Plan and apply channel surgery: rebuild a Keras model physically smaller.

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

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from asp_export.errors import UserInputError
from asp_export.surgery.graph import ChannelGraph, build_graph

log = logging.getLogger(__name__)

__all__ = ["GroupPlan", "Plan", "apply", "mask", "plan", "prune_model", "shrink"]

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


def _producer_outputs(g: ChannelGraph) -> list:
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
    producers = _producer_outputs(g)
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
        for name, ref in _producer_outputs(g)
    ]
    return Plan(groups=groups, layers=layers, **opts)


def _comp_keep(g: ChannelGraph, p: Plan) -> np.ndarray:
    if len(p.groups) != len(g.groups) or any(
        a.total != b.total for a, b in zip(p.groups, g.groups, strict=True)
    ):
        raise UserInputError(
            f"The plan does not match model {g.flat.name!r}: it lists {len(p.groups)} groups, "
            f"the model has {len(g.groups)} (or their sizes differ). Make the plan from this model."
        )
    keep = np.ones(g.n_comp, dtype=bool)
    for gp, grp in zip(p.groups, g.groups, strict=True):
        drop = np.asarray(gp.drop, dtype=np.int64)
        if drop.size and (drop.min() < 0 or drop.max() >= grp.total):
            raise UserInputError(f"Plan group {gp.id} drops channel indices outside 0..{grp.total - 1}.")
        comps = grp.comps[drop]
        frozen = comps[g.comp_frozen[comps] & (g.comp_reason[comps] != "")]
        structural = [c for c in frozen if not str(g.comp_reason[c]).endswith("excluded")]
        if structural:
            raise UserInputError(
                f"Plan group {gp.id} drops a channel that cannot be removed ({g.comp_reason[structural[0]]})."
            )
        keep[comps] = False
    return keep


# =================================================================================== apply
def _new_configs(g: ChannelGraph, keep: np.ndarray) -> tuple[dict, dict]:
    shapes = {}
    for ref, shape in g.shapes.items():
        n = int(g.keep_indices(ref, keep).size)
        shapes[ref] = tuple(shape[:-1]) + (n,) if len(shape) >= 2 else tuple(shape)
    configs = {}
    for rec in g.flat.layers.values():
        kind = g.kinds.get(rec.name)
        if not rec.calls or kind in (None, "frozen", "input"):
            continue
        out = g.outs_of.get((rec.name, 0))
        if not out:
            continue
        new_w = shapes[out[0]][-1]
        if new_w == g.shapes[out[0]][-1]:
            continue
        if kind == "producer":
            configs[rec.name] = rec.handler().set_out_channels(rec.config, new_w)
        elif rec.class_name == "Reshape":
            cfg = dict(rec.config)
            target = list(cfg["target_shape"])
            if kind == "flatten":
                target = [new_w] if target[-1] != -1 else [-1]
            elif target[-1] != -1:
                target[-1] = new_w
            cfg["target_shape"] = tuple(target)
            configs[rec.name] = cfg
    return shapes, configs


def _rebuild(g: ChannelGraph, shapes: dict, configs: dict):
    import keras

    cfg = g.flat.to_config(shapes, configs)
    return keras.Model.from_config(cfg)


def apply(model, plan: Plan):
    """Build a new, smaller ``keras.Model`` without the plan's dropped channels.

    The input model is not modified. Nested models come back flattened (one functional
    model with the same layer names); the result contains only standard Keras layers
    when the input did, so it saves to ``.keras`` and loads in safe mode.

    Args:
        model: the model the plan was made from.
        plan: a `Plan` from `plan` (or `Plan.from_dict`).

    Returns:
        The new model; ``apply(model, plan)(x)`` equals ``mask(model, plan)(x)``.

    Raises:
        UserInputError: the plan does not match the model.
    """
    g = build_graph(model, exclude=plan.exclude, warn=False)
    keep = _comp_keep(g, plan)
    shapes, configs = _new_configs(g, keep)
    new = _rebuild(g, shapes, configs)
    for rec in g.flat.layers.values():
        w = rec.weights()
        if not w:
            continue
        kind = g.kinds.get(rec.name)
        h = rec.handler()
        if kind in ("producer", "depthwise", "channelwise") and rec.calls:
            cfg = rec.config
            out_keep = g.keep_indices(g.outs_of[(rec.name, 0)][0], keep)
            if out_keep.size != g.width(g.outs_of[(rec.name, 0)][0]):
                w = h.slice_out(cfg, w, out_keep)
            if kind == "producer":
                in_ref = rec.calls[0].inputs[0]
                in_keep = g.keep_indices(in_ref, keep)
                if in_keep.size != g.width(in_ref):
                    w = h.slice_in(cfg, w, in_keep)
        new.get_layer(rec.name).set_weights(w)
    widths = [(g.width(ref), int(g.keep_indices(ref, keep).size)) for _, ref in _producer_outputs(g)]
    log.info(
        "surgery: %s -> %d of the %d output channels of its %d conv/dense layers kept (classifier included)",
        g.flat.name,
        sum(after for _, after in widths),
        sum(before for before, _ in widths),
        len(widths),
    )
    return new


def mask(model, plan: Plan):
    """A copy of `model` with the plan's dropped channels forced to zero (same widths).

    Zeroes, for every dropped channel, the producing kernel slice and bias, and the
    gamma and beta of BatchNormalization layers on it (moving mean too when there is no
    gamma). This is the test oracle of `apply` and the "masked" model `asp prune` reports.
    Nested models come back flattened, like `apply`.
    """
    g = build_graph(model, exclude=plan.exclude, warn=False)
    keep = _comp_keep(g, plan)
    new = _rebuild(g, dict(g.shapes), {})
    for rec in g.flat.layers.values():
        w = rec.weights()
        if not w:
            continue
        kind = g.kinds.get(rec.name)
        if kind in ("producer", "depthwise", "channelwise") and rec.calls:
            out_ref = g.outs_of[(rec.name, 0)][0]
            drop = np.nonzero(~keep[g.comp[g.ids(out_ref)]])[0]
            if drop.size:
                w = rec.handler().zero_out(rec.config, w, drop)
        new.get_layer(rec.name).set_weights(w)
    return new


def prune_model(model, threshold: float = 1e-3, **opts):
    """`plan` then `apply`: returns ``(small_model, plan)``. Options as in `plan`."""
    p = plan(model, threshold, **opts)
    return apply(model, p), p


# ================================================================================== shrink
def _cost(model) -> dict:
    try:
        from asp_export.surgery.flops import count
    except ImportError:  # pragma: no cover - flops module is part of the package
        return {"params": int(model.count_params()), "flops": None}
    report = count(model)
    return {"params": int(report.params), "flops": int(report.flops)}


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
        "before": _cost(model),
        "after": None,
        "plan": p.to_dict(),
    }
    if dry_run:
        return p, report
    small = apply(model, p)
    report["out"] = str(out_path)
    report["after"] = _cost(small)
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
            from asp_export.surgery.layers import _bn_parts

            gi, bi, mi, vi = _bn_parts(cfg, w)
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
