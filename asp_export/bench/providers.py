"""Which onnxruntime execution provider to ask for, and which one really ran.

onnxruntime-gpu lists TensorRT and CUDA in `get_available_providers()` on machines without a GPU
(the list says what was compiled in, not what can run), and when a requested provider fails to load it
silently falls back to the next one. So asp always passes an explicit priority list and records
`session.get_providers()[0]` -- the provider the session actually uses -- next to what was requested.

No onnxruntime import at module level: the table is needed by the CLI for `--provider` choices.
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass
from typing import Any

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

_reported: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class ProviderChoice:
    """The outcome of creating a session: requested (`auto`, `cuda`, ...) and actual provider names."""

    requested: str
    actual: str

    @property
    def fallback(self) -> bool:
        """True when an explicitly requested provider could not run. `auto` never counts as fallback."""
        return self.requested != "auto" and self.actual != PROVIDERS[self.requested]

    @property
    def is_gpu(self) -> bool:
        return self.actual in GPU_PROVIDERS


def provider_list(requested: str, compiled_in: list[str] | tuple[str, ...]) -> list[str]:
    """Explicit priority list for `requested`, keeping only providers this onnxruntime build has.

    `auto` and `tensorrt` try TensorRT -> CUDA -> CPU, `cuda` tries CUDA -> CPU, `cpu` only CPU.
    CPU is always last so a session can always be created.

    Example:
        >>> provider_list("cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"])
        ['CUDAExecutionProvider', 'CPUExecutionProvider']
    """
    if requested not in PROVIDER_CHOICES:
        raise ValueError(f"Unknown provider {requested!r}; valid: {', '.join(PROVIDER_CHOICES)}")
    start = 0 if requested == "auto" else PRIORITY.index(requested)
    chain = [PROVIDERS[key] for key in PRIORITY[start:]]
    return [name for name in chain if name in compiled_in or name == PROVIDERS["cpu"]]


def create_session(path: str, requested: str, session_options: Any) -> tuple[Any, ProviderChoice]:
    """Create an `InferenceSession` with the explicit provider list and report what really ran.

    onnxruntime prints an "EP Error" banner to stdout and library-load errors to stderr when a GPU
    provider cannot start; both are swallowed here (the outcome is logged in one line instead), so
    `asp bench --format json` stays parseable.
    """
    import onnxruntime as ort

    providers = provider_list(requested, ort.get_available_providers())
    wants_gpu = any(name in GPU_PROVIDERS for name in providers)
    if wants_gpu:
        ort.set_default_logger_severity(4)  # provider-library load failures are logged at ERROR
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            session = ort.InferenceSession(path, sess_options=session_options, providers=providers)
    finally:
        if wants_gpu:
            ort.set_default_logger_severity(3)
    choice = ProviderChoice(requested=requested, actual=session.get_providers()[0])
    _report(choice, providers)
    return session, choice


def _report(choice: ProviderChoice, tried: list[str]) -> None:
    key = (choice.requested, choice.actual)
    if key in _reported:
        return
    _reported.add(key)
    if choice.fallback:
        log.warning(
            "onnxruntime: %s requested but it cannot run here; fell back to %s (recorded as fallback).",
            PROVIDERS[choice.requested],
            choice.actual,
        )
    elif choice.requested == "auto" and tried and choice.actual != tried[0]:
        log.info("onnxruntime: auto tried %s; using %s.", " -> ".join(tried), choice.actual)
