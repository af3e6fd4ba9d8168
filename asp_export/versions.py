"""Package and machine versions recorded in every artifact, without importing TensorFlow."""

from __future__ import annotations

import os
import platform
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
