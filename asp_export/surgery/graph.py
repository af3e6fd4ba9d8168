"""Channel-dependency groups of a Keras 3 model, read from its config.

Why: removing output channel c of a convolution is only correct if every tensor that
channel reaches drops its channel c too -- the BatchNormalization after it, the other
branch of a residual Add, the Concatenate that holds it at some offset, the Dense rows
that read it after a Flatten. Torch-Pruning finds these couplings by tracing PyTorch
autograd; a Keras functional model already stores its graph in
``model.get_config()["layers"][i]["inbound_nodes"]``, so we read it from there.

How (the whole idea in one paragraph): every channel of every tensor gets an integer id
(an *element*). Each layer call adds edges between elements that must live or die
together, as its handler in `asp_export.surgery.layers` says (a BN joins input channel c to
output channel c, an Add joins channel c of all its inputs and its output, a Concatenate
joins input k's channel c to output channel offset_k + c, a Flatten joins channel c to
every flat position p*C + c, a depthwise conv joins input c to outputs c*m..c*m+m-1).
The connected components of that graph are the removable units (*channels*); tensors
that share channels form a *group* (`Group`). Channels touching something we cannot cut
exactly (model inputs and outputs, unknown layers, LayerNormalization, grouped
convolutions, excluded layers) are *frozen*.

Nested models are first flattened into one functional graph (`asp_export.surgery.flatten`), which
is also what `asp_export.surgery.apply` rebuilds. A shared layer (called at several
nodes) has one set of weights, so its calls' channels are coupled.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from asp_export.errors import UserInputError
from asp_export.surgery.flatten import (
    Call,
    FlatModel,
    LayerRec,
    TRef,
    channel_width,
    flatten_model,
    leaves,
    resolve_shapes,
    topo_calls,
)
from asp_export.surgery.layers import Handler, activation_fn

log = logging.getLogger(__name__)

__all__ = ["ChannelGraph", "FlatModel", "Group", "build_graph", "flatten_model"]


# ============================================================================ channel graph
@dataclass
class Group:
    """Tensors whose channel axes are coupled: channel i of the group lives or dies everywhere.

    Attributes:
        id: index in ``ChannelGraph.groups``.
        producers: layers whose kernels create the group's channels.
        members: other layers whose output is in the group (BN, activations, Add, ...).
        consumers: layers that read the group's channels through their kernel's input axis.
        total: number of channels (removable units) in the group.
        frozen: per channel, why it is kept whatever its norm ('' if removable).
    """

    id: int
    producers: list
    members: list
    consumers: list
    total: int
    tensors: list = field(repr=False, default_factory=list)
    comps: np.ndarray = field(repr=False, default=None)
    frozen: list = field(repr=False, default_factory=list)

    def describe(self, limit: int = 8) -> str:
        def short(names):
            if len(names) <= limit:
                return ", ".join(names)
            return ", ".join(names[: limit // 2]) + f", ...({len(names) - limit // 2} more)"

        prod = " + ".join(self.producers[:limit]) + (
            f" + {len(self.producers) - limit} more" if len(self.producers) > limit else ""
        )
        text = prod or "(no producer)"
        if self.members:
            text += " -> " + short(self.members).replace(", ", " -> ")
        if self.consumers:
            text += " | into " + short(self.consumers)
        return text

    def __str__(self) -> str:
        return f"Group({self.describe()}; {self.total} ch)"

    __repr__ = __str__


class ChannelGraph:
    """Elements, couplings, frozen channels, norms and constants of a flat model.

    Build with `build_graph`. The arrays are indexed by *component* (a removable channel):
    ``comp_frozen``, ``comp_norm`` (largest producer norm), ``comp_has_producer``,
    ``comp_offset`` (largest |value| a dead channel would still feed into a consumer),
    ``comp_unsafe`` (masking would not make it zero where it is consumed).
    """

    def __init__(self, flat: FlatModel, *, norms: dict | None = None, exclude=(), warn: bool = True) -> None:
        self.flat = flat
        self.unknown: dict[str, list[str]] = {}  # class name -> layer names the graph does not know
        self.calls = topo_calls(flat)
        self.shapes = resolve_shapes(flat, self.calls)
        self.base: dict[TRef, int] = {}
        n = 0
        for ref, shape in self.shapes.items():
            self.base[ref] = n
            n += channel_width(shape)
        self.n_elem = n
        self._edges_a: list[np.ndarray] = []
        self._edges_b: list[np.ndarray] = []
        self.frozen_reason = np.full(n, "", dtype=object)
        self.layer_reason: dict[str, str] = {}
        self.kinds: dict[str, str] = {}
        self._norms_override = dict(norms or {})
        self._exclude = set(exclude)
        self._build()
        if warn:
            for cls, names in self.unknown.items():
                shown = ", ".join(repr(n) for n in names[:5]) + (
                    f" and {len(names) - 5} more" if len(names) > 5 else ""
                )
                log.warning(
                    "Layer %s (%s) is unknown to asp's channel graph; channels through %s are kept.",
                    shown,
                    cls,
                    "it" if len(names) == 1 else "them",
                )

    # ---- element helpers
    def width(self, ref: TRef) -> int:
        return channel_width(self.shapes[ref])

    def ids(self, ref: TRef) -> np.ndarray:
        return self.base[ref] + np.arange(self.width(ref))

    def _couple(self, a: np.ndarray, b: np.ndarray) -> None:
        self._edges_a.append(np.asarray(a))
        self._edges_b.append(np.asarray(b))

    def _freeze(self, ref: TRef, reason: str) -> None:
        ids = self.ids(ref)
        unset = self.frozen_reason[ids] == ""
        self.frozen_reason[ids[unset]] = reason

    def handler(self, rec: LayerRec) -> Handler | None:
        return rec.handler()

    # ---- build
    def _build(self) -> None:
        flat = self.flat
        outs_of = defaultdict(list)  # layer -> output refs per call
        for ref in self.shapes:
            outs_of[(ref[0], ref[1])].append(ref)
        self.outs_of = {k: sorted(v, key=lambda r: r[2]) for k, v in outs_of.items()}
        self.producer_elems: list[tuple[np.ndarray, np.ndarray]] = []  # (element ids, norms)
        self.consumer_refs: list[TRef] = []

        for call in self.calls:
            rec = flat.layers[call.layer]
            h = self.handler(rec)
            outs = self.outs_of.get((call.layer, call.index), [])
            kind, reason = self._kind_of(rec, call, h, outs)
            self.kinds[rec.name] = (
                kind if rec.name not in self.kinds or self.kinds[rec.name] == kind else "frozen"
            )
            if kind == "frozen":
                self.layer_reason.setdefault(rec.name, reason)
                for r in call.inputs + call.kw_inputs + outs:
                    self._freeze(r, f"{rec.name}: {reason}")
                continue
            if kind == "input":
                for r in outs:
                    self._freeze(r, "model input")
                continue
            out = outs[0]
            if kind in ("producer", "depthwise"):
                act = rec.config.get("activation", "linear")
                if activation_fn(act) is None:  # e.g. softmax mixes the outputs; the input is still sliceable
                    self._freeze(out, f"{rec.name}: activation {act!r} is not a known element-wise function")
                if kind == "producer":
                    self.consumer_refs.append(call.inputs[0])
                else:
                    m = self.width(out) // self.width(call.inputs[0])
                    self._couple(np.repeat(self.ids(call.inputs[0]), m), self.ids(out))
                self.producer_elems.append((self.ids(out), self._producer_norms(rec, h)))
            elif kind == "channelwise":
                self._couple(self.ids(call.inputs[0]), self.ids(out))
            elif kind == "elementwise":
                w = self.width(out)
                for r in call.inputs:
                    if self.width(r) == w:
                        self._couple(self.ids(r), self.ids(out))
                    else:
                        self._freeze(r, f"{rec.name}: broadcast input")
            elif kind == "concat":
                if self._concat_on_channels(rec, call):
                    off = 0
                    for r in call.inputs:
                        self._couple(self.ids(r), self.base[out] + off + np.arange(self.width(r)))
                        off += self.width(r)
                else:
                    for r in call.inputs:
                        self._couple(self.ids(r), self.ids(out))
            elif kind == "flatten":
                c = self.width(call.inputs[0])
                p = self.width(out) // c
                self._couple(np.tile(self.ids(call.inputs[0]), p), self.ids(out))
        # shared layers: one set of weights, so every call cuts the same channels
        for rec in flat.layers.values():
            if len(rec.calls) < 2 or self.kinds.get(rec.name) in ("frozen", "input"):
                continue
            if not rec.weights() and rec.class_name != "Reshape":
                continue
            first = rec.calls[0]
            for call in rec.calls[1:]:
                for a, b in zip(
                    self.outs_of[(rec.name, 0)], self.outs_of[(rec.name, call.index)], strict=False
                ):
                    self._couple(self.ids(a), self.ids(b))
                for a, b in zip(first.inputs, call.inputs, strict=False):
                    self._couple(self.ids(a), self.ids(b))
        for ref in leaves(flat.outputs):
            self._freeze(tuple(ref), "model output")
        for name in self._exclude:
            for call in flat.layers[name].calls:
                for r in self.outs_of.get((name, call.index), []):
                    self._freeze(r, f"{name}: excluded")
        self._components()
        self._constants()
        self._groups()

    def _producer_norms(self, rec: LayerRec, h: Handler) -> np.ndarray:
        cache = self.__dict__.setdefault("_norm_cache", {})
        if rec.name in cache:
            return cache[rec.name]
        w = rec.weights()
        if rec.name in self._norms_override:
            norms = np.asarray(self._norms_override[rec.name], dtype=np.float64).reshape(-1)
            n = h.out_channels(rec.config, w)
            if norms.size != n:
                raise UserInputError(
                    f"norms[{rec.name!r}] has {norms.size} values; the layer has {n} output channels."
                )
        else:
            norms = h.norms(rec.config, w)
        cache[rec.name] = norms
        return norms

    def _concat_on_channels(self, rec: LayerRec, call: Call) -> bool:
        rank = len(self.shapes[call.inputs[0]])
        axis = rec.config.get("axis", -1)
        return axis in (-1, rank - 1)

    def _kind_of(self, rec: LayerRec, call: Call, h: Handler | None, outs: list) -> tuple[str, str]:
        if h is None:
            names = self.unknown.setdefault(rec.class_name, [])
            if rec.name not in names:
                names.append(rec.name)
            return "frozen", f"unknown layer type {rec.class_name}"
        if h.kind == "input":
            return "input", ""
        if call.kw_inputs:
            return "frozen", "tensor keyword arguments"
        if len(outs) != 1:
            return "frozen", f"{len(outs)} outputs"
        out = outs[0]
        ins = call.inputs
        if not ins:
            return "frozen", "no tensor input"
        rank = len(self.shapes[ins[0]])
        reason = h.freeze_reason(rec.config, rank)
        if reason:
            return "frozen", reason
        kind = h.kind
        if kind in ("producer", "depthwise", "channelwise", "flatten", "reshape") and len(ins) != 1:
            return "frozen", f"{len(ins)} tensor inputs"
        w_in, w_out = self.width(ins[0]), self.width(out)
        if kind == "producer":
            w = rec.weights()
            if not w or h.in_channels(rec.config, w) != w_in or h.out_channels(rec.config, w) != w_out:
                return "frozen", "weights do not match the tensor shapes"
        elif kind == "depthwise":
            if w_in == 0 or w_out % w_in:
                return "frozen", "depth multiplier does not match the tensor shapes"
        elif kind == "channelwise":
            if w_in != w_out:
                return "frozen", "changes the channel count"
        elif kind == "concat":
            if not self._concat_on_channels(rec, call) and any(self.width(r) != w_out for r in ins):
                return "frozen", "concatenates along a non-channel axis with different widths"
        elif kind == "flatten":
            if rec.config.get("data_format", "channels_last") != "channels_last" or w_out % max(w_in, 1):
                return "frozen", "not channels_last"
        elif kind == "reshape":
            in_shape, out_shape = self.shapes[ins[0]], self.shapes[out]
            if w_in == w_out:
                return "channelwise", ""
            if len(out_shape) == 2 and None not in in_shape[1:] and w_out == math.prod(in_shape[1:]):
                return "flatten", ""
            return "frozen", f"reshape {tuple(in_shape[1:])} -> {tuple(out_shape[1:])} moves the channel axis"
        return kind, ""

    def _components(self) -> None:
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        a = np.concatenate(self._edges_a) if self._edges_a else np.zeros(0, dtype=np.int64)
        b = np.concatenate(self._edges_b) if self._edges_b else np.zeros(0, dtype=np.int64)
        mat = coo_matrix((np.ones(a.size, dtype=np.int8), (a, b)), shape=(self.n_elem, self.n_elem))
        self.n_comp, self.comp = connected_components(mat, directed=False)
        self.comp_frozen = np.zeros(self.n_comp, dtype=bool)
        frozen_elems = np.nonzero(self.frozen_reason != "")[0]
        self.comp_frozen[self.comp[frozen_elems]] = True
        self.comp_reason = np.full(self.n_comp, "", dtype=object)
        self.comp_reason[self.comp[frozen_elems[::-1]]] = self.frozen_reason[frozen_elems[::-1]]
        self.comp_norm = np.zeros(self.n_comp)
        self.comp_has_producer = np.zeros(self.n_comp, dtype=bool)
        for ids, norms in self.producer_elems:
            np.maximum.at(self.comp_norm, self.comp[ids], norms)
            self.comp_has_producer[self.comp[ids]] = True

    def _constants(self) -> None:
        """Two passes of 'what value does each channel carry when its kernels are zero'.

        live: with the real biases and BN parameters -> how far from zero a dead channel is;
        masked: with those zeroed too (what `surgery.mask` does) -> must be exactly zero
        wherever a consumer reads the channel, else removal is not exact (e.g. a sigmoid
        after a dead conv outputs 0.5) and the channel is frozen.
        """
        live = _propagate(self, masked=False)
        masked = _propagate(self, masked=True)
        self.comp_offset = np.zeros(self.n_comp)
        self.comp_unsafe = np.zeros(self.n_comp, dtype=bool)
        for ref in self.consumer_refs:
            ids = self.comp[self.ids(ref)]
            lv = np.abs(live[ref])
            lv[np.isnan(lv)] = np.inf
            np.maximum.at(self.comp_offset, ids, lv)
            bad = ~(masked[ref] == 0)
            self.comp_unsafe[ids[bad]] = True
        newly = self.comp_unsafe & ~self.comp_frozen
        self.comp_reason[newly] = (
            "not zero where consumed after masking (e.g. sigmoid or bias after a dead kernel)"
        )
        self.comp_frozen |= self.comp_unsafe
        nop = ~self.comp_has_producer & ~self.comp_frozen
        self.comp_reason[nop] = "no producer"
        self.comp_frozen |= nop

    def _groups(self) -> None:
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        refs = list(self.shapes)
        t_idx = (
            np.concatenate([np.full(self.width(r), i) for i, r in enumerate(refs)])
            if refs
            else np.zeros(0, int)
        )
        elems = np.concatenate([self.ids(r) for r in refs]) if refs else np.zeros(0, int)
        nt = len(refs)
        mat = coo_matrix(
            (np.ones(elems.size, dtype=np.int8), (t_idx, nt + self.comp[elems])),
            shape=(nt + self.n_comp,) * 2,
        )
        _, label = connected_components(mat, directed=False)
        by_label: dict[int, list] = defaultdict(list)
        for i, r in enumerate(refs):
            if self.width(r) > 0:
                by_label[label[i]].append(r)
        order = {(c.layer, c.index): i for i, c in enumerate(self.calls)}
        groups = []
        for tensors in by_label.values():
            tensors.sort(key=lambda r: (order.get((r[0], r[1]), -1), r[2]))
            comps_all = np.concatenate([self.comp[self.ids(r)] for r in tensors])
            _, first = np.unique(comps_all, return_index=True)
            comps = comps_all[np.sort(first)]
            producers, members, consumers = [], [], []
            for r in tensors:
                name = r[0]
                kind = self.kinds.get(name)
                target = producers if kind in ("producer", "depthwise") else members
                if kind != "input" and name not in producers and name not in members:
                    target.append(name)
            for call in self.calls:
                if self.kinds.get(call.layer) == "producer" and call.inputs and call.inputs[0] in tensors:
                    if call.layer not in consumers:
                        consumers.append(call.layer)
            members = [m for m in members if m not in producers]
            groups.append(
                Group(
                    0,
                    producers,
                    members,
                    consumers,
                    int(comps.size),
                    tensors,
                    comps,
                    [self.comp_reason[c] if self.comp_frozen[c] else "" for c in comps],
                )
            )
        groups.sort(key=lambda g: order.get((g.tensors[0][0], g.tensors[0][1]), -1))
        for i, g in enumerate(groups):
            g.id = i
        self.groups: list[Group] = groups
        self.comp_group = np.zeros(self.n_comp, dtype=np.int64)
        for g in groups:
            self.comp_group[g.comps] = g.id

    # ---- queries used by the surgery
    def keep_indices(self, ref: TRef, comp_keep: np.ndarray) -> np.ndarray:
        """Channel indices of tensor `ref` that survive when components `comp_keep` are kept."""
        return np.nonzero(comp_keep[self.comp[self.ids(ref)]])[0]

    def __str__(self) -> str:
        lines = [
            f"ChannelGraph({self.flat.name}: {len(self.calls)} calls, {self.n_comp} channels, "
            f"{len(self.groups)} groups)"
        ]
        lines += [f"  [{g.id}] {g}" for g in self.groups]
        return "\n".join(lines)


def _propagate(g: ChannelGraph, *, masked: bool) -> dict[TRef, np.ndarray]:
    """Per-tensor constant channel values when the producers' kernels are zero (NaN = unknown)."""
    vals: dict[TRef, np.ndarray] = {}
    nan = np.nan
    for call in g.calls:
        rec = g.flat.layers[call.layer]
        outs = g.outs_of.get((call.layer, call.index), [])
        kind = g.kinds.get(rec.name, "frozen")
        h = rec.handler()
        if kind in ("frozen", "input") or not outs:
            for r in outs:
                vals[r] = np.full(g.width(r), nan)
            continue
        out = outs[0]
        ins = [vals[tuple(r)] for r in call.inputs]
        w = rec.weights()
        if masked and w and kind == "channelwise":
            w = h.zero_out(rec.config, w, np.arange(g.width(out)))
        if kind in ("producer", "depthwise"):
            v = h.out_const(rec.config, w, masked=masked)
        elif kind == "channelwise":
            v = (
                ins[0]
                if h.const_fn is None
                else np.asarray(h.const_fn(ins[0], rec.config, w), dtype=np.float64)
            )
        elif kind == "elementwise":
            v = _elementwise_const(
                rec.class_name,
                [x for x in ins if x.size == g.width(out)],
                any(x.size != g.width(out) for x in ins),
            )
        elif kind == "concat":
            if g._concat_on_channels(rec, call):
                v = np.concatenate(ins)
            else:
                v = (
                    ins[0]
                    if all(np.array_equal(ins[0], x, equal_nan=True) for x in ins)
                    else np.full(g.width(out), nan)
                )
                v = np.where(np.all([x == 0 for x in ins], axis=0), 0.0, v)
        elif kind == "flatten":
            v = np.tile(ins[0], g.width(out) // max(ins[0].size, 1))
        else:
            v = np.full(g.width(out), nan)
        vals[out] = np.asarray(v, dtype=np.float64).reshape(-1)
    return vals


def _elementwise_const(cls: str, xs: list[np.ndarray], has_broadcast: bool) -> np.ndarray:
    with np.errstate(all="ignore"):
        if cls == "Multiply":
            zero = np.any([x == 0 for x in xs], axis=0)
            v = np.prod(xs, axis=0) if not has_broadcast else np.full(xs[0].shape, np.nan)
            return np.where(zero, 0.0, v)
        if has_broadcast:
            return np.full(xs[0].shape, np.nan)
        if cls == "Add":
            return np.sum(xs, axis=0)
        if cls == "Subtract":
            return xs[0] - xs[1]
        if cls == "Average":
            return np.mean(xs, axis=0)
        if cls == "Maximum":
            return np.max(xs, axis=0)
        if cls == "Minimum":
            return np.min(xs, axis=0)
    return np.full(xs[0].shape, np.nan)


def build_graph(model, *, norms: dict | None = None, exclude=(), warn: bool = True) -> ChannelGraph:
    """Build the channel-dependency graph of a Keras model.

    Args:
        model: a functional or Sequential ``keras.Model`` (nested models are flattened).
        norms: optional ``{layer_name: per-output-channel array}`` replacing computed norms.
        exclude: layer names whose output channels are all kept.
        warn: log a warning naming the layers of unknown type (their channels are kept).

    Returns:
        The `ChannelGraph`; ``print(graph)`` lists its groups.

    Example:
        >>> g = build_graph(model)
        >>> print(g.groups[0])
        Group(conv1 -> bn1 -> relu1 | into conv2; 16 ch)
    """
    flat = flatten_model(model)
    unknown = [n for n in list(exclude) + list(norms or {}) if n not in flat.layers]
    if unknown:
        from asp_export.errors import unknown_name_error

        raise unknown_name_error("layer", unknown[0], flat.layers)
    graph = ChannelGraph(flat, norms=norms, exclude=exclude, warn=warn)
    not_producers = [n for n in (norms or {}) if graph.kinds.get(n) not in ("producer", "depthwise")]
    if not_producers:
        raise UserInputError(
            f"norms names layer {not_producers[0]!r}, which does not produce channels asp can remove "
            f"({graph.kinds.get(not_producers[0])}); give norms for Conv/Dense/Depthwise/Separable layers."
        )
    return graph
