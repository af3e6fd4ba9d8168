"""One loader per runtime, and the RUNTIMES table that maps file formats to them.

A loader opens one model file for one batch size and returns a `Loaded` whose `run()` does exactly one
complete inference on a fixed random input (output ready when it returns). Timing lives elsewhere
(`stats.py`), so every runtime is measured by the same loop.

Each runtime's library is imported inside its loader only: benchmarking ONNX or TFLite files must work
on a box where TensorFlow is not installed, and must not pay TensorFlow's import time where it is.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from asp_export.bench.providers import create_session, tensorrt_options
from asp_export.rundir import ARTIFACT_SUFFIXES

log = logging.getLogger(__name__)

_SEED = 0

#: onnxruntime's intra-op threads spin-wait after each run by default. asp turns that off: dense and pruned
#: sessions live in one process, and one session's spinning threads steal the cores the other needs; on a
#: busy 2-core machine a ResNet-56 at batch 1 measured 14.5 ms with spinning vs 2.6 ms without.
ORT_ALLOW_SPINNING = False


@dataclass
class Loaded:
    """A model ready to run: `run()` is one inference; `provider` is what really executes it."""

    run: Callable[[], object]
    provider: str
    provider_requested: str | None = None
    fallback: bool = False
    provider_error: str | None = None  # why the providers tried first did not run (onnxruntime)
    provider_options: dict[str, str] | None = None  # what TensorRT was given, when it was tried
    threads: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Runtime:
    """A row of the RUNTIMES table."""

    name: str
    formats: tuple[str, ...]
    module: str  # import name probed (not imported) to decide availability
    install_hint: str
    load: Callable[..., Loaded]

    def available(self) -> bool:
        return importlib.util.find_spec(self.module) is not None


# ---------------------------------------------------------------------------------------------------
# inputs


def _random_input(shape: list[int], dtype: np.dtype, scale: float = 1.0, zero_point: int = 0) -> np.ndarray:
    """Deterministic input; integer inputs are N(0, 1) quantized with the tensor's own scale/zero point."""
    rng = np.random.default_rng(_SEED)
    real = rng.standard_normal(shape).astype(np.float32)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        q = np.round(real / (scale or 1.0) + zero_point)
        return np.clip(q, info.min, info.max).astype(dtype)
    return real.astype(dtype)


def _batched_shape(name: str, dims: list[Any], batch: int) -> list[int]:
    if not dims:
        raise ValueError(f"input {name!r} is a scalar; asp bench needs a batched input")
    rest = list(dims[1:])
    if not all(isinstance(d, (int, np.integer)) and d > 0 for d in rest):
        raise ValueError(f"input {name!r} has shape {dims}: only the batch dimension may be dynamic")
    return [batch, *(int(d) for d in rest)]


class FixedBatchError(ValueError):
    """The file was exported with a fixed batch (`fixed`) and cannot run at the batch asked for."""

    def __init__(self, fixed: int, batch: int, detail: str = "") -> None:
        self.fixed = fixed
        super().__init__(
            f"the file was exported with a fixed batch of {fixed} and cannot run at batch {batch}; "
            f"re-export with `asp export --batch dynamic` (or bench with --batch {fixed}){detail}"
        )


# ---------------------------------------------------------------------------------------------------
# onnxruntime

_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
}


