"""ONNX: convert with tf2onnx, check with onnx.checker, run with onnxruntime on the CPU provider.

The input is always named `input` (float32, NHWC, or NCHW when asked for) with a
dynamic batch dimension named `batch` unless a fixed one is asked for, so every
asp ONNX file is fed the same way. fp16 files keep float32 inputs and outputs
(onnxruntime's float16 converter with keep_io_types) so callers never cast.
The runner then simplifies the graph with onnxslim (`simplify`), keeping the
result only when it passes parity again, and records its op histogram and the
NNAPI/CoreML partitioning onnxruntime's mobile checker predicts (`summarize`).
"""

from __future__ import annotations

import collections
import logging
import tempfile
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
BATCH_DIM = "batch"  # name of a dynamic batch dimension (tf2onnx would call it unk__87)
LAYOUT_KEY = "input_layout"  # metadata_props key; predict() transposes NHWC samples for "NCHW"
PROVIDERS = ["CPUExecutionProvider"]
#: Partitioning checks of onnxruntime's mobile usability checker: manifest key -> CoreML op list or None.
_MOBILE_EPS = {"nnapi": None, "coreml": "coreml_supported_mlprogram_ops.md"}


def convert(model, spec: FileSpec):
    """Convert a (functional) Keras model to an in-memory, checked onnx.ModelProto."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    signature = [tf.TensorSpec([spec.batch, *input_shape(model)], tf.float32, name=INPUT_NAME)]
    nchw = [INPUT_NAME] if spec.layout == "NCHW" else None
    with quiet():
        proto, _ = tf2onnx.convert.from_keras(
            model, input_signature=signature, opset=spec.opset, inputs_as_nchw=nchw
        )
    _name_batch_dim(proto)
    if spec.precision == "fp16":
        proto = _to_float16(proto)
    elif spec.precision != "fp32":
        raise ValueError(f"ONNX export supports fp32 and fp16, not {spec.precision}")
    _set_metadata(proto, {**(spec.metadata or {}), LAYOUT_KEY: spec.layout})
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
    """Run the file with onnxruntime on the CPU provider (chunked if its batch is fixed).

    `x` is NHWC, asp's layout everywhere; a file written with an NCHW input gets it transposed.
    """
    session = _session(path)
    inp = session.get_inputs()[0]
    batch = inp.shape[0] if isinstance(inp.shape[0], int) else None
    x = x.astype(np.float32)
    if session.get_modelmeta().custom_metadata_map.get(LAYOUT_KEY) == "NCHW":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return run_in_batches(lambda chunk: session.run(None, {inp.name: chunk})[0], x, batch)


def simplify(path: Path, accept: Callable[[Path], bool]) -> bool:
    """Simplify the graph with onnxslim, keeping the result only if `accept` agrees.

    onnxslim folds what tf2onnx leaves dynamic, e.g. Flatten's Shape -> Gather ->
    Cast -> Slice -> Concat -> Reshape chain, and fuses MatMul + Add. `accept`
    gets the candidate file (parity is re-run on it); a rejected or failing
    simplification leaves `path` untouched.

    Returns:
        True when the simplified graph replaced the file.
    """
    import onnx

    try:
        import onnxslim
    except ImportError:  # a dependency, but a broken environment must not fail the export
        log.warning("onnxslim is not importable (pip install onnxslim); %s keeps tf2onnx's graph", path.name)
        return False
    original = onnx.load(str(path))
    try:
        with quiet():
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


def summarize(path: Path) -> dict[str, Any]:
    """Node count and op histogram of the file, and the mobile EPs' predicted partitioning.

    `mobile` is what `python -m onnxruntime.tools.check_onnx_model_mobile_usability`
    reports (after the same basic optimization), per EP: nodes it takes, nodes
    in all, partitions and its verdict (yes/maybe/no); absent when that checker
    cannot be imported or fails on the file.
    """
    import onnx

    proto = onnx.load(str(path))
    ops = collections.Counter(node.op_type for node in proto.graph.node)
    summary: dict[str, Any] = {"nodes": len(proto.graph.node), "ops": dict(sorted(ops.items()))}
    mobile = mobile_partitions(path)
    if mobile is not None:
        summary["mobile"] = mobile
    return summary


def mobile_partitions(path: Path) -> dict[str, dict[str, Any]] | None:
    """NNAPI and CoreML (MLProgram) partitioning of the file as onnxruntime's mobile checker sees it."""
    try:
        from onnxruntime.tools.mobile_helpers import usability_checker
        from onnxruntime.tools.onnx_model_utils import ModelProtoWithShapeInfo, optimize_model
    except ImportError as err:
        log.debug("onnxruntime's mobile usability checker is not importable: %s", err)
        return None
    out = {}
    try:
        with tempfile.TemporaryDirectory() as tmp, quiet():
            optimized = Path(tmp) / path.name
            optimize_model(Path(path), optimized)
            model = ModelProtoWithShapeInfo(optimized).model_with_shape_info
            for key, coreml_ops in _MOBILE_EPS.items():
                if coreml_ops is None:
                    info = usability_checker.check_nnapi_partitions(model, require_fixed_input_sizes=True)
                else:
                    info = usability_checker.check_coreml_partitions(model, True, coreml_ops)
                out[key] = {
                    "supported_nodes": int(info.num_supported_nodes),
                    "nodes": int(info.num_nodes),
                    "partitions": int(info.num_partitions),
                    "verdict": info.suitability().name.lower(),
                }
    except Exception as err:  # noqa: BLE001 - an advisory figure never fails the export
        log.warning("onnxruntime's mobile checker failed on %s (%s: %s)", path.name, type(err).__name__, err)
        return None
    return out


def _name_batch_dim(proto) -> None:
    """Name a dynamic leading dimension of the graph's inputs and outputs `batch`."""
    for value in (*proto.graph.input, *proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = BATCH_DIM


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
