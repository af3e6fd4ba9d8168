"""Which onnxruntime execution provider to ask for, and which one really ran.

onnxruntime-gpu lists TensorRT and CUDA in `get_available_providers()` on machines without a GPU
(the list says what was compiled in, not what can run), and when a requested provider fails to load it
silently falls back to the next one. So asp always passes an explicit priority list and records
`session.get_providers()[0]` -- the provider the session actually uses -- next to what was requested,
with onnxruntime's own words for why an earlier provider did not load.

`auto` ending on the CPU is a fallback too when a GPU is visible (nvidia-smi lists one and
CUDA_VISIBLE_DEVICES does not hide it): that is a broken GPU install, not a CPU machine. Strict mode
(`--strict-provider`) goes further: the CPU is left out of the list and onnxruntime is told not to place
any node on it (`session.disable_cpu_ep_fallback`), so a session either runs on a GPU provider or is not
created. CUDA places small shape computations on the CPU on purpose; a graph that has them is refused in
strict mode (docs/bench.md).

No onnxruntime import at module level: the table is needed by the CLI for `--provider` choices.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asp_export._io import sha256_of, stderr_fd_captured
from asp_export.errors import ProviderError, one_line
from asp_export.versions import visible_gpu

log = logging.getLogger(__name__)

#: `--provider` value -> onnxruntime provider name.
PROVIDERS: dict[str, str] = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
#: Priority order for `auto`, and the chain an explicit request falls back along.
PRIORITY = ("tensorrt", "cuda", "cpu")
PROVIDER_CHOICES = ("auto", *PRIORITY)
GPU_PROVIDERS = frozenset({PROVIDERS["tensorrt"], PROVIDERS["cuda"]})
#: Session option that makes onnxruntime refuse a session with any node on the CPU provider.
STRICT_CONFIG_KEY = "session.disable_cpu_ep_fallback"

_reported: set[tuple[str, str]] = set()
_preloaded: list[bool] = []


@dataclass(frozen=True)
class ProviderChoice:
    """The outcome of creating a session: requested (`auto`, `cuda`, ...) and actual provider names.

    Attributes:
        gpu_visible: this process may use an NVIDIA GPU (`versions.visible_gpu`).
        error: why the providers tried before `actual` did not run, in onnxruntime's words.
        options: the provider options given to TensorRT (empty when TensorRT was not tried).
    """

    requested: str
    actual: str
    gpu_visible: bool = False
    error: str | None = None
    options: dict[str, str] = field(default_factory=dict)

    @property
    def fallback(self) -> bool:
        """An explicit request that did not get its provider, or `auto` on the CPU while a GPU is visible."""
        if self.requested == "auto":
            return self.gpu_visible and not self.is_gpu
        return self.actual != PROVIDERS[self.requested]

    @property
    def is_gpu(self) -> bool:
        return self.actual in GPU_PROVIDERS


def provider_list(
    requested: str, compiled_in: list[str] | tuple[str, ...], *, strict: bool = False
) -> list[str]:
    """Explicit priority list for `requested`, keeping only providers this onnxruntime build has.

    `auto` and `tensorrt` try TensorRT -> CUDA -> CPU, `cuda` tries CUDA -> CPU, `cpu` only CPU.
    CPU is always last so a session can always be created -- except in strict mode, which leaves it out.

    Example:
        >>> provider_list("cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"])
        ['CUDAExecutionProvider', 'CPUExecutionProvider']
    """
    if requested not in PROVIDER_CHOICES:
        raise ValueError(f"Unknown provider {requested!r}; valid: {', '.join(PROVIDER_CHOICES)}")
    if strict and requested == "cpu":
        raise ValueError("strict provider mode needs a GPU provider (auto, cuda or tensorrt), not cpu")
    start = 0 if requested == "auto" else PRIORITY.index(requested)
    chain = [PROVIDERS[key] for key in PRIORITY[start:]]
    found = [name for name in chain if name in compiled_in or name == PROVIDERS["cpu"]]
    if not strict:
        return found
    gpu_only = [name for name in found if name != PROVIDERS["cpu"]]
    if not gpu_only:
        raise ProviderError(
            f"Strict provider mode: this onnxruntime has no GPU provider (it offers {list(compiled_in)}); "
            'install asp with the gpu extra (pip install -e ".[gpu]").'
        )
    return gpu_only


def tensorrt_options(
    model_path: str | Path, *, batch: int, fp16: bool, cache_dir: str | Path | None
) -> dict[str, str]:
    """TensorRT provider options: fp16 kernels for fp16 files, and engine + timing caches under `cache_dir`.

    Without a cache TensorRT rebuilds every engine in every session (seconds to minutes). Its engine
    file names do not depend on the weights, so an engine built for an earlier export of the same
    architecture would be reused silently; each (file content, batch) therefore gets its own engine
    directory. The timing cache (per-layer kernel timings) is safe to share between models.
    """
    options = {"trt_fp16_enable": "True" if fp16 else "False"}
    if cache_dir is not None:
        stat = Path(model_path).stat()
        digest = _content_digest(str(model_path), stat.st_size, stat.st_mtime_ns)
        options.update(
            trt_engine_cache_enable="True",
            trt_engine_cache_path=str(Path(cache_dir) / f"{digest}-b{batch}"),
            trt_timing_cache_enable="True",
            trt_timing_cache_path=str(cache_dir),
        )
    return options


@functools.lru_cache(maxsize=64)
def _content_digest(path: str, size: int, mtime_ns: int) -> str:
    """First 16 hex digits of the file's sha256; cached per (path, size, mtime): one read per file."""
    return sha256_of(path)[:16]


