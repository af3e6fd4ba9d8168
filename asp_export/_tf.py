"""Import TensorFlow without its start-up noise, and make it share GPUs.

TensorFlow's C++ side prints oneDNN, CUDA-driver and cuInit lines straight to
file descriptor 2 before its log level applies, which buries asp's own output
on every CPU-only machine. Imports only the leaf `_io` from the package.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from asp_export._io import stderr_fd_captured

log = logging.getLogger(__name__)


def import_tensorflow_quietly(*also: str) -> None:
    """Import TensorFlow (then the modules in `also`, e.g. tf_keras) and probe its devices with fd 2
    silenced (Python errors, ModuleNotFoundError included, still raise)."""
    import importlib

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with stderr_fd_captured():  # and dropped
        if "tensorflow" not in sys.modules:
            import tensorflow as tf

            enable_memory_growth(tf)
        for name in also:
            importlib.import_module(name)


def enable_memory_growth(tf: Any) -> int:
    """Let TensorFlow take GPU memory as it needs it, not all of it when it starts.

    By default TensorFlow maps nearly the whole memory of every visible GPU, so an onnxruntime
    CUDA session created later in the same process (`asp bench --runtime all --profile`) finds
    none left. Memory growth must be set before TensorFlow initializes the GPUs; once it has,
    the setting cannot change and is left as it is. Returns how many GPUs were set.
    """
    done = 0
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
            done += 1
        except (RuntimeError, ValueError) as err:  # already initialized
            log.debug("memory growth unchanged on %s: %s", gpu.name, err)
    return done
