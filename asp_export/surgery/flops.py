"""FLOPs and parameter counts of Keras models, per layer and per call.

Why a counter of our own: the pruning report compares dense and pruned models, so
the count must follow the functional graph exactly (shared layers once per call,
nested models recursed into) and give the same number for the same architecture on
every machine. It walks the flat functional graph of `asp_export.surgery.flatten` (the one
reader of a model's config graph, also used by surgery) and its shapes; nothing is executed.

Convention (stable; `report.json` and `bench.json` rely on it):

* ``macs`` counts the multiply-accumulates of the layers that multiply by weights:
  Conv1D/2D/3D (grouped too), Conv*Transpose, DepthwiseConv*, SeparableConv* and
  Dense. Per sample (batch 1), per call.
* ``flops = 2 * macs`` (one multiply + one add per MAC), for every layer and in total.
* Everything else counts 0: bias adds, BatchNormalization / LayerNormalization,
  activations, pooling, Add / Multiply / Concatenate, Flatten, Reshape, Dropout,
  padding. These are O(activations) rather than O(weights x activations), are folded
  or fused by ONNX Runtime and TFLite, and counting them would make our numbers
  disagree with the usual "FLOPs = 2 x MACs" tables. Note that the GASL/SSR papers'
  LeNet-5 "FLOPs" are multiply-adds, i.e. our ``macs``.
* ``params`` counts every weight once (trainable and not, e.g. BN moving statistics),
  so it equals ``model.count_params()``; a shared layer's weights are attributed to
  its first call.
* A layer type not listed here is counted as 0 MACs with a warning naming it; its
  weights are still counted in ``params``.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from asp_export.errors import UserInputError
from asp_export.surgery.flatten import flatten_model, leaves, resolve_shapes, topo_calls

log = logging.getLogger(__name__)

__all__ = ["FlopsReport", "LayerFlops", "count", "format_count"]


@dataclass(frozen=True)
class LayerFlops:
    """The cost of one call of one layer (a shared layer has one row per call)."""

    name: str
    class_name: str
    macs: int
    flops: int
    params: int
    output_shape: tuple[int, ...]  # per sample: the batch axis is dropped

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "class_name": self.class_name,
            "macs": self.macs,
            "flops": self.flops,
            "params": self.params,
            "output_shape": list(self.output_shape),
        }


@dataclass(frozen=True)
class FlopsReport:
    """Totals and per-layer rows of `count(model)`; `flops == 2 * macs`."""

    flops: int
    macs: int
    params: int
    trainable_params: int
    per_layer: list[LayerFlops] = field(default_factory=list)
    uncounted: tuple[str, ...] = ()  # names of layers of unknown type (counted as 0 MACs)

    def to_dict(self) -> dict:
        return {
            "flops": self.flops,
            "macs": self.macs,
            "params": self.params,
            "trainable_params": self.trainable_params,
            "per_layer": [row.to_dict() for row in self.per_layer],
            "uncounted": list(self.uncounted),
        }

    def table(self) -> str:
        """A plain-text table of the layers with nonzero cost, then the totals."""
        lines = [f"{'layer':<32} {'class':<22} {'output':<16} {'params':>10} {'FLOPs':>10}"]
        for row in self.per_layer:
            if row.macs or row.params:
                shape = "x".join(str(d) for d in row.output_shape)
                lines.append(
                    f"{row.name:<32} {row.class_name:<22} {shape:<16} "
                    f"{format_count(row.params):>10} {format_count(row.flops):>10}"
                )
        lines.append(
            f"total: {format_count(self.params)} params, {format_count(self.flops)} FLOPs ({self.macs} MACs)"
        )
        return "\n".join(lines)


def format_count(n: float) -> str:
    """Format a count with a K/M/G/T suffix and two decimals, e.g. 1234567 -> "1.23M".

    Example:
        >>> format_count(431080), format_count(999), format_count(2.5e9)
        ('431.08K', '999', '2.50G')
    """
    value = float(n)
    for suffix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{suffix}"
    return f"{value:.0f}"


# --------------------------------------------------------------------------- per-type MAC rules
# Each rule gets (layer, input_shapes, output_shapes), shapes per sample (no batch axis),
# and returns the MACs of one call.


def _channels_axis(layer) -> int:
    return 0 if getattr(layer, "data_format", "channels_last") == "channels_first" else -1


def _spatial(shape: tuple[int, ...], layer) -> tuple[int, ...]:
    return shape[1:] if _channels_axis(layer) == 0 else shape[:-1]


def _conv_macs(layer, ins, outs) -> int:
    axis = _channels_axis(layer)
    in_ch, out_ch = ins[0][axis], outs[0][axis]
    groups = int(getattr(layer, "groups", 1) or 1)
    return math.prod(_spatial(outs[0], layer)) * out_ch * math.prod(layer.kernel_size) * (in_ch // groups)


def _conv_transpose_macs(layer, ins, outs) -> int:
    # Every input pixel is multiplied by the whole kernel and scattered into the output
    # (padding="same" crops some of those products afterwards; they are still computed).
    axis = _channels_axis(layer)
    in_ch, out_ch = ins[0][axis], outs[0][axis]
    groups = int(getattr(layer, "groups", 1) or 1)
    return math.prod(_spatial(ins[0], layer)) * in_ch * math.prod(layer.kernel_size) * (out_ch // groups)


def _depthwise_macs(layer, ins, outs) -> int:
    out_ch = outs[0][_channels_axis(layer)]  # = in_channels * depth_multiplier
    return math.prod(_spatial(outs[0], layer)) * out_ch * math.prod(layer.kernel_size)


def _separable_macs(layer, ins, outs) -> int:
    axis = _channels_axis(layer)
    mid_ch = ins[0][axis] * int(layer.depth_multiplier)
    pixels = math.prod(_spatial(outs[0], layer))
    return pixels * mid_ch * math.prod(layer.kernel_size) + pixels * mid_ch * outs[0][axis]


def _dense_macs(layer, ins, outs) -> int:
    # Dense acts on the last axis; any leading axes (e.g. a sequence) repeat it.
    return math.prod(ins[0][:-1]) * ins[0][-1] * outs[0][-1]


def _zero(layer, ins, outs) -> int:
    return 0


# Layer types whose cost is O(activations): counted as 0 MACs by convention (module docstring).
# fmt: off
_ZERO_COST_LAYERS = (
    "InputLayer",
    # normalisation
    "BatchNormalization", "LayerNormalization", "GroupNormalization", "UnitNormalization",
    "RMSNormalization", "Normalization", "Rescaling",
    # activations
    "Activation", "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax",
    # pooling
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D",
    "AveragePooling3D", "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
    "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
    "AdaptiveAveragePooling1D", "AdaptiveAveragePooling2D", "AdaptiveAveragePooling3D",
    "AdaptiveMaxPooling1D", "AdaptiveMaxPooling2D", "AdaptiveMaxPooling3D",
    # merges
    "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate",
    # shape and regularisation
    "Flatten", "Reshape", "Permute", "RepeatVector", "Identity", "Masking",
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianDropout",
    "GaussianNoise", "AlphaDropout", "ActivityRegularization",
    "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D", "Cropping3D",
    "UpSampling1D", "UpSampling2D", "UpSampling3D", "Resizing", "CenterCrop",
)
# fmt: on


# keras.ops calls recorded in a functional graph (e.g. `x + y` on Keras tensors) are Operations,
# not layers; these are elementwise or shape ops, so they cost 0 MACs like their layer versions.
# Also two elementwise helper layers of keras.applications (ConvNeXt) that are not public classes.
# fmt: off
_ZERO_COST_OPS = frozenset({
    "Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Negative", "Abs", "Square", "Sqrt",
    "Maximum", "Minimum", "Mean", "Sum", "Max", "Min", "Reshape", "Transpose", "ExpandDims",
    "Squeeze", "Concatenate", "Stack", "GetItem", "Relu", "Relu6", "Sigmoid", "Softmax", "Gelu",
    "Silu", "Tanh", "Exp", "Log", "Cast", "Pad", "Clip", "Where", "BroadcastTo", "Tile",
    "LayerScale", "StochasticDepth",
})
# fmt: on


def _matmul_macs(op, ins, outs) -> int:
    # Each output element is a dot product over the first operand's last axis.
    return math.prod(outs[0]) * ins[0][-1]


def _rules() -> list[tuple[tuple[type, ...], Callable]]:
    """(layer classes, MAC rule), most specific first; classes missing from this Keras are skipped."""
    from keras import layers

    def classes(*names: str) -> tuple[type, ...]:
        return tuple(getattr(layers, name) for name in names if hasattr(layers, name))

    return [
        (classes("SeparableConv1D", "SeparableConv2D"), _separable_macs),
        (classes("DepthwiseConv1D", "DepthwiseConv2D"), _depthwise_macs),
        (classes("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"), _conv_transpose_macs),
        (classes("Conv1D", "Conv2D", "Conv3D"), _conv_macs),
        (classes("Dense"), _dense_macs),
        (classes(*_ZERO_COST_LAYERS), _zero),
    ]


# --------------------------------------------------------------------------- graph walk


def _per_sample(shape, where: str) -> tuple[int, ...]:
    dims = tuple(shape)[1:]
    if any(d is None for d in dims):
        raise UserInputError(
            f"{where} has an undefined size {tuple(shape)}; FLOPs depend on it. "
            "Build the model with a fixed input shape (e.g. keras.Input(shape=(32, 32, 3)))."
        )
    return tuple(int(d) for d in dims)


class _Counter:
    def __init__(self) -> None:
        self.rules = _rules()
        self.rows: list[LayerFlops] = []
        self.uncounted: list[str] = []
        self.seen_weights: set[int] = set()

    def _new_params(self, layer) -> int:
        total = 0
        for weight in getattr(layer, "weights", []):
            key = id(weight)
            if key not in self.seen_weights:
                self.seen_weights.add(key)
                total += math.prod(int(d) for d in weight.shape)
        return total

    def _rule(self, op) -> Callable | None:
        for classes, rule in self.rules:
            if classes and isinstance(op, classes):
                return rule
        kind = type(op).__name__
        if kind == "Matmul" and type(op).__module__.startswith("keras."):
            return _matmul_macs
        if kind in _ZERO_COST_OPS:
            return _zero
        return None

    def walk(self, model) -> None:
        flat = _flat_graph(model)
        _record_output_shapes(flat, model)
        shapes = resolve_shapes(flat, topo_calls(flat))
        # rows in the config's layer order (Keras' own order of the operations), calls in call order
        for call in [call for rec in flat.layers.values() for call in rec.calls]:
            rec = flat.layers[call.layer]
            op = rec.obj
            name = call.path or rec.name
            outs = [_per_sample(shapes[ref], f"output of layer {name!r}") for ref in _outputs(call, shapes)]
            in_refs = call.inputs + call.kw_inputs
            ins = [_per_sample(shapes[tuple(r)], f"input of layer {name!r}") for r in in_refs]
            rule = self._rule(op) if op is not None else None
            if rec.class_name == "InputLayer":
                rule = _zero
            if rule is None:
                if name not in self.uncounted:
                    self.uncounted.append(name)
                macs = 0
            else:
                macs = int(rule(op, ins, outs))
            self.rows.append(
                LayerFlops(
                    name=name,
                    class_name=type(op).__name__ if op is not None else rec.class_name,
                    macs=macs,
                    flops=2 * macs,
                    params=self._new_params(op),
                    output_shape=outs[0] if outs else (),
                )
            )


def _outputs(call, shapes: dict) -> list:
    """The output tensors of one call whose shapes are known, in output order."""
    refs = []
    while (ref := (call.layer, call.index, len(refs))) in shapes:
        refs.append(ref)
    return refs


def _record_output_shapes(flat, model) -> None:
    """Take the model outputs' shapes from `model.outputs` (the config records only consumed tensors').

    Inferring them instead fails for an op with a constant operand, e.g. `keras.ops.matmul(x, w)`.
    A dict of outputs is left to inference (`model.outputs` sorts its keys, the config does not).
    """
    refs = leaves(flat.outputs)
    tensors = list(getattr(model, "outputs", None) or [])
    if isinstance(flat.outputs, dict) or any(isinstance(o, dict) for o in flat.outputs):
        return
    if len(refs) == len(tensors):
        for ref, tensor in zip(refs, tensors, strict=True):
            flat.recorded_shapes.setdefault(ref, tuple(tensor.shape))


def _flat_graph(model):
    """The model's flat functional graph (surgery.flatten), refusing what has no graph to count."""
    import keras

    if isinstance(model, keras.Sequential):
        if not model.built:
            raise UserInputError(
                f"Sequential model {model.name!r} is not built; give its first layer an input shape "
                "or call `model.build(input_shape)` before counting FLOPs."
            )
    elif not isinstance(model, keras.Model) or not hasattr(model, "operations"):
        raise UserInputError(
            f"FLOPs can only be counted on functional or Sequential Keras models; got {type(model).__name__} "
            f"{getattr(model, 'name', '')!r}. Rebuild it with keras.Model(inputs, outputs)."
        )
    return flatten_model(model)


