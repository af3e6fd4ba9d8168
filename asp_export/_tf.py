"""Import TensorFlow without its start-up noise.

TensorFlow's C++ side prints oneDNN, CUDA-driver and cuInit lines straight to
file descriptor 2 before its log level applies, which buries asp's own output
on every CPU-only machine. Leaf module: imports nothing from the package.
"""

from __future__ import annotations

import contextlib
import os
import sys


@contextlib.contextmanager
def _stderr_fd_silenced():
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no real fd 2 (embedded interpreters): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tensorflow_quietly(*also: str) -> None:
    """Import TensorFlow (then the modules in `also`, e.g. tf_keras) and probe its devices with fd 2
    silenced (Python errors, ModuleNotFoundError included, still raise)."""
    import importlib

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _stderr_fd_silenced():
        if "tensorflow" not in sys.modules:
            import tensorflow as tf

            tf.config.list_physical_devices("GPU")
        for name in also:
            importlib.import_module(name)