def preload_cuda_libraries(ort: Any) -> None:
    """Load the pip-installed CUDA and cuDNN libraries before the first GPU session (once per process).

    onnxruntime-gpu >= 1.21 has `preload_dlls()`: without it the CUDA provider may not find the
    `nvidia-*-cu12` wheels' libraries (libcudnn.so.9 not found, onnxruntime issue 25609), notably
    when onnxruntime is imported before TensorFlow, as `asp bench` does. What it prints goes to
    the debug log; on a machine without CUDA it fails and the session falls back as usual.
    """
    if _preloaded or not hasattr(ort, "preload_dlls"):
        return
    _preloaded.append(True)
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed), stderr_fd_captured():
            ort.preload_dlls()
    except Exception as err:  # noqa: BLE001 - a failed preload is reported by the session that follows
        log.debug("onnxruntime.preload_dlls() failed: %s", one_line(err))
    if printed.getvalue().strip():
        log.debug("onnxruntime.preload_dlls(): %s", " ".join(printed.getvalue().split()))


def create_session(
    path: str,
    requested: str,
    session_options: Any,
    *,
    strict: bool = False,
    trt_options: dict[str, str] | None = None,
) -> tuple[Any, ProviderChoice]:
    """Create an `InferenceSession` with the explicit provider list and report what really ran.

    onnxruntime prints an "EP Error" banner to stdout and provider-load errors to stderr when a GPU
    provider cannot start; both are captured here (the outcome is logged in one line and kept in
    `ProviderChoice.error`), so `asp bench --format json` stays parseable.

    Raises:
        ProviderError: strict mode, and no GPU provider could run the model.
    """
    import onnxruntime as ort

    providers = provider_list(requested, ort.get_available_providers(), strict=strict)
    wants_gpu = any(name in GPU_PROVIDERS for name in providers)
    if wants_gpu:
        preload_cuda_libraries(ort)
    if strict:
        session_options.add_session_config_entry(STRICT_CONFIG_KEY, "1")
    gpu = visible_gpu() if wants_gpu else None
    trt = dict(trt_options or {}) if PROVIDERS["tensorrt"] in providers else {}
    if trt.get("trt_engine_cache_path") and gpu is not None:  # no GPU, no engine: no empty directories
        Path(trt["trt_engine_cache_path"]).mkdir(parents=True, exist_ok=True)

    refused: list[str] = []
    chain = providers
    while True:
        try:
            session, logged = _open(ort, path, chain, session_options, trt, quiet=wants_gpu, strict=strict)
            break
        except Exception as err:
            if not strict:
                raise
            refused.append(f"{chain[0]}: {one_line(err, limit=400)}")
            chain = chain[1:]
            if not chain:
                raise ProviderError(
                    f"Strict provider mode: no GPU provider could run {Path(path).name}: "
                    + "; ".join(refused)
                ) from None
    actual = session.get_providers()[0]
    error = None
    if actual != providers[0]:
        error = "; ".join(refused + provider_load_errors(logged)) or "onnxruntime gave no reason"
    choice = ProviderChoice(
        requested=requested,
        actual=actual,
        gpu_visible=gpu is not None,
        error=error,
        options=trt,
    )
    _report(choice, providers, gpu)
    return session, choice