def ort_session_options(threads: int | None, *, profile_prefix: str | None = None) -> Any:
    """Session options used for every timed onnxruntime session (and the profiling one)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: a fallback is reported by asp in one line
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads:
        options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if ORT_ALLOW_SPINNING else "0")
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return options


def ort_feeds(session: Any, batch: int) -> dict[str, np.ndarray]:
    feeds = {}
    for node in session.get_inputs():
        if node.type not in _ORT_DTYPES:
            raise ValueError(f"input {node.name!r} has type {node.type}, which asp bench cannot fill")
        fixed = node.shape[0] if node.shape else None
        if isinstance(fixed, int) and fixed > 0 and fixed != batch:
            raise FixedBatchError(fixed, batch)
        feeds[node.name] = _random_input(_batched_shape(node.name, node.shape, batch), _ORT_DTYPES[node.type])
    return feeds


def load_onnxruntime(
    path: str | Path,
    *,
    batch: int,
    threads: int | None,
    provider: str = "auto",
    strict: bool = False,
    precision: str | None = None,
    trt_cache: str | Path | None = None,
) -> Loaded:
    """Open an .onnx file in onnxruntime with an explicit provider list (see providers.py).

    `strict` refuses any provider but a GPU one; TensorRT gets fp16 for fp16 files and its engine and
    timing caches under `trt_cache` (providers.tensorrt_options). On a GPU provider the inputs are
    copied to the device once and outputs stay there (IO binding), so the timing is the model, not
    host<->device copies. That path cannot be tested on a CPU-only machine.
    """
    import onnxruntime as ort

    trt = None
    if provider in ("auto", "tensorrt"):  # the lists that contain TensorRT
        trt = tensorrt_options(path, batch=batch, fp16=precision == "fp16", cache_dir=trt_cache)
    session, choice = create_session(
        str(path), provider, ort_session_options(threads), strict=strict, trt_options=trt
    )
    feeds = ort_feeds(session, batch)

    if choice.is_gpu:  # pragma: no cover - needs a CUDA device
        binding = session.io_binding()
        for name, value in feeds.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, "cuda", 0))
        for out in session.get_outputs():
            binding.bind_output(out.name, "cuda")

        def run() -> object:
            session.run_with_iobinding(binding)
            return None

    else:

        def run() -> object:
            return session.run(None, feeds)

    return Loaded(
        run=run,
        provider=choice.actual,
        provider_requested=choice.requested,
        fallback=choice.fallback,
        provider_error=choice.error,
        provider_options=choice.options or None,
        threads=threads,
        extra={"session": session},
    )


# ---------------------------------------------------------------------------------------------------
# TFLite (LiteRT)


def load_tflite(
    path: str | Path, *, batch: int, threads: int | None, provider: str = "auto", **_onnxruntime_only: Any
) -> Loaded:
    """Open a .tflite file with `ai_edge_litert` at `batch`; the provider is the delegate really applied."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    fixed = None
    for detail in interpreter.get_input_details():
        dims = [int(d) for d in detail.get("shape_signature", detail["shape"])]
        if dims and dims[0] > 0 and dims[0] != batch:
            fixed = dims[0]
        shape = _batched_shape(detail["name"], [1, *dims[1:]] if dims else dims, batch)
        interpreter.resize_tensor_input(detail["index"], shape, strict=False)
    try:
        interpreter.allocate_tensors()
    except RuntimeError as err:
        if fixed is None:
            raise
        # Reshape ops of a fixed-batch file often bake the batch in; resizing the input cannot fix them.
        raise FixedBatchError(fixed, batch, f" (resizing failed: {err})") from None
    for detail in interpreter.get_input_details():
        scale, zero_point = detail.get("quantization", (0.0, 0))
        value = _random_input(list(detail["shape"]), np.dtype(detail["dtype"]), scale, int(zero_point))
        interpreter.set_tensor(detail["index"], value)

    def run() -> object:
        interpreter.invoke()
        return None

    return Loaded(run=run, provider=tflite_delegate(interpreter), threads=threads)


def tflite_delegate(interpreter: Any) -> str:
    """What runs the ops of an allocated LiteRT interpreter, as read from its graph, not assumed.

    LiteRT applies its default delegate in `allocate_tensors`, and only to the ops it supports: the ops it
    took are replaced by DELEGATE nodes. Its Python build has one default CPU delegate, XNNPACK. No
    DELEGATE node means no delegate took any op: LiteRT's builtin kernels run the whole graph. If the
    (private) node listing is gone in a LiteRT release, the answer is "unknown", not a guess.
    """
    try:
        ops = [detail["op_name"] for detail in interpreter._get_ops_details()]
    except (AttributeError, KeyError, TypeError, ValueError):
        return "unknown"
    return "XNNPACK" if "DELEGATE" in ops else "builtin"