TOTALS = ("params", "flops", "macs")


def cost(model, keys: tuple[str, ...] = TOTALS) -> dict[str, int]:
    """`count(model)`'s totals as plain ints, in the order of `keys` (the shape reports store)."""
    report = count(model)
    return {key: int(getattr(report, key)) for key in keys}


def count(model) -> FlopsReport:
    """Count MACs, FLOPs (= 2 x MACs) and parameters of a Keras functional or Sequential model.

    Per sample, per call, from the shapes stored in the model's graph (nothing is run).
    See the module docstring for what counts.

    Args:
        model: A built `keras.Model` (functional or Sequential), possibly with nested models
            and shared layers.

    Returns:
        A `FlopsReport` with totals and one `LayerFlops` row per layer call (nested layers
        are named `outer/inner`).

    Raises:
        UserInputError: The model is a subclassed model, an unbuilt Sequential, or has an
            undefined (None) non-batch dimension.

    Example:
        >>> from asp_export.models import create_model
        >>> report = count(create_model("lenet5"))
        >>> report.macs, report.params
        (2293000, 431080)
    """
    counter = _Counter()
    counter.walk(model)
    if counter.uncounted:
        classes = {row.name: row.class_name for row in counter.rows}
        log.warning(
            "FLOPs: layers of a type asp does not know count as 0 MACs (their weights are counted): %s",
            ", ".join(f"{name} ({classes[name]})" for name in counter.uncounted),
        )
    macs = sum(row.macs for row in counter.rows)
    unique = {id(w): w for w in model.weights}
    params = sum(math.prod(int(d) for d in w.shape) for w in unique.values())
    trainable = {id(w): w for w in model.trainable_weights}
    trainable_params = sum(math.prod(int(d) for d in w.shape) for w in trainable.values())
    return FlopsReport(
        flops=2 * macs,
        macs=macs,
        params=params,
        trainable_params=trainable_params,
        per_layer=counter.rows,
        uncounted=tuple(counter.uncounted),
    )


