"""Attention-guided group sparsity (GASL): the regulariser and the proximal step.

    L = CE + lambda_group * sum_l sum_g ||W_g||_2  +  lambda_var * sum_l 1 / (Var_l + eps)

A *group* is everything that produces one output channel: a Conv2D filter
(kernel[..., c]), a Dense neuron (kernel[:, c]), a DepthwiseConv2D channel
(kernel[:, :, c, :]) or a SeparableConv2D pointwise filter. Var_l is the
population variance of the squared group norms of layer l. Minimising 1/Var
spreads the group energies apart, so a few groups per layer stay strong while
group lasso collapses the rest: that guiding term *is* the attention.

Two solvers apply the group-lasso part:

* ``subgradient`` -- the authors' code: both terms are in the loss and the
  optimizer follows their (sub)gradients. Group norms then hover near
  lr * sqrt(n) instead of reaching zero, so few groups ever fall below a
  threshold in a practical number of steps.
* ``proximal`` (default) -- the guiding term stays in the loss; the group
  lasso is applied after each optimizer step by its proximal operator
  (group soft-thresholding), which sets dead groups to exactly zero.
  docs/method.md records the measurements behind this choice.

The regulariser is attached to the kernels only while training (see
`attach`), so saved models hold plain Keras layers and load in safe mode.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from asp_export import _keras_private
from asp_export.errors import KerasInternalsChanged, UserInputError
from asp_export.prune.methods import METHODS

log = logging.getLogger(__name__)

SOLVERS = ("proximal", "subgradient")
WEIGHTINGS = ("sqrt", "none")


@dataclass(frozen=True)
class SparsityConfig:
    """How the sparsity terms are weighted and applied.

    Args:
        method: ``gasl`` (group lasso + guiding term), ``ssl`` (group lasso only,
            Wen et al. 2016, the paper's baseline) or ``none`` (plain training).
        lambda_group: weight of the group-lasso term (paper: 1e-3).
        lambda_var: weight of the guiding term (paper: 1e-2); ignored unless gasl.
        solver: ``proximal`` or ``subgradient`` (see module docstring).
        group_weighting: ``none`` (w_l = 1, default) is the authors' unweighted
            sum; ``sqrt`` makes w_l = sqrt(group size) (Yuan & Lin's group
            lasso), a much stronger penalty on layers with large groups that
            prunes a small dataset in few epochs (the README demo uses it).
        eps: guards 1/Var when a layer's groups all collapse.
        include_classifier: also regularise the final (output) layer.
        exclude: layer names never regularised.
    """

    method: str = "gasl"
    lambda_group: float = 1e-3
    lambda_var: float = 1e-2
    solver: str = "proximal"
    group_weighting: str = "none"
    eps: float = 1e-6
    include_classifier: bool = False
    exclude: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UserInputError(f"Unknown method {self.method!r}; valid: {', '.join(METHODS)}.")
        if self.group_weighting not in WEIGHTINGS:
            raise UserInputError(
                f"Unknown group weighting {self.group_weighting!r}; valid: {', '.join(WEIGHTINGS)}."
            )
        if self.solver not in SOLVERS:
            raise UserInputError(f"Unknown solver {self.solver!r}; valid: {', '.join(SOLVERS)}.")
        for name in ("lambda_group", "lambda_var", "eps"):
            value = getattr(self, name)
            if not (value >= 0 and np.isfinite(value)):
                raise UserInputError(f"{name} must be a finite number >= 0, got {value}.")
        object.__setattr__(self, "exclude", tuple(self.exclude))

    @property
    def effective_lambda_var(self) -> float:
        return self.lambda_var if self.method == "gasl" else 0.0

    @property
    def effective_lambda_group(self) -> float:
        return self.lambda_group if self.method in ("gasl", "ssl") else 0.0

    def to_dict(self) -> dict:
        data = asdict(self)
        data["exclude"] = list(self.exclude)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> SparsityConfig:
        return cls(**{**data, "exclude": tuple(data.get("exclude", ()))})


# --- which weights form groups ------------------------------------------------

# layer class -> (kernel attribute, axes reduced to get one norm per output channel)
_GROUPED_KERNELS: dict[str, tuple[str, tuple[int, ...]]] = {
    "Conv1D": ("kernel", (0, 1)),
    "Conv2D": ("kernel", (0, 1, 2)),
    "Conv3D": ("kernel", (0, 1, 2, 3)),
    "Dense": ("kernel", (0,)),
    "DepthwiseConv2D": ("kernel", (0, 1, 3)),
    "SeparableConv2D": ("pointwise_kernel", (0, 1, 2)),
}


@dataclass(frozen=True)
class GroupedKernel:
    """One layer's kernel split into groups, one per output channel.

    `companions` are the per-channel vectors that also shape the channel's
    value: the layer's bias and the gamma/beta of a BatchNormalization reading
    its output. A filter whose kernel is zero still carries activation(bias) or
    beta -- a constant channel, not a dead one -- so the proximal step shrinks
    them together with the kernel slice.
    """

    layer: object  # keras.layers.Layer
    attribute: str
    reduce_axes: tuple[int, ...]
    companions: tuple = ()  # keras Variables of shape [channels]

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def variable(self):
        return getattr(self.layer, self.attribute)

    @property
    def group_size(self) -> int:
        shape = tuple(self.variable.shape)
        return int(np.prod([shape[axis] for axis in self.reduce_axes]))

    def norms(self) -> np.ndarray:
        return group_norms(np.asarray(self.variable), self.reduce_axes)


def walk_layers(model) -> Iterator:
    """Every layer of `model`, nested models' layers in place of the models."""
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:  # nested model
            yield from walk_layers(layer)
        else:
            yield layer


def grouped_kernels(
    model, *, include_classifier: bool = False, exclude: Sequence[str] = ()
) -> list[GroupedKernel]:
    """The kernels GASL regularises, in model order.

    The final classifier (the layer producing a model output) is skipped unless
    `include_classifier`: its groups are the classes, which must all survive.
    """
    output_layers = set() if include_classifier else _keras_private.output_layer_names(model)
    batch_norms = _batch_norms_reading(model)
    found = []
    for layer in walk_layers(model):
        spec = _GROUPED_KERNELS.get(type(layer).__name__)
        if spec is None or layer.name in exclude or layer.name in output_layers:
            continue
        if type(layer).__name__ == "Conv2D" and getattr(layer, "groups", 1) != 1:
            log.warning("GASL skips grouped convolution %s (groups=%s).", layer.name, layer.groups)
            continue
        companions = []
        if getattr(layer, "use_bias", False) and getattr(layer, "bias", None) is not None:
            companions.append(layer.bias)
        for bn in batch_norms.get(layer.name, ()):
            companions += [
                v for v in (getattr(bn, "gamma", None), getattr(bn, "beta", None)) if v is not None
            ]
        found.append(GroupedKernel(layer, *spec, companions=tuple(companions)))
    return found


def _batch_norms_reading(model) -> dict[str, list]:
    """{producer layer name: [BatchNormalization layers whose input is its output]} (top level).

    Read from the flat graph (`asp_export.surgery.flatten`, the one reader of a model's config
    graph); BNs inside nested models are not looked at, as before (only top-level calls count).
    """
    from asp_export.errors import UnsupportedLayerError
    from asp_export.surgery.flatten import flatten_model

    readers: dict[str, list] = {}
    try:
        flat = flatten_model(model)
    except (NotImplementedError, UnsupportedLayerError, UserInputError):  # subclassed, unbuilt
        return readers
    for rec in flat.layers.values():
        if rec.class_name != "BatchNormalization" or rec.config.get("axis", -1) not in (-1, 3, [-1], [3]):
            continue
        for call in rec.calls:
            if "/" in call.path or not call.inputs:
                continue
            producer = flat.layers[call.inputs[0][0]]
            if producer.class_name != "InputLayer" and "/" not in producer.calls[call.inputs[0][1]].path:
                readers.setdefault(producer.name, []).append(rec.obj)
    return readers


def group_weight(grouped: GroupedKernel, weighting: str) -> float:
    """w_l of a layer's group-lasso term: sqrt(group size) for ``sqrt``, else 1. Both solvers use it."""
    return float(np.sqrt(grouped.group_size)) if weighting == "sqrt" else 1.0


def group_norms(kernel: np.ndarray, reduce_axes: Sequence[int]) -> np.ndarray:
    """L2 norm of every group (one per output channel) of a kernel."""
    return np.sqrt(np.sum(np.square(kernel.astype(np.float64)), axis=tuple(reduce_axes)))


# --- the loss terms -----------------------------------------------------------


def penalty_terms(kernel, reduce_axes: Sequence[int], eps: float):
    """(sum of group norms, 1/(Var+eps)) of one kernel, as backend tensors."""
    from keras import ops

    squared = ops.sum(ops.square(kernel), axis=tuple(reduce_axes))
    # sqrt'(0) is infinite; the tiny floor keeps exactly-zero (pruned) groups at zero gradient.
    group_lasso = ops.sum(ops.sqrt(squared + 1e-12))
    variance = ops.mean(ops.square(squared - ops.mean(squared)))
    return group_lasso, 1.0 / (variance + eps)


class GASLRegularizer:
    """Per-kernel GASL penalty, callable as a Keras weight regulariser.

    Under tf.distribute, Keras' TensorFlow trainer divides added losses by the
    replica count before gradients are summed across replicas, so the penalty
    is returned unscaled (tests/test_train.py checks a two-replica step against
    a single-device one).
    """

    def __init__(
        self, reduce_axes: Sequence[int], lambda_group: float, lambda_var: float, eps: float
    ) -> None:
        self.reduce_axes = tuple(reduce_axes)
        self.lambda_group = float(lambda_group)
        self.lambda_var = float(lambda_var)
        self.eps = float(eps)

    def __call__(self, kernel):
        group_lasso, inverse_var = penalty_terms(kernel, self.reduce_axes, self.eps)
        return self.lambda_group * group_lasso + self.lambda_var * inverse_var

    def get_config(self) -> dict:
        return {
            "reduce_axes": self.reduce_axes,
            "lambda_group": self.lambda_group,
            "lambda_var": self.lambda_var,
            "eps": self.eps,
        }


def penalty_value(model, config: SparsityConfig) -> dict[str, float]:
    """The two terms (unweighted and weighted) on a model's current weights, for reports.

    ``weighted`` is the whole objective's penalty: lambda_group * sum_l w_l * sum_g ||W_g||
    (w_l from `group_weight`) + lambda_var * sum_l 1 / (Var_l + eps).
    """
    group_total = 0.0
    group_weighted = 0.0
    guide_total = 0.0
    for grouped in grouped_kernels(
        model, include_classifier=config.include_classifier, exclude=config.exclude
    ):
        squared = np.square(grouped.norms())
        group_total += float(np.sum(np.sqrt(squared)))
        group_weighted += group_weight(grouped, config.group_weighting) * float(np.sum(np.sqrt(squared)))
        guide_total += float(1.0 / (np.var(squared) + config.eps))
    return {
        "group_lasso": group_total,
        "inverse_variance": guide_total,
        "weighted": config.effective_lambda_group * group_weighted
        + config.effective_lambda_var * guide_total,
    }


@contextlib.contextmanager
def attach_extra(model, config) -> Iterator[None]:
    """Attach a method's own training regulariser for the duration of training.

    slimming: ``lambda * sum |gamma|`` on every BatchNormalization gamma, by subgradient
    (as Liu et al.), with lambda = ``--lambda-group`` (default 1e-3; Liu et al. used 1e-4
    on CIFAR with 160 epochs, short runs need a stronger push to separate the gammas).
    Restored on exit, so the saved model holds plain Keras layers.
    """
    if config.method != "slimming":
        yield
        return
    weight = config.lambda_group
    gammas = [
        layer.gamma
        for layer in walk_layers(model)
        if type(layer).__name__ == "BatchNormalization" and getattr(layer, "gamma", None) is not None
    ]
    previous = [g.regularizer for g in gammas]
    try:
        for gamma in gammas:
            gamma.regularizer = _GammaL1(weight)
        yield
    finally:
        for gamma, regularizer in zip(gammas, previous, strict=True):
            gamma.regularizer = regularizer


class _GammaL1:
    def __init__(self, weight: float) -> None:
        self.weight = float(weight)

    def __call__(self, gamma):
        from keras import ops

        return self.weight * ops.sum(ops.abs(gamma))

    def get_config(self) -> dict:
        return {"weight": self.weight}


@contextlib.contextmanager
def attach(model, config: SparsityConfig) -> Iterator[list[GroupedKernel]]:
    """Attach the GASL penalty to the model's kernels for the duration of training.

    With the proximal solver only the guiding term goes into the loss; the group
    lasso is applied by `ProximalGroupLasso`. With the subgradient solver the loss
    carries both, the group lasso weighted by `group_weight` as the proximal step is.
    On exit the kernels are restored, so the model saves as plain Keras.
    """
    kernels = grouped_kernels(model, include_classifier=config.include_classifier, exclude=config.exclude)
    lambda_group = config.effective_lambda_group if config.solver == "subgradient" else 0.0
    lambda_var = config.effective_lambda_var
    previous = [k.variable.regularizer for k in kernels]
    try:
        if lambda_group or lambda_var:
            for grouped in kernels:
                grouped.variable.regularizer = GASLRegularizer(
                    grouped.reduce_axes,
                    lambda_group * group_weight(grouped, config.group_weighting),
                    lambda_var,
                    config.eps,
                )
        with attach_extra(model, config):
            yield kernels
    finally:
        for grouped, regularizer in zip(kernels, previous, strict=True):
            grouped.variable.regularizer = regularizer


def soft_threshold_groups(
    kernel, reduce_axes: Sequence[int], threshold, *, companions=(), spare_strongest: bool = False
):
    """Proximal operator of threshold * sum_g ||W_g||: shrink every group norm by
    `threshold`, setting groups whose norm is below it to exactly zero.

    A group is the kernel slice of one output channel plus that channel's entry
    in each of `companions` (vectors over the channel axis: bias, BN gamma/beta).
    With `spare_strongest` the layer's strongest group is left untouched, so a
    layer can never lose all its groups (which would disconnect the network).

    Returns:
        (new kernel, [new companion vectors]).
    """
    from keras import ops

    squared = ops.sum(ops.square(kernel), axis=tuple(reduce_axes))
    for vector in companions:
        squared = squared + ops.square(vector)
    norms = ops.sqrt(squared)
    scale = ops.maximum(0.0, 1.0 - threshold / ops.maximum(norms, 1e-12))
    if spare_strongest:
        scale = ops.where(norms >= ops.max(norms), 1.0, scale)
    kernel_scale = ops.expand_dims(scale, tuple(reduce_axes)) if len(reduce_axes) else scale
    return kernel * ops.cast(kernel_scale, kernel.dtype), [v * ops.cast(scale, v.dtype) for v in companions]


def proximal_scaling(optimizer) -> str:
    """How the proximal step scales its threshold: ``"adam"`` (lr / sqrt(v) per group, from Adam's
    second moments) or ``"lr"`` (the plain learning rate: SGD, RMSprop, ...). Logged once per fit.

    Raises:
        KerasInternalsChanged: a keras.optimizers.Adam whose moments asp cannot read (a Keras newer
            than tested renamed them): falling back to ``"lr"`` would silently change the algorithm.
    """
    import keras

    if _keras_private.has_adam_moments(optimizer):
        scaling = "adam"
    elif isinstance(optimizer, keras.optimizers.Adam):
        raise KerasInternalsChanged(
            f"{type(optimizer).__name__} exposes no second moments asp can read in Keras {keras.__version__} "
            "(the proximal step needs them); update asp_export/_keras_private.py or install the keras "
            "version pyproject.toml allows."
        )
    else:
        scaling = "lr"
    log.info(
        "proximal step: threshold scaled by %s (%s)",
        "lr / sqrt(v), Adam's second moments" if scaling == "adam" else "the learning rate",
        type(optimizer).__name__,
    )
    return scaling


def make_proximal_callback(kernels: list[GroupedKernel], config: SparsityConfig):
    """A Keras callback applying the group-lasso proximal step after every batch.

    The proximal step size is the one the optimizer just used, taken per group:
    Adam moved the group by about lr / sqrt(v_g) per coordinate, with v_g the
    mean of its coordinates' second moments (bias-corrected), so the group's
    threshold is lambda * w_l * lr / sqrt(v_g); other optimizers use lr. Its
    fixed point is the group-lasso optimum -- a group dies iff its loss gradient
    norm stays below lambda * w_l -- however many steps training runs, which a
    fixed per-step shrink is not (that empties a network trained long enough).

    A batch whose step the optimizer skipped gets no proximal step either: under
    mixed precision the LossScaleOptimizer skips every step whose scaled gradients
    overflow (its first steps, by design) without advancing the inner optimizer's
    `iterations`, and Adam's bias correction 1 - beta_2**0 would then be 0 (0/0 = NaN
    in every group). The callback compares `iterations` with its value after the
    previous batch, on the device, so no batch waits for the host.
    """
    import keras
    import tensorflow as tf

    strength = config.effective_lambda_group
    weights = [group_weight(grouped, config.group_weighting) for grouped in kernels]

    class ProximalGroupLasso(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            # The optimizer's step count when this fit starts (a resumed run starts above 0).
            taken = int(np.asarray(self.model.optimizer.iterations))
            if hasattr(self, "_last_iterations"):
                self._last_iterations.assign(taken)
            else:
                self._last_iterations = tf.Variable(taken, dtype=tf.int64, trainable=False)

        def on_train_batch_end(self, batch, logs=None):
            if not hasattr(self, "_last_iterations"):  # driven without on_train_begin: skip this batch
                self.on_train_begin()
            if not hasattr(self, "_step"):  # the optimizer's slots exist only after its first step
                self._step = _build_step(self.model.optimizer, self._last_iterations)
            self._step()

    def _build_step(optimizer, last_iterations):
        inner = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer
        adam_like = proximal_scaling(inner) == "adam"

        def second_moments(variable):
            return tf.cast(_keras_private.adam_second_moments(inner, variable).value, tf.float32)

        @tf.function
        def step():
            iterations = tf.cast(inner.iterations, tf.int64)
            took_step = iterations > last_iterations
            last_iterations.assign(iterations)
            tf.cond(took_step, proximal_step, lambda: None)

        def proximal_step():
            learning_rate = tf.cast(inner.learning_rate, tf.float32)
            if adam_like:
                bias_correction = 1.0 - inner.beta_2 ** tf.cast(inner.iterations, tf.float32)
            for grouped, weight in zip(kernels, weights, strict=True):
                variable = grouped.variable
                if adam_like:
                    # One second moment per group (the mean of its coordinates'): a mean of
                    # per-coordinate steps lr/sqrt(v) would be ruled by near-zero gradients.
                    total = tf.reduce_sum(second_moments(variable), axis=grouped.reduce_axes)
                    for companion in grouped.companions:
                        total += second_moments(companion)
                    group_v = total / float(grouped.group_size + len(grouped.companions)) / bias_correction
                    mean_step = learning_rate / (tf.sqrt(group_v) + inner.epsilon)
                else:
                    mean_step = learning_rate
                kernel, companions = soft_threshold_groups(
                    variable.value,
                    grouped.reduce_axes,
                    strength * weight * mean_step,
                    companions=[c.value for c in grouped.companions],
                    spare_strongest=True,
                )
                variable.assign(kernel)
                for companion, value in zip(grouped.companions, companions, strict=True):
                    companion.assign(value)

        return step

    return ProximalGroupLasso()


# --- measuring sparsity -------------------------------------------------------


def dead_groups(norms: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean mask of groups whose norm is at or below `threshold`."""
    return np.asarray(norms) <= threshold


def elementwise_sparsity(model, *, tolerance: float = 1e-3, include_classifier: bool = False) -> float:
    """The paper's metric: mean over regularised layers of the fraction of
    weights with |w| <= tolerance (the authors zero those at test time)."""
    fractions = [
        float(np.mean(np.abs(np.asarray(grouped.variable)) <= tolerance))
        for grouped in grouped_kernels(model, include_classifier=include_classifier)
    ]
    return float(np.mean(fractions)) if fractions else 0.0