def _open(ort, path, providers, session_options, trt, *, quiet: bool, strict: bool):
    """One `InferenceSession` attempt; returns it and what onnxruntime printed while it was created."""
    provider_options = [trt if name == PROVIDERS["tensorrt"] else {} for name in providers]
    printed = io.StringIO()
    if quiet:  # provider-library load failures are logged as errors and warnings: keep them
        ort.set_default_logger_severity(2)
    try:
        with contextlib.redirect_stdout(printed), stderr_fd_captured() as logged:
            session = ort.InferenceSession(
                path,
                sess_options=session_options,
                providers=providers,
                provider_options=provider_options,
                enable_fallback=0 if strict else 1,  # strict: asp walks the GPU chain itself
            )
    finally:
        if quiet:
            ort.set_default_logger_severity(3)
    return session, printed.getvalue() + "\n" + logged.text


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ORT_LOG_LINE = re.compile(r"\[[EW]:onnxruntime:[^\]]*\]\s*(.+)")


def provider_load_errors(text: str) -> list[str]:
    """onnxruntime's error and warning log lines in `text`, shortened to what went wrong.

    Example:
        >>> provider_load_errors("[E:onnxruntime:Default, x.cc:1 f()] /src/y.cc:2 g() "
        ...     "[ONNXRuntimeError] : 1 : FAIL : Failed to load library libcudnn.so.9")
        ['Failed to load library libcudnn.so.9']
    """
    found: list[str] = []
    for line in _ANSI.sub("", text).splitlines():
        match = _ORT_LOG_LINE.search(line)
        if not match:
            continue
        message = match.group(1).strip()
        if " FAIL : " in message:
            message = message.split(" FAIL : ", 1)[1]
        message = message.split(" Please install", 1)[0].strip()
        if message and message not in found:
            found.append(message)
    return found


def _report(choice: ProviderChoice, tried: list[str], gpu: str | None) -> None:
    key = (choice.requested, choice.actual)
    if key in _reported:
        return
    _reported.add(key)
    reason = f": {choice.error}" if choice.error else ""
    if choice.fallback and choice.requested == "auto":
        log.warning(
            "onnxruntime: a GPU is visible (%s) but auto ended on %s (recorded as fallback)%s",
            gpu,
            choice.actual,
            reason,
        )
    elif choice.fallback:
        log.warning(
            "onnxruntime: %s requested but it cannot run here; fell back to %s (recorded as fallback)%s",
            PROVIDERS[choice.requested],
            choice.actual,
            reason,
        )
    elif choice.requested == "auto" and tried and choice.actual != tried[0]:
        log.info("onnxruntime: auto tried %s; using %s.", " -> ".join(tried), choice.actual)


def check_strict_provider(data: dict[str, Any]) -> None:
    """Under --strict-provider, every onnxruntime row must have run, and on the provider asked for.

    Raises:
        ProviderError: naming the first offending rows (exit 1); bench.json is already written.
    """
    if not data["settings"].get("strict_provider"):
        return
    bad = [
        f"{row['model']} batch {row['batch']}: "
        + (row["error"] if row["status"] != "ok" else f"ran on {row['provider']} ({row['provider_error']})")
        for row in data["rows"]
        if row["runtime"] == "onnxruntime" and (row["status"] != "ok" or row["fallback"])
    ]
    if bad:
        more = f" (and {len(bad) - 2} more)" if len(bad) > 2 else ""
        raise ProviderError(
            f"--strict-provider: {len(bad)} onnxruntime row(s) not on a GPU provider: "
            + "; ".join(bad[:2])
            + more
        )
