"""A Keras functional or Sequential model, nested models included, as one flat graph.

Why: channel coupling (`asp_export.surgery.graph`), surgery (`asp_export.surgery`) and the FLOPs
counter (`asp_export.surgery.flops`) reason about one graph of layer calls. Keras stores a
functional model's graph in its config (``config["layers"][i]["inbound_nodes"]``), but a model
may nest other models (a backbone inside a classifier, a Sequential block inside a functional
one). Here every nested model's layers become layers of one flat functional model (`FlatModel`),
with tensor references (`TRef`) rewritten to point through the nesting; `FlatModel.to_config`
rebuilds an equivalent flat Keras model. A shared layer (called at several nodes) stays one
layer with several calls; each call keeps its nesting path (`Call.path`, "outer/inner/conv").
"""

from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from asp_export.errors import UnsupportedLayerError, UserInputError
from asp_export.surgery.layers import Handler, get_handler

__all__ = ["Call", "FlatModel", "LayerRec", "Ref", "TRef", "flatten_model", "leaves"]

TRef = tuple  # (flat layer name, call index, output index)
_MODEL_CLASSES = ("Functional", "Sequential", "Model")


@dataclass
class Ref:
    """A tensor reference inside a call's args, resolved to the flat graph."""

    ref: TRef
    shape: tuple | None = None
    dtype: str = "float32"


@dataclass
class Call:
    """One call (node) of a layer: its arguments with tensor references, in and out."""

    layer: str
    index: int
    args: Any
    kwargs: Any
    inputs: list  # list[TRef], args first
    kw_inputs: list  # list[TRef] found in kwargs
    path: str = ""  # the layer's name in its own model, behind the nesting path ("outer/inner/conv")


@dataclass
class LayerRec:
    """A layer of the flat model: its serialized entry, live object and calls."""

    name: str
    class_name: str
    entry: dict
    obj: Any
    calls: list = field(default_factory=list)
    _weights: list | None = None

    @property
    def config(self) -> dict:
        return self.entry["config"]

    def handler(self) -> Handler | None:
        """This layer's entry in `asp_export.surgery.layers` (None: unknown type)."""
        return get_handler(self.class_name, self.entry.get("module"))

    def weights(self) -> list:
        if self._weights is None:
            get = getattr(self.obj, "get_weights", None)  # ops (`a + b`) have no weights
            self._weights = [np.asarray(w) for w in get()] if get is not None else []
        return self._weights


@dataclass
class FlatModel:
    """A model as one flat functional graph: nested models inlined, Sequential chained."""

    name: str
    layers: dict  # name -> LayerRec, in creation order
    inputs: Any  # structure of TRef leaves (as in config["input_layers"])
    outputs: Any  # structure of TRef leaves (as in config["output_layers"])
    recorded_shapes: dict  # TRef -> shape seen in the config
    nested: list  # names of nested models that were inlined

    def to_config(self, shapes: dict, layer_configs: dict | None = None) -> dict:
        """A functional-model config of this graph (shapes: TRef -> shape to write)."""
        layer_configs = layer_configs or {}
        layers = []
        for rec in self.layers.values():
            entry = {k: v for k, v in rec.entry.items() if k not in ("build_config", "inbound_nodes")}
            entry["name"] = rec.name
            cfg = copy.deepcopy(layer_configs.get(rec.name, rec.config))
            cfg["name"] = rec.name
            entry["config"] = cfg
            entry["inbound_nodes"] = (
                [
                    {"args": _serialize(c.args, shapes), "kwargs": _serialize(c.kwargs, shapes)}
                    for c in rec.calls
                ]
                if rec.class_name != "InputLayer"
                else []
            )
            layers.append(entry)
        return {
            "name": self.name,
            "trainable": True,
            "layers": layers,
            "input_layers": _map_leaves(self.inputs, list),
            "output_layers": _map_leaves(self.outputs, list),
        }


def _is_ref_list(x) -> bool:
    return isinstance(x, (list, tuple)) and len(x) == 3 and isinstance(x[0], str) and isinstance(x[1], int)


def _map_leaves(struct, fn):
    if _is_ref_list(struct):
        return fn(struct)
    if isinstance(struct, dict):
        return {k: _map_leaves(v, fn) for k, v in struct.items()}
    return [_map_leaves(v, fn) for v in struct]


def leaves(struct) -> list:
    out: list = []
    _map_leaves(struct, lambda r: out.append(tuple(r)) or r)
    return out


