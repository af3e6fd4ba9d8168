"""FLOPs of an .onnx file read from its graph, for benchmarking files that come without a report.json.

Counts Conv, ConvTranspose, Gemm and MatMul with constant weights, per sample (batch fixed to 1), with the
project convention flops = 2 x multiply-accumulates. Everything else (activations, pooling, adds, BN)
is ignored, as in `asp_export.surgery.flops` for the layers that dominate a CNN. Uses only the `onnx` package,
never TensorFlow; returns None when a shape cannot be inferred rather than guessing.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

log = logging.getLogger(__name__)


def onnx_flops(path: str | Path) -> int | None:
    """Per-sample FLOPs (2 x MACs) of the Conv/Gemm/MatMul nodes of an .onnx file, or None if unknown.

    Example:
        >>> onnx_flops("model.onnx")  # doctest: +SKIP
        1204224
    """
    try:
        import onnx
        from onnx import shape_inference

        model = onnx.load(str(path))
        for value in model.graph.input:
            dims = value.type.tensor_type.shape.dim
            if dims:
                dims[0].dim_value = 1  # per-sample count; also replaces a symbolic batch
        inferred = shape_inference.infer_shapes(model)
    except Exception as err:  # noqa: BLE001 - FLOPs are optional; the benchmark still runs
        log.debug("no FLOPs for %s: %s", path, err)
        return None

    shapes: dict[str, list[int | None]] = {}
    graph = inferred.graph
    for value in [*graph.input, *graph.value_info, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    weights = {init.name: list(init.dims) for init in graph.initializer}

    total = 0
    for node in graph.node:
        if node.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            continue
        out = shapes.get(node.output[0])
        weight = weights.get(node.input[1]) if len(node.input) > 1 else None
        if out is None or weight is None or any(d is None for d in out):
            log.debug("no FLOPs for %s: unknown shape at node %s", path, node.name)
            return None
        out_elems = math.prod(out)
        if node.op_type == "Conv":
            macs = out_elems * math.prod(weight[1:])  # each output: Cin/groups * kh * kw
        elif node.op_type == "ConvTranspose":
            inp = shapes.get(node.input[0])
            if inp is None or any(d is None for d in inp):
                return None
            macs = math.prod(inp) * math.prod(weight[1:])
        elif node.op_type == "Gemm":
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            macs = out_elems * (weight[1] if trans_b else weight[0])
        else:  # MatMul with a constant right-hand side
            macs = out_elems * weight[-2]
        total += 2 * macs
    return total
