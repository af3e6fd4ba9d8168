"""Apply a surgery plan: rebuild the model without the dropped channels (`apply`), or zero them (`mask`).

`apply(model, plan)(x) == mask(model, plan)(x)` within 1e-5 relative: the contract the tests check.
"""

from __future__ import annotations

import logging

import numpy as np

from asp_export.errors import UserInputError
from asp_export.surgery._plan import Plan, plan, producer_outputs
from asp_export.surgery.graph import ChannelGraph, build_graph

log = logging.getLogger(__name__)

__all__ = ["apply", "mask", "prune_model"]


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
    widths = [(g.width(ref), int(g.keep_indices(ref, keep).size)) for _, ref in producer_outputs(g)]
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