def _serialize(obj, shapes: dict):
    if isinstance(obj, Ref):
        shape = shapes.get(obj.ref, obj.shape)
        return {
            "class_name": "__keras_tensor__",
            "config": {
                "shape": list(shape) if shape is not None else None,
                "dtype": obj.dtype,
                "keras_history": list(obj.ref),
            },
        }
    if isinstance(obj, dict):
        return {k: _serialize(v, shapes) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_serialize(v, shapes) for v in obj]
    return obj


def _is_tensor_cfg(x) -> bool:
    return isinstance(x, dict) and x.get("class_name") == "__keras_tensor__"


def _sequential_as_functional(cfg: dict, model) -> dict:
    """Give a Sequential config the inbound_nodes of the equivalent functional chain."""
    layers = [copy.copy(e) for e in cfg["layers"]]
    for e in layers:
        e.setdefault("name", e["config"]["name"])
    if not layers or layers[0]["class_name"] != "InputLayer":
        shape = None
        try:
            shape = tuple(model.inputs[0].shape)
        except (AttributeError, IndexError, TypeError, ValueError):
            build = cfg.get("build_input_shape")
            shape = tuple(build) if build else None
        if shape is None:
            raise UserInputError(
                f"Sequential model {model.name!r} has no input shape; build it first "
                "(add keras.Input(shape=...) or call model.build(input_shape))."
            )
        name = f"{cfg.get('name', 'sequential')}_input"
        layers.insert(
            0,
            {
                "module": "keras.layers",
                "class_name": "InputLayer",
                "config": {"batch_shape": list(shape), "dtype": "float32", "name": name, "sparse": False},
                "registered_name": None,
                "name": name,
            },
        )
    prev = None
    for e in layers:
        if e["class_name"] == "InputLayer":
            e["inbound_nodes"] = []
        else:
            e["inbound_nodes"] = [
                {
                    "args": [
                        {
                            "class_name": "__keras_tensor__",
                            "config": {"shape": None, "dtype": "float32", "keras_history": [prev, 0, 0]},
                        }
                    ],
                    "kwargs": {},
                }
            ]
        prev = e["name"]
    return {
        "name": cfg.get("name", model.name),
        "layers": layers,
        "input_layers": [layers[0]["name"], 0, 0],
        "output_layers": [prev, 0, 0],
    }