# --------------------------------------------------------------------------- the zoo's costs


@dataclass(frozen=True)
class ModelCost:
    """One zoo model's size and cost at a given input shape (`error` set if it does not build there)."""

    name: str
    summary: str
    input_shape: tuple[int, ...]
    num_classes: int
    params: int | None
    flops: int | None
    macs: int | None
    error: str | None = None

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "summary": self.summary,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "params": self.params,
            "flops": self.flops,
            "macs": self.macs,
            "error": self.error,
        }


def _one_line(err: Exception) -> str:
    """The informative line of a Keras build error (Keras prefixes "Exception encountered ...")."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith("Exception encountered")]
    line = (useful or lines or [type(err).__name__])[0]
    return line if len(line) <= 160 else line[:157] + "..."


def zoo_costs(
    pattern: str = "*",
    *,
    input_shape: tuple[int, ...] | None = None,
    num_classes: int | None = None,
    include_tiny: bool = False,
) -> list[ModelCost]:
    """Build each matching zoo model and count its params and FLOPs (what `asp models` lists).

    Args:
        pattern: fnmatch pattern on model names, e.g. "resnet*".
        input_shape: (H, W, C) to build every model at; None uses each model's default.
        num_classes: classifier width; None uses each model's default.
        include_tiny: also list the `tiny_*` test networks.

    Returns:
        One `ModelCost` per model, sorted by name. A model that cannot be built at the given
        input shape (e.g. too small for its pooling) gets `error` set instead of counts.
    """
    from asp_export.models import create_model, get_model_entry, list_models

    names = [n for n in list_models(pattern) if include_tiny or not n.startswith("tiny_")]
    costs = []
    for name in names:
        entry = get_model_entry(name)
        shape = tuple(int(d) for d in input_shape) if input_shape is not None else entry.default_input_shape
        classes = num_classes if num_classes is not None else entry.default_num_classes
        try:
            model = create_model(name, input_shape=shape, num_classes=classes)
        except UserInputError:
            raise  # the shape or class count itself is invalid for every model
        except ValueError as err:  # Keras refuses e.g. pooling a 1x1 map
            log.debug("model %s does not build at %s: %s", name, shape, err)
            costs.append(ModelCost(name, entry.summary, shape, classes, None, None, None, _one_line(err)))
            continue
        report = count(model)
        costs.append(ModelCost(name, entry.summary, shape, classes, report.params, report.flops, report.macs))
        del model
    return costs


def zoo_table(costs: list[ModelCost]) -> str:
    """Render `zoo_costs()` as an aligned text table (name, input, params, FLOPs, summary)."""
    header = f"{'model':<18} {'input':<10} {'params':>9} {'FLOPs':>9}  summary"
    lines = [header, "-" * len(header)]
    for cost in costs:
        shape = "x".join(str(d) for d in cost.input_shape)
        if cost.error is not None:
            lines.append(
                f"{cost.name:<18} {shape:<10} {'-':>9} {'-':>9}  does not build at this input: {cost.error}"
            )
            continue
        params, flops = format_count(cost.params), format_count(cost.flops)
        lines.append(f"{cost.name:<18} {shape:<10} {params:>9} {flops:>9}  {cost.summary}")
    lines.append("FLOPs = 2 x multiply-accumulates of conv/dense layers, per image (docs/models.md).")
    return "\n".join(lines)
