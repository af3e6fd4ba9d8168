"""TensorFlow Lite: convert with TFLiteConverter, run with the LiteRT interpreter (ai_edge_litert).

Precisions:
  fp32     plain conversion.
  fp16     float16 weights (Optimize.DEFAULT + supported_types=[float16]); float32 in/out.
  dynamic  dynamic-range quantization: int8 weights, float activations, no data needed.
  int8     full-integer: weights and activations int8, calibrated on a representative
           dataset of real training samples; with `int8_io` the input and output are
           int8 too (callers quantize with the scale/zero point stored in the file).

TFLite files get a fixed batch (1 by default: the on-device case); parity runs
resize a dynamic input to the sample batch or loop over fixed-size chunks.
`tf.lite.Interpreter` is deprecated in TF 2.21, so files are run by
`ai_edge_litert.interpreter.Interpreter`, the maintained runtime.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from asp_export._io import write_bytes_atomic
from asp_export.export._tools import input_shape, quiet
from asp_export.export.formats import FileSpec
from asp_export.export.parity import run_in_batches

log = logging.getLogger(__name__)


def convert(model, spec: FileSpec) -> bytes:
    """Convert a Keras model to TFLite flatbuffer bytes at the requested precision and batch."""
    import tensorflow as tf

    if spec.batch is not None:
        model = _with_fixed_batch(model, spec.batch)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if spec.precision == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif spec.precision == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif spec.precision == "int8":
        if spec.calibration is None or len(spec.calibration) == 0:
            raise ValueError("full-integer int8 needs calibration samples (a representative dataset)")
        calibration = np.asarray(spec.calibration, dtype=np.float32)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _representative(calibration, spec.batch or 1)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if spec.int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    elif spec.precision != "fp32":
        raise ValueError(f"TFLite export supports fp32, fp16, int8 and dynamic, not {spec.precision}")
    with quiet():
        return converter.convert()


def export(model, path: Path, spec: FileSpec) -> dict[str, Any]:
    """Write `model` as a .tflite file at `path` (atomically) and return its input/output description."""
    write_bytes_atomic(path, convert(model, spec))
    return describe(path)


def describe(path: Path) -> dict[str, Any]:
    interpreter = _interpreter(path)
    return {
        "input": _io_dict(interpreter.get_input_details()[0]),
        "output": _io_dict(interpreter.get_output_details()[0]),
    }


def predict(path: Path, x: np.ndarray) -> np.ndarray:
    """Run the file with the LiteRT interpreter; (de)quantize int8 inputs/outputs with the file's params."""
    interpreter = _interpreter(path)
    inp = interpreter.get_input_details()[0]
    dynamic = int(inp["shape_signature"][0]) == -1
    state = {"batch": None}

    def run(chunk: np.ndarray) -> np.ndarray:
        if state["batch"] != len(chunk):
            if dynamic or int(inp["shape"][0]) != len(chunk):
                interpreter.resize_tensor_input(inp["index"], [len(chunk), *inp["shape"][1:]])
            interpreter.allocate_tensors()
            state["batch"] = len(chunk)
        interpreter.set_tensor(inp["index"], _quantize(chunk, inp))
        interpreter.invoke()
        out = interpreter.get_output_details()[0]
        return _dequantize(interpreter.get_tensor(out["index"]), out)

    batch = None if dynamic else int(inp["shape"][0])
    return run_in_batches(run, x.astype(np.float32), batch)


def _representative(calibration: np.ndarray, batch: int):
    """Calibration batches shaped like the model's input (a fixed batch N needs N samples per step)."""

    def generate():
        for start in range(0, len(calibration), batch):
            chunk = calibration[start : start + batch]
            if len(chunk) < batch:
                chunk = np.concatenate([chunk, calibration[: batch - len(chunk)]], axis=0)
            yield [chunk]

    return generate


def _interpreter(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    with quiet():  # LiteRT announces its XNNPACK delegate on fd 2
        interpreter = Interpreter(model_path=str(path))
        interpreter.allocate_tensors()
    return interpreter


def _with_fixed_batch(model, batch: int):
    # from_keras_model takes the batch from the model's Input; wrap instead of rebuilding layers.
    import keras

    inputs = keras.Input(batch_shape=(batch, *input_shape(model)), name="input")
    return keras.Model(inputs, model(inputs), name=f"{model.name}_b{batch}")


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    dtype = detail["dtype"]
    if np.issubdtype(dtype, np.floating):
        return x.astype(dtype)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)


def _dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    if np.issubdtype(detail["dtype"], np.floating):
        return y.astype(np.float32)
    scale, zero_point = detail["quantization"]
    return ((y.astype(np.float32) - zero_point) * scale).astype(np.float32)


def _io_dict(detail: dict) -> dict[str, Any]:
    shape = [None if int(d) == -1 else int(d) for d in detail["shape_signature"]]
    out: dict[str, Any] = {"name": detail["name"], "shape": shape, "dtype": np.dtype(detail["dtype"]).name}
    scale, zero_point = detail["quantization"]
    if scale:
        out["quantization"] = {"scale": float(scale), "zero_point": int(zero_point)}
    return out
