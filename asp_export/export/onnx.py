"""ONNX: convert with tf2onnx, check with onnx.checker, run with onnxruntime on the CPU provider.

The input is always named `input` (float32, NHWC) with a dynamic batch unless a
fixed one is asked for, so every asp ONNX file is fed the same way. fp16 files
keep float32 inputs and outputs (onnxruntime's float16 converter with
keep_io_types) so callers never cast.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from asp_export._io import atomic_path
from asp_export.export._tools import input_shape, quiet
from asp_export.export.formats import FileSpec
from asp_export.export.parity import run_in_batches

log = logging.getLogger(__name__)

INPUT_NAME = "input"
PROVIDERS = ["CPUExecutionProvider"]


def convert(model, spec: FileSpec):
    """Convert a (functional) Keras model to an in-memory, checked onnx.ModelProto."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    signature = [tf.TensorSpec([spec.batch, *input_shape(model)], tf.float32, name=INPUT_NAME)]
    with quiet():
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=spec.opset)
    if spec.precision == "fp16":
        proto = _to_float16(proto)
    elif spec.precision != "fp32":
        raise ValueError(f"ONNX export supports fp32 and fp16, not {spec.precision}")
    _set_metadata(proto, spec.metadata or {})
    onnx.checker.check_model(proto)
    return proto


def export(model, path: Path, spec: FileSpec) -> dict[str, Any]:
    """Write `model` as an ONNX file at `path` (atomically) and return its input/output description.

    Example:
        >>> export(model, Path("export/dense.onnx"), FileSpec(precision="fp32"))  # doctest: +SKIP
    """
    import onnx

    proto = convert(model, spec)
    with atomic_path(path) as tmp:
        onnx.save_model(proto, str(tmp))
    return describe(path)


def describe(path: Path) -> dict[str, Any]:
    """Input/output names, shapes (None = dynamic) and dtypes as the runtime sees them."""
    session = _session(path)
    return {"input": _io_dict(session.get_inputs()[0]), "output": _io_dict(session.get_outputs()[0])}


def predict(path: Path, x: np.ndarray) -> np.ndarray:
    """Run the file with onnxruntime on the CPU provider (chunked if its batch is fixed)."""
    session = _session(path)
    inp = session.get_inputs()[0]
    batch = inp.shape[0] if isinstance(inp.shape[0], int) else None
    return run_in_batches(lambda chunk: session.run(None, {inp.name: chunk})[0], x.astype(np.float32), batch)


def simplify(path: Path, accept: Callable[[Path], bool]) -> bool:
    """Simplify the graph with onnxslim when it is installed, keeping the result only if `accept` agrees.

    onnxslim is optional and not a dependency: without it this does nothing.
    `accept` gets the candidate file (parity is re-run on it); a rejected or
    failing simplification leaves `path` untouched.

    Returns:
        True when the simplified graph replaced the file.
    """
    if importlib.util.find_spec("onnxslim") is None:
        return False
    import onnx
    import onnxslim

    original = onnx.load(str(path))
    try:
        slimmed = onnxslim.slim(original)
        _set_metadata(slimmed, {p.key: p.value for p in original.metadata_props})
        onnx.checker.check_model(slimmed)
    except Exception as err:  # noqa: BLE001 - an optional optimisation never fails the export
        log.warning("onnxslim could not simplify %s (%s); keeping the converter's graph", path.name, err)
        return False

    class _Rejected(Exception):
        pass

    try:
        with atomic_path(path) as tmp:
            onnx.save_model(slimmed, str(tmp))
            if not accept(tmp):
                raise _Rejected
    except _Rejected:
        log.warning(
            "onnxslim changed the outputs of %s beyond tolerance; keeping the converter's graph", path.name
        )
        return False
    return True


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=PROVIDERS)


def _io_dict(arg) -> dict[str, Any]:
    shape = [d if isinstance(d, int) else None for d in arg.shape]
    dtype = arg.type.removeprefix("tensor(").removesuffix(")")
    dtype = {"float": "float32", "double": "float64"}.get(dtype, dtype)
    return {"name": arg.name, "shape": shape, "dtype": dtype}


def _set_metadata(proto, metadata: dict[str, str]) -> None:
    del proto.metadata_props[:]
    for key, value in metadata.items():
        prop = proto.metadata_props.add()
        prop.key, prop.value = str(key), str(value)


def _to_float16(proto):
    from onnxruntime.transformers.float16 import convert_float_to_float16

    half = convert_float_to_float16(proto, keep_io_types=True)
    _topological_sort(half.graph)  # the converter appends its input casts after their consumers
    return half


def _topological_sort(graph) -> None:
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        blocked = []
        for node in pending:
            if all(name in available for name in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                blocked.append(node)
        if len(blocked) == len(pending):
            raise ValueError(f"ONNX graph has a cycle or a missing input at node {blocked[0].name!r}")
        pending = blocked
    del graph.node[:]
    graph.node.extend(ordered)
