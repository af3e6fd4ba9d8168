"""Small helpers shared by the format modules: quiet converters, input shapes, failure text."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from collections.abc import Iterable, Iterator

from asp_export._io import stderr_fd_captured

log = logging.getLogger(__name__)

_OP_PATTERNS = (
    re.compile(r"Unsupported ops?: Counter\(\{'([\w.]+)'"),  # tf2onnx
    re.compile(r"'(tf\.[\w.]+)' op is neither a custom op nor a flex op"),  # TFLite converter
    re.compile(r"failed to legalize operation '([\w.]+)'"),  # TFLite MLIR
    re.compile(r"[Nn]o (?:conversion|handler) (?:function )?(?:registered )?for (?:op )?'?([\w.]+)'?"),
)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Route what converters and runtimes print into debug logs instead of the user's terminal.

    Keras prints 'Saved artifact at ...' to stdout; the TFLite converter and LiteRT
    print 'fully_quantize: ...' and 'Created TensorFlow Lite XNNPACK delegate' from
    C++ straight to file descriptor 2. Both are captured (fd 2 into a temporary
    file) and logged at debug level, so `asp --verbose` still shows them. Python
    exceptions are unaffected.
    """
    buffer = io.StringIO()
    tf2onnx_log = logging.getLogger("tf2onnx")
    level = tf2onnx_log.level
    tf2onnx_log.setLevel(logging.ERROR)
    try:
        with stderr_fd_captured() as captured, contextlib.redirect_stdout(buffer), warnings.catch_warnings():
            # e.g. "Statistics for quantized inputs were expected": int8 calibration covers it
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        tf2onnx_log.setLevel(level)
        text = (buffer.getvalue() + "\n" + captured.text).strip()
        if text:
            log.debug("converter/runtime output:\n%s", text)


def input_shape(model) -> tuple[int, int, int]:
    """(H, W, C) of a single-input image model."""
    return tuple(int(d) for d in model.input_shape[1:])  # type: ignore[return-value]


def describe_failure(fmt_key: str, err: BaseException, layer_names: Iterable[str] = ()) -> str:
    """One line naming the format, the layer and/or op a converter failed on, and the first error line.

    Converters bury the culprit in long messages (MLIR locations, tf2onnx op
    counters); pull out the op name and the first Keras layer name mentioned as a
    path component (`functional/conv2/...`).
    """
    text = str(err)
    op = None
    for pattern in _OP_PATTERNS:
        match = pattern.search(text)
        if match:
            op = match.group(1)
            break
    layer = None
    for name in sorted(layer_names, key=len, reverse=True):
        if re.search(rf"(?:^|[/\"' ]){re.escape(name)}(?:/|\"|'|\b)", text):
            layer = name
            break
    first_line = next((line.strip() for line in text.splitlines() if line.strip()), type(err).__name__)
    if len(first_line) > 200:
        first_line = first_line[:197] + "..."
    where = ", ".join(
        part for part in (f"layer {layer!r}" if layer else "", f"op {op}" if op else "") if part
    )
    where = f" at {where}" if where else ""
    return f"{fmt_key} conversion failed{where}: {type(err).__name__}: {first_line}"
