"""TensorFlow SavedModel: a `tf.Module` serving the Keras model, run with tf.saved_model.load.

The SavedModel is a directory; it is written beside its final name and renamed
into place, so a killed export never leaves a half-written model. Its
`serving_default` signature takes one float32 NHWC tensor named `input` and
returns `output_0`, as Keras' own `model.export(format="tf_saved_model")` does.

It is written with `tf.saved_model.save` on a module that tracks the model's
TensorFlow variables once, not with `model.export`: Keras 3's export archive
tracks both the Keras variables (`variables`) and the `tf.Variable`s under them
(`_all_variables`), and the checkpoint stores every weight twice (a resnet56
SavedModel listed 860,026 values under each, 8.3 MB against a 3.3 MB ONNX file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from asp_export._io import atomic_path
from asp_export.export._tools import input_shape, quiet
from asp_export.export.formats import FileSpec
from asp_export.export.parity import full_fp32, run_in_batches

SIGNATURE = "serving_default"
OUTPUT_NAME = "output_0"


def export(model, path: Path, spec: FileSpec) -> dict[str, Any]:
    """Write `model` as a SavedModel directory at `path` (atomically)."""
    import tensorflow as tf

    if spec.precision != "fp32":
        raise ValueError(f"SavedModel export supports fp32 only, not {spec.precision}")
    signature = tf.TensorSpec([spec.batch, *input_shape(model)], tf.float32, name="input")

    @tf.function(input_signature=[signature])
    def serve(input):  # noqa: A002 - the argument name is the signature's input name
        return {OUTPUT_NAME: model(input, training=False)}

    module = tf.Module()
    module.model_variables = [_tf_variable(v) for v in model.weights]  # each weight tracked once
    module.serve = serve
    with atomic_path(path, suffix="") as tmp, quiet():
        tf.saved_model.save(module, str(tmp), signatures={SIGNATURE: serve})
    return describe(path)


def _tf_variable(variable):
    """The tf.Variable holding a Keras (TensorFlow-backend) weight."""
    import tensorflow as tf

    value = getattr(variable, "value", variable)
    if not isinstance(value, tf.Variable):
        raise TypeError(f"weight {variable.name!r} is not backed by a tf.Variable ({type(value).__name__})")
    return value


def _signature(path: Path):
    import tensorflow as tf

    function = tf.saved_model.load(str(path)).signatures[SIGNATURE]
    ((name, spec),) = function.structured_input_signature[1].items()
    ((out_name, out_spec),) = function.structured_outputs.items()
    return function, name, spec, out_name, out_spec


def describe(path: Path) -> dict[str, Any]:
    _, name, spec, out_name, out_spec = _signature(path)

    def as_dict(tensor_name: str, tensor_spec) -> dict[str, Any]:
        return {"name": tensor_name, "shape": tensor_spec.shape.as_list(), "dtype": tensor_spec.dtype.name}

    return {"input": as_dict(name, spec), "output": as_dict(out_name, out_spec)}


def predict(path: Path, x: np.ndarray) -> np.ndarray:
    """Run the `serving_default` signature of the loaded SavedModel."""
    import tensorflow as tf

    function, name, spec, out_name, _ = _signature(path)
    batch = spec.shape[0]

    def run(chunk: np.ndarray) -> np.ndarray:
        return function(**{name: tf.constant(chunk)})[out_name].numpy()

    with full_fp32():  # judged against an exact fp32 reference (parity.full_fp32)
        return run_in_batches(run, x.astype(np.float32), batch)