class _Flattener:
    def __init__(self, model) -> None:
        self.layers: dict[str, LayerRec] = {}
        self.by_obj: dict[int, str] = {}
        self.recorded: dict[TRef, tuple] = {}
        self.nested: list[str] = []
        self.model = model

    def unique(self, name: str, prefix: str) -> str:
        if name not in self.layers:
            return name
        base = f"{prefix}_{name}" if prefix else name
        cand, i = base, 1
        while cand in self.layers:
            cand, i = f"{base}_{i}", i + 1
        return cand

    def expand(self, cfg: dict, container, outer_inputs: list | None, prefix: str, path: str = ""):
        """Inline one (call of a) functional config; returns its outputs as flat refs.

        `path` is the nesting path of this config's layers ("" at the top, then "outer/").
        """
        layer_entries = cfg["layers"]
        input_names = [r[0] for r in leaves(cfg["input_layers"])]
        name_map: dict[str, str] = {}
        base: dict[str, int] = {}
        nested_cfg: dict[str, tuple] = {}
        nested_out: dict[tuple, list] = {}
        input_map: dict[str, TRef] = {}

        for entry in layer_entries:
            lname = entry.get("name", entry["config"].get("name"))
            cls = entry["class_name"]
            if cls == "InputLayer":
                if outer_inputs is not None:
                    if lname not in input_names:
                        raise UnsupportedLayerError(f"Nested model {prefix!r} has an unused input {lname!r}.")
                    input_map[lname] = outer_inputs[input_names.index(lname)]
                    continue
                flat = self.unique(lname, prefix)
                self.layers[flat] = LayerRec(flat, cls, entry, None)
                name_map[lname], base[lname] = flat, 0
                continue
            obj = _get_layer(container, lname)
            if cls in _MODEL_CLASSES and "layers" in entry["config"]:
                sub_cfg = entry["config"]
                if cls == "Sequential":
                    sub_cfg = _sequential_as_functional(sub_cfg, obj)
                nested_cfg[lname] = (sub_cfg, obj, entry.get("inbound_nodes", []), cls)
                self.nested.append(lname)
                continue
            key = id(obj) if obj is not None else id(entry)
            if key in self.by_obj:
                flat = self.by_obj[key]
            else:
                flat = self.unique(lname, prefix)
                self.layers[flat] = LayerRec(flat, cls, entry, obj)
                self.by_obj[key] = flat
            name_map[lname], base[lname] = flat, len(self.layers[flat].calls)

        def resolve_output(hist) -> TRef:
            # Keras numbers a nested functional model's calls from 1 in `output_layers` (its node 0 is
            # the one linking its own inputs to outputs) but from 0 in the layers' inbound_nodes.
            lname, k, t = hist
            if lname in nested_cfg and nested_cfg[lname][3] != "Sequential":
                k -= 1
            return resolve((lname, k, t))

        def resolve(hist) -> TRef:
            lname, k, t = hist
            if lname in input_map:
                return input_map[lname]
            if lname in nested_cfg:
                if (lname, k) not in nested_out:
                    sub_cfg, obj, nodes, _ = nested_cfg[lname]
                    _, ins, _ = self.convert_node(nodes[k], resolve)
                    nested_out[(lname, k)] = self.expand(sub_cfg, obj, ins, lname, f"{path}{lname}/")
                return nested_out[(lname, k)][t]
            if lname not in name_map:
                raise UnsupportedLayerError(f"Model config refers to an unknown layer {lname!r}.")
            return (name_map[lname], base[lname] + k, t)

        for entry in layer_entries:
            lname = entry.get("name", entry["config"].get("name"))
            if lname not in name_map or entry["class_name"] == "InputLayer":
                continue
            rec = self.layers[name_map[lname]]
            for node in entry.get("inbound_nodes", []):
                args, ins, kw = self.convert_node(node, resolve)
                rec.calls.append(
                    Call(rec.name, len(rec.calls), args[0], args[1], ins, kw, path=f"{path}{lname}")
                )
        if outer_inputs is None:
            self.top_resolve = resolve_output
        for lname in nested_cfg:  # nested models whose outputs nobody consumed still run
            for k in range(len(nested_cfg[lname][2])):
                resolve((lname, k, 0))
        return [resolve_output(r) for r in leaves(cfg["output_layers"])]

    def convert_node(self, node, resolve):
        if isinstance(node, list):  # legacy format: [[name, k, t, kwargs], ...]
            node = {
                "args": [
                    [{"class_name": "__keras_tensor__", "config": {"keras_history": n[:3]}} for n in node]
                ],
                "kwargs": node[0][3] if node and len(node[0]) > 3 else {},
            }
        found: list[TRef] = []

        def conv(x):
            if _is_tensor_cfg(x):
                c = x["config"]
                ref = resolve(c["keras_history"])
                shape = tuple(c["shape"]) if c.get("shape") is not None else None
                if shape is not None:
                    self.recorded.setdefault(ref, shape)
                found.append(ref)
                return Ref(ref, shape, c.get("dtype") or "float32")
            if isinstance(x, dict):
                return {k: conv(v) for k, v in x.items()}
            if isinstance(x, (list, tuple)):
                return [conv(v) for v in x]
            return x

        args = conv(node.get("args", []))
        n_args = len(found)
        kwargs = conv(node.get("kwargs", {}))
        return (args, kwargs), found[:n_args], found[n_args:]


def _get_layer(container, name: str):
    try:
        return container.get_layer(name)
    except (ValueError, AttributeError):
        pass
    # Keras ops used in a functional model (`a + b`) are operations, not layers
    for op in getattr(container, "operations", []):
        if op.name == name:
            return op
    return None


def flatten_model(model) -> FlatModel:
    """Read a Keras functional or Sequential model into one flat functional graph.

    Args:
        model: a built ``keras.Model`` (functional or Sequential, possibly nesting models).

    Returns:
        The `FlatModel`; its ``to_config`` rebuilds an equivalent flat model.

    Raises:
        UserInputError: an unbuilt Sequential model.
        UnsupportedLayerError: a subclassed model (no functional config to read).
    """
    import keras

    cfg = model.get_config()
    if isinstance(model, keras.Sequential):
        cfg = _sequential_as_functional(cfg, model)
    if not isinstance(cfg, dict) or "layers" not in cfg or "output_layers" not in cfg:
        raise UnsupportedLayerError(
            f"Model {model.name!r} ({type(model).__name__}) is a subclassed model without a functional "
            "config; asp can only rewrite functional or Sequential models."
        )
    fl = _Flattener(model)
    fl.expand(cfg, model, None, "")

    # The top level keeps its input/output structure (single tensor, list or dict).
    def map_top(struct):
        return _map_leaves(struct, lambda r: list(fl.top_resolve(tuple(r))))

    return FlatModel(
        name=cfg.get("name", model.name),
        layers=fl.layers,
        inputs=map_top(cfg["input_layers"]),
        outputs=map_top(cfg["output_layers"]),
        recorded_shapes=fl.recorded,
        nested=fl.nested,
    )