# ---------------------------------------------------------------------------------------------------
# TensorFlow (Keras 3 .keras files and SavedModels)


def _configure_tf_threads(tf: Any, threads: int | None) -> int | None:
    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # runtime already initialized in this process; report what is in force
            log.debug("TensorFlow thread pools already initialized; keeping them")
    return tf.config.threading.get_intra_op_parallelism_threads() or threads


def load_tensorflow(
    path: str | Path, *, batch: int, threads: int | None, provider: str = "auto", **_onnxruntime_only: Any
) -> Loaded:
    """Load a .keras file (safe_mode, no compile) or a SavedModel and time a compiled `tf.function`.

    Never `model.predict`: its per-call overhead (tens of ms) would swamp a small model. The function has
    a fixed input signature at `batch` and is traced here, so tracing is load time, not inference time.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from asp_export._tf import enable_memory_growth

    enable_memory_growth(tf)  # onnxruntime CUDA sessions may follow in this process
    used_threads = _configure_tf_threads(tf, threads)
    path = Path(path)
    if path.is_dir():
        loaded = tf.saved_model.load(str(path))
        signature = loaded.signatures["serving_default"]
        named = signature.structured_input_signature[1]
        names = sorted(named)
        specs = [named[n] for n in names]

        def call(*xs: Any) -> Any:
            return signature(**dict(zip(names, xs, strict=True)))

    else:
        import keras

        model = keras.saving.load_model(str(path), safe_mode=True, compile=False)
        specs = [tf.TensorSpec(t.shape, t.dtype, name=t.name) for t in model.inputs]
        names = [s.name for s in specs]

        def call(*xs: Any) -> Any:
            return model(list(xs) if len(xs) > 1 else xs[0], training=False)

    signature_specs = []
    values = []
    for name, spec in zip(names, specs, strict=True):
        shape = _batched_shape(name, list(spec.shape), batch)
        signature_specs.append(tf.TensorSpec(shape, spec.dtype))
        values.append(tf.constant(_random_input(shape, np.dtype(spec.dtype.as_numpy_dtype))))
    function = tf.function(call, input_signature=signature_specs, jit_compile=False)
    function.get_concrete_function()  # trace now: tracing is part of loading

    def run() -> object:
        outputs = function(*values)
        return [t.numpy() for t in tf.nest.flatten(outputs)]  # .numpy() waits for the device

    device = "GPU:0" if tf.config.list_logical_devices("GPU") else "CPU:0"
    return Loaded(run=run, provider=device, threads=used_threads)


RUNTIMES: dict[str, Runtime] = {
    "onnxruntime": Runtime(
        "onnxruntime",
        ("onnx",),
        "onnxruntime",
        "pip install onnxruntime (or onnxruntime-gpu)",
        load_onnxruntime,
    ),
    "tflite": Runtime("tflite", ("tflite",), "ai_edge_litert", "pip install ai-edge-litert", load_tflite),
    "tensorflow": Runtime(
        "tensorflow", ("keras", "saved_model"), "tensorflow", "pip install tensorflow", load_tensorflow
    ),
}
RUNTIME_CHOICES = (*RUNTIMES, "all")


def runtime_for_format(fmt: str) -> str | None:
    """The runtime that runs files of `fmt`, or None when no runtime here reads it."""
    for runtime in RUNTIMES.values():
        if fmt in runtime.formats:
            return runtime.name
    return None


def detect_format(path: str | Path) -> str | None:
    """Format of an explicit file from its name: .onnx, .tflite, .keras, or a SavedModel directory."""
    path = Path(path)
    if path.is_dir():
        return "saved_model" if (path / "saved_model.pb").is_file() else None
    files = {suffix: key for key, suffix in ARTIFACT_SUFFIXES.items() if suffix.startswith(".")}
    return files.get(path.suffix.lower())
