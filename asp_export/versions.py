"""Package and machine versions recorded in every artifact, without importing TensorFlow."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib import metadata

TRACKED_PACKAGES = (
    "asp-export",
    "tensorflow",
    "keras",
    "numpy",
    "onnx",
    "tf2onnx",
    "onnxruntime-gpu",
    "onnxruntime",
    "ai-edge-litert",
    "tensorflow-model-optimization",
)


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def asp_version() -> str:
    try:
        return metadata.version("asp-export")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def machine_info() -> dict[str, object]:
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def gpu_name() -> str | None:
    """Name of the first NVIDIA GPU from nvidia-smi, or None when there is none (or no driver)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    names = [line.strip() for line in out.splitlines() if line.strip()]
    return names[0] if names else None


def visible_gpu() -> str | None:
    """The NVIDIA GPU this process may use: `gpu_name()`, unless CUDA_VISIBLE_DEVICES hides every GPU.

    Without TensorFlow or onnxruntime: it is how asp tells "this machine has a GPU the library did
    not use" (a warning) from "no GPU here" or "GPUs deliberately hidden" (nothing to say).
    """
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
    if hidden is not None and hidden.strip() in ("", "-1", "NoDevFiles"):
        return None
    return gpu_name()