# --- order and shapes of the flat graph (used by the channel graph) -----------------------------


def channel_width(shape) -> int:
    """Channels of a tensor shape (its last axis); 1 for a scalar-per-sample, 0 when unknown."""
    if shape is None or len(shape) < 2:
        return 1
    return int(shape[-1]) if shape[-1] is not None else 0


def topo_calls(flat: FlatModel) -> list[Call]:
    """Every layer call in dependency order, the model inputs first."""
    calls = [c for rec in flat.layers.values() for c in rec.calls]
    inputs_present = {tuple(r) for r in leaves(flat.inputs)}
    key = {(c.layer, c.index): c for c in calls}
    deps = {
        k: {(r[0], r[1]) for r in c.inputs + c.kw_inputs if tuple(r) not in inputs_present}
        for k, c in key.items()
    }
    for k, d in deps.items():
        missing = [x for x in d if x not in key]
        if missing:
            raise UnsupportedLayerError(f"Layer call {k} reads from unknown layer call(s) {missing}.")
    users = defaultdict(list)
    for k, d in deps.items():
        for x in d:
            users[x].append(k)
    ready = [k for k in key if not deps[k]]
    order, remaining = [], {k: len(d) for k, d in deps.items()}
    while ready:
        k = ready.pop(0)
        order.append(key[k])
        for u in users[k]:
            remaining[u] -= 1
            if remaining[u] == 0:
                ready.append(u)
    if len(order) != len(calls):
        raise UnsupportedLayerError("The model graph has a cycle; asp cannot order its layers.")
    input_layers = [flat.layers[r[0]] for r in leaves(flat.inputs)]
    for rec in input_layers:  # InputLayers have no calls; represent them as call 0
        if not rec.calls:
            rec.calls.append(Call(rec.name, 0, [], {}, [], [], path=rec.name))
    return [flat.layers[r[0]].calls[0] for r in leaves(flat.inputs)] + order


def resolve_shapes(flat: FlatModel, calls: list[Call]) -> dict[TRef, tuple]:
    """The shape of every tensor: recorded in the config where Keras kept it, else inferred symbolically."""
    recorded = flat.recorded_shapes
    used = defaultdict(int)
    for c in calls:
        for r in c.inputs + c.kw_inputs:
            used[(r[0], r[1])] = max(used[(r[0], r[1])], r[2] + 1)
    for r in leaves(flat.outputs):
        used[(r[0], r[1])] = max(used[(r[0], r[1])], r[2] + 1)
    shapes: dict[TRef, tuple] = {}
    for c in calls:
        rec = flat.layers[c.layer]
        n_out = max(used[(c.layer, c.index)], 1)
        refs = [(c.layer, c.index, t) for t in range(n_out)]
        if rec.class_name == "InputLayer":
            cfg = rec.config
            shape = cfg.get("batch_shape") or cfg.get("batch_input_shape")
            shapes[refs[0]] = tuple(shape)
            continue
        if all(r in recorded for r in refs):
            for r in refs:
                shapes[r] = tuple(recorded[r])
            continue
        try:
            out_list = _symbolic_output_shapes(rec, c, shapes)
        except Exception as err:  # noqa: BLE001 - any failure means: we cannot know the shape
            raise UnsupportedLayerError(
                f"Cannot infer the output shape of layer {rec.name!r} ({rec.class_name}): {err}"
            ) from None
        for r, s in zip(refs, out_list, strict=False):
            shapes[r] = tuple(recorded.get(r, s))
    return shapes


def _symbolic_output_shapes(rec: LayerRec, call: Call, shapes: dict) -> list[tuple]:
    """Output shapes of one call, from the layer/op's own shape inference on symbolic inputs."""
    import keras

    def symbolic(x):
        if isinstance(x, Ref):
            return keras.KerasTensor(shapes[x.ref], dtype=x.dtype)
        if isinstance(x, dict):
            return {k: symbolic(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [symbolic(v) for v in x]
        return x

    out = rec.obj.compute_output_spec(*symbolic(call.args), **symbolic(call.kwargs))
    return [tuple(t.shape) for t in keras.tree.flatten(out)]
