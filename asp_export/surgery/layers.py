"""Per-layer-type handlers: how a Keras layer couples, measures and cuts channels.

Why a table: the dependency graph (`asp_export.surgery.graph`) only needs to know, for each
layer class, *how* its channels relate (a producer of new channels, a per-channel
pass-through, an element-wise op, a concatenation, ...), and the surgery
(`asp_export.surgery`) only needs to know *where* the channel axes of its weights
are. Keeping both in one table keyed by class name (like Torch-Pruning's
`function.py` pruners or TF-MOT's prune registry) means supporting a new layer type is
one entry, and a layer type that is not in the table is never guessed at: the graph
freezes its channels.

Every handler works on plain data: the layer's config dict and its list of numpy
weights (`layer.get_weights()` order), so the same code slices, masks and measures.

Kinds (``Handler.kind``):

* ``producer``  -- makes a new channel space (Conv*, Dense, SeparableConv*,
  Conv*Transpose): output channels come from the kernel's output axis, input
  channels index the kernel's input axis.
* ``depthwise`` -- DepthwiseConv*: output channel ``c*m+j`` comes only from input
  channel ``c`` (``m`` = depth_multiplier), so input and output are coupled, and the
  kernel also measures the channel (it is a producer too).
* ``channelwise`` -- one input, one output, channel ``c`` in gives channel ``c`` out
  (BatchNormalization, activations, Dropout, pooling, padding, ...); may own
  per-channel weights (BN's gamma/beta/mean/variance, PReLU's alpha).
* ``elementwise`` -- Add, Subtract, Multiply, Average, Maximum, Minimum.
* ``concat``    -- Concatenate (channel offsets when along the channel axis).
* ``flatten`` / ``reshape`` -- channel-last index arithmetic.
* ``input``     -- the model's InputLayer.
* ``frozen``    -- known, but removing a channel is not exact (LayerNormalization
  over channels mixes them, Softmax, grouped convolutions, ...): the graph keeps
  every channel that flows through it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from asp_export._keras_private import LAYER_MODULES, OP_MODULES, PUBLIC_LAYER_MODULES

log = logging.getLogger(__name__)

__all__ = ["HANDLERS", "OP_HANDLERS", "Handler", "activation_fn", "get_handler"]

Weights = list  # list[np.ndarray] in `layer.get_weights()` order


# --------------------------------------------------------------------------- activations
# f(x) for the activations a channel's constant value can pass through. We only need them
# on small numpy vectors (one value per channel), so they are written in numpy; a name not
# listed here makes the constant unknown (NaN), which is always safe (the channel is kept).
def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _gelu(x):
    from math import erf

    return 0.5 * x * (1.0 + np.vectorize(erf)(x / math.sqrt(2.0)))


_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0.0),
    "relu6": lambda x: np.clip(x, 0.0, 6.0),
    "leaky_relu": lambda x: np.where(x >= 0, x, 0.2 * x),
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
    "selu": lambda x: (
        1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * np.expm1(np.minimum(x, 0.0)))
    ),
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
    "hard_sigmoid": lambda x: np.clip(x / 6.0 + 0.5, 0.0, 1.0),
    "silu": lambda x: x * _sigmoid(x),
    "swish": lambda x: x * _sigmoid(x),
    "hard_silu": lambda x: x * np.clip(x / 6.0 + 0.5, 0.0, 1.0),
    "hard_swish": lambda x: x * np.clip(x / 6.0 + 0.5, 0.0, 1.0),
    "gelu": _gelu,
    "softplus": lambda x: np.logaddexp(0.0, x),
    "softsign": lambda x: x / (1.0 + np.abs(x)),
    "exponential": np.exp,
    "mish": lambda x: x * np.tanh(np.logaddexp(0.0, x)),
}


def activation_fn(spec) -> Callable[[np.ndarray], np.ndarray] | None:
    """Numpy version of a Keras activation given its config value; None if unknown."""
    if spec is None:
        return _ACTIVATIONS["linear"]
    if isinstance(spec, dict):  # serialized built-in activation
        spec = spec.get("config", spec.get("class_name"))
        if isinstance(spec, dict):
            spec = spec.get("name")
    if isinstance(spec, str):
        return _ACTIVATIONS.get(spec.lower())
    return None


def _apply_act(fn, x: np.ndarray) -> np.ndarray:
    if fn is None:
        return np.full_like(x, np.nan)
    with np.errstate(all="ignore"):
        out = np.asarray(fn(np.nan_to_num(x)), dtype=np.float64)
    out[np.isnan(x)] = np.nan
    return out


# ------------------------------------------------------------------------------ handler
@dataclass(frozen=True)
class Handler:
    """How one layer class couples and cuts channels.

    Attributes:
        kind: see the module docstring.
        out_axis / in_axis: the kernel's output- and input-channel axes (producers).
        frozen_reason: for ``frozen`` handlers, why channels cannot be removed.
    """

    kind: str
    out_axis: int = -1
    in_axis: int = -2
    frozen_reason: str = ""
    # channelwise: f(const_in, cfg, weights) -> const_out; None = identity
    const_fn: Callable | None = None
    # channelwise layers with per-channel weights: which weight indices have a channel axis last
    channel_weights: Callable[[dict, Weights], Sequence[int]] | None = None
    extra: dict = field(default_factory=dict)

    # ---- queries
    def freeze_reason(self, cfg: dict, rank: int = 4) -> str:
        """Why this configured layer freezes its channels ('' if it does not).

        Args:
            cfg: the layer's config.
            rank: rank of its (first) input tensor, batch axis included.
        """
        if self.kind == "frozen":
            return self.frozen_reason
        if self.kind != "producer" and "activation" in cfg and activation_fn(cfg["activation"]) is None:
            return f"activation {cfg['activation']!r} is not a known element-wise function"
        if cfg.get("data_format", "channels_last") == "channels_first":
            return "data_format='channels_first' (asp cuts the last axis only)"
        if self.kind == "producer" and int(cfg.get("groups", 1) or 1) > 1:
            return f"grouped convolution (groups={cfg['groups']})"
        if self.kind == "channelwise" and self.extra.get("axis_checked"):
            axis = cfg.get("axis", -1)
            if isinstance(axis, (list, tuple)):
                axis = axis[0] if len(axis) == 1 else None
            if axis not in (-1, rank - 1):
                return f"normalizes over axis {cfg.get('axis')!r}, not the channel axis"
        return ""

    def out_channels(self, cfg: dict, weights: Weights) -> int:
        """Number of output channels of a producer / depthwise layer."""
        if self.kind == "depthwise":
            return weights[0].shape[-2] * weights[0].shape[-1]
        return weights[self._out_kernel_index()].shape[self.out_axis]

    def in_channels(self, cfg: dict, weights: Weights) -> int:
        """Number of input channels a producer / depthwise layer consumes."""
        return (
            weights[0].shape[-2]
            if self.kind == "depthwise" or self.extra.get("separable")
            else (weights[0].shape[self.in_axis])
        )

    def _out_kernel_index(self) -> int:
        return 1 if self.extra.get("separable") else 0

    def _bias_index(self, cfg: dict) -> int | None:
        if not cfg.get("use_bias", False):
            return None
        return 2 if self.extra.get("separable") else 1

    def norms(self, cfg: dict, weights: Weights) -> np.ndarray:
        """L2 norm of the weights that produce each output channel."""
        if self.kind == "depthwise":
            k = weights[0]  # (..., C, m): channel c*m+j is produced by k[..., c, :] (all m together)
            per_c = np.sqrt(np.sum(np.square(k.reshape(-1, k.shape[-2], k.shape[-1])), axis=(0, 2)))
            return np.repeat(per_c, k.shape[-1])
        k = np.moveaxis(weights[self._out_kernel_index()], self.out_axis, -1)
        k = k.reshape(-1, k.shape[-1])
        return np.sqrt(np.einsum("ij,ij->j", k, k).astype(np.float64))

    def out_const(self, cfg: dict, weights: Weights, *, masked: bool = False) -> np.ndarray:
        """Each output channel's value when its kernel slice is zero: activation(bias).

        With `masked`, the bias is taken as zero too (what `surgery.mask` does).
        """
        n = self.out_channels(cfg, weights)
        bi = self._bias_index(cfg)
        bias = np.zeros(n) if bi is None or masked else weights[bi].astype(np.float64)
        return _apply_act(activation_fn(cfg.get("activation", "linear")), bias)

    # ---- cutting
    def slice_out(self, cfg: dict, weights: Weights, keep: np.ndarray) -> Weights:
        """Keep only output channels `keep` (producer/depthwise) or channels `keep` (channelwise)."""
        w = list(weights)
        if self.kind == "depthwise":
            m = w[0].shape[-1]
            in_keep = np.unique(keep // m)
            w[0] = w[0][..., in_keep, :]
        elif self.kind == "producer":
            i = self._out_kernel_index()
            w[i] = np.take(w[i], keep, axis=self.out_axis)
        elif self.kind == "channelwise" and self.channel_weights is not None:
            for i in self.channel_weights(cfg, w):
                w[i] = w[i][..., keep]
            return w
        else:
            return w
        bi = self._bias_index(cfg)
        if bi is not None:
            w[bi] = w[bi][keep]
        return w

    def slice_in(self, cfg: dict, weights: Weights, keep: np.ndarray) -> Weights:
        """Keep only input channels `keep` of a producer layer (kernel input axis)."""
        w = list(weights)
        if self.kind != "producer":
            return w
        if self.extra.get("separable"):
            m = w[0].shape[-1]
            w[0] = w[0][..., keep, :]
            rows = (keep[:, None] * m + np.arange(m)[None, :]).reshape(-1)
            w[1] = np.take(w[1], rows, axis=-2)
            return w
        w[0] = np.take(w[0], keep, axis=self.in_axis)
        return w

    def zero_out(self, cfg: dict, weights: Weights, drop: np.ndarray) -> Weights:
        """Force output channels `drop` to zero (the 'masked' model of the test oracle)."""
        w = [np.array(x, copy=True) for x in weights]
        if self.kind == "depthwise":
            m = w[0].shape[-1]
            w[0][..., drop // m, drop % m] = 0.0
        elif self.kind == "producer":
            i = self._out_kernel_index()
            idx = [slice(None)] * w[i].ndim
            idx[self.out_axis] = drop
            w[i][tuple(idx)] = 0.0
        elif self.kind == "channelwise" and self.extra.get("mask") is not None:
            return self.extra["mask"](cfg, w, drop)
        else:
            return w
        bi = self._bias_index(cfg)
        if bi is not None:
            w[bi][drop] = 0.0
        return w

    def set_out_channels(self, cfg: dict, n: int) -> dict:
        """Config with the new number of output channels (filters / units)."""
        cfg = dict(cfg)
        if "filters" in cfg:
            cfg["filters"] = int(n)
        elif "units" in cfg:
            cfg["units"] = int(n)
        return cfg


# ----------------------------------------------------------------- channelwise helpers
def bn_parts(cfg: dict, w: Weights) -> tuple[int | None, int | None, int, int]:
    i = 0
    gamma = beta = None
    if cfg.get("scale", True):
        gamma, i = i, i + 1
    if cfg.get("center", True):
        beta, i = i, i + 1
    return gamma, beta, i, i + 1


def _bn_const(x: np.ndarray, cfg: dict, w: Weights) -> np.ndarray:
    g, b, m, v = bn_parts(cfg, w)
    gamma = w[g].astype(np.float64) if g is not None else 1.0
    beta = w[b].astype(np.float64) if b is not None else 0.0
    mean, var = w[m].astype(np.float64), w[v].astype(np.float64)
    with np.errstate(all="ignore"):
        out = gamma * (x - mean) / np.sqrt(var + float(cfg.get("epsilon", 1e-3))) + beta
    # 0 * anything is 0 even when the input is unknown: a zeroed gamma silences the channel
    if g is not None:
        out = np.where((np.asarray(gamma) == 0) & np.isnan(x), beta if b is not None else 0.0, out)
    return out


def _bn_mask(cfg: dict, w: Weights, drop: np.ndarray) -> Weights:
    g, b, m, _ = bn_parts(cfg, w)
    if g is not None:
        w[g][drop] = 0.0
    else:  # no gamma: output (x - mean)/std; zero mean so a zero input stays zero
        w[m][drop] = 0.0
    if b is not None:
        w[b][drop] = 0.0
    return w


def _bn_channel_weights(cfg: dict, w: Weights) -> Sequence[int]:
    return range(len(w))


def _prelu_channel_weights(cfg: dict, w: Weights) -> Sequence[int]:
    return [0] if w and w[0].shape[-1] > 1 else []


def _prelu_const(x: np.ndarray, cfg: dict, w: Weights) -> np.ndarray:
    alpha = w[0].reshape(-1, w[0].shape[-1]).astype(np.float64)
    if alpha.shape[0] != 1:  # alpha varies over space: the output is not a per-channel constant
        return np.where(x == 0, 0.0, np.nan)
    return np.where(x >= 0, x, alpha[0] * x)


def _activation_const(x, cfg, w):
    return _apply_act(activation_fn(cfg.get("activation")), x)


def _relu_const(x, cfg, w):
    max_value = cfg.get("max_value")
    slope = float(cfg.get("negative_slope", 0.0) or 0.0)
    threshold = float(cfg.get("threshold", 0.0) or 0.0)
    with np.errstate(invalid="ignore"):
        out = np.where(x >= threshold, x, slope * (x - threshold))
        if max_value is not None:
            out = np.minimum(out, float(max_value))
    return out


def _leaky_const(x, cfg, w):
    slope = float(cfg.get("negative_slope", cfg.get("alpha", 0.3)))
    return np.where(x >= 0, x, slope * x)


def _elu_const(x, cfg, w):
    alpha = float(cfg.get("alpha", 1.0))
    with np.errstate(all="ignore"):
        return np.where(x > 0, x, alpha * np.expm1(np.minimum(np.nan_to_num(x), 0.0)))


def _zero_pad_const(x, cfg, w):
    # Border cells are 0, the rest keep the value: constant only if the value is 0. Values within
    # float noise of 0 (a BN that maps a dead channel to ~1e-9) count as that constant.
    return np.where(np.abs(x) <= 1e-6, x, np.nan)


def _rescaling_const(x, cfg, w):
    scale, offset = cfg.get("scale", 1.0), cfg.get("offset", 0.0)
    if not isinstance(scale, (int, float)) or not isinstance(offset, (int, float)):
        return np.full_like(x, np.nan)
    return x * float(scale) + float(offset)


# ------------------------------------------------------------------------------- table
_PRODUCER = Handler("producer")
_TRANSPOSE = Handler("producer", out_axis=-2, in_axis=-1)
_SEPARABLE = Handler("producer", extra={"separable": True})
_DEPTHWISE = Handler("depthwise")
_IDENTITY = Handler("channelwise")
_ZERO_PAD = Handler("channelwise", const_fn=_zero_pad_const)

HANDLERS: dict[str, Handler] = {
    "InputLayer": Handler("input"),
    # producers of new channels
    "Conv1D": _PRODUCER,
    "Conv2D": _PRODUCER,
    "Conv3D": _PRODUCER,
    "Dense": _PRODUCER,
    "Conv1DTranspose": _TRANSPOSE,
    "Conv2DTranspose": _TRANSPOSE,
    "Conv3DTranspose": _TRANSPOSE,
    "SeparableConv1D": _SEPARABLE,
    "SeparableConv2D": _SEPARABLE,
    "DepthwiseConv1D": _DEPTHWISE,
    "DepthwiseConv2D": _DEPTHWISE,
    # per-channel with weights
    "BatchNormalization": Handler(
        "channelwise",
        const_fn=_bn_const,
        channel_weights=_bn_channel_weights,
        extra={"mask": _bn_mask, "axis_checked": True},
    ),
    "PReLU": Handler("channelwise", const_fn=_prelu_const, channel_weights=_prelu_channel_weights),
    # activations
    "Activation": Handler("channelwise", const_fn=_activation_const),
    "ReLU": Handler("channelwise", const_fn=_relu_const),
    "LeakyReLU": Handler("channelwise", const_fn=_leaky_const),
    "ELU": Handler("channelwise", const_fn=_elu_const),
    # shape-only, per channel
    **{
        name: _IDENTITY
        for name in (
            "Dropout",
            "SpatialDropout1D",
            "SpatialDropout2D",
            "SpatialDropout3D",
            "GaussianNoise",
            "GaussianDropout",
            "AlphaDropout",
            "ActivityRegularization",
            "Identity",
            "MaxPooling1D",
            "MaxPooling2D",
            "MaxPooling3D",
            "AveragePooling1D",
            "AveragePooling2D",
            "AveragePooling3D",
            "GlobalAveragePooling1D",
            "GlobalAveragePooling2D",
            "GlobalAveragePooling3D",
            "GlobalMaxPooling1D",
            "GlobalMaxPooling2D",
            "GlobalMaxPooling3D",
            "Cropping1D",
            "Cropping2D",
            "Cropping3D",
            "UpSampling1D",
            "UpSampling2D",
            "UpSampling3D",
        )
    },
    "ZeroPadding1D": _ZERO_PAD,
    "ZeroPadding2D": _ZERO_PAD,
    "ZeroPadding3D": _ZERO_PAD,
    "Rescaling": Handler("channelwise", const_fn=_rescaling_const),
    # element-wise and concatenation
    **{
        name: Handler("elementwise")
        for name in ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")
    },
    "Concatenate": Handler("concat"),
    "Flatten": Handler("flatten"),
    "Reshape": Handler("reshape"),
    # known, but channels cannot be removed exactly
    "LayerNormalization": Handler(
        "frozen",
        frozen_reason="LayerNormalization normalizes across channels; removing one changes the others",
    ),
    "GroupNormalization": Handler("frozen", frozen_reason="GroupNormalization mixes channels within groups"),
    "UnitNormalization": Handler("frozen", frozen_reason="UnitNormalization mixes channels"),
    "Softmax": Handler("frozen", frozen_reason="Softmax mixes channels"),
    "Normalization": Handler("frozen", frozen_reason="preprocessing layer with per-channel statistics"),
}


def _op_activation(name: str) -> Handler:
    return Handler("channelwise", const_fn=lambda x, cfg, w: _apply_act(_ACTIVATIONS[name], x))


# Keras 3 ops applied to symbolic tensors in a functional model (`a + b`, `keras.ops.relu(x)`)
# are stored as operations of the modules `_keras_private.OP_MODULES`; some share a class name with a layer
# ("Add", "Reshape") but not its config, so they have a table of their own.
OP_HANDLERS: dict[str, Handler] = {
    **{name: Handler("elementwise") for name in ("Add", "Subtract", "Multiply", "Maximum", "Minimum")},
    "Relu": _op_activation("relu"),
    "Relu6": _op_activation("relu6"),
    "Sigmoid": _op_activation("sigmoid"),
    "Silu": _op_activation("silu"),
    "Tanh": _op_activation("tanh"),
    "HardSigmoid": _op_activation("hard_sigmoid"),
    "HardSilu": _op_activation("hard_silu"),
}


def get_handler(class_name: str, module: str | None = None) -> Handler | None:
    """The handler of a Keras layer (or op) class, or None if asp does not know it.

    Args:
        class_name: the config's ``class_name``.
        module: the config's ``module``: ``keras.layers`` (or None) for layers, ``OP_MODULES``
            for ops; any other module is a user's class, which is never guessed at.
    """
    if module is None or module in PUBLIC_LAYER_MODULES or module.startswith(LAYER_MODULES):
        return HANDLERS.get(class_name)
    if module.startswith(OP_MODULES):
        return OP_HANDLERS.get(class_name)
    return None
