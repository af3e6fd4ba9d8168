"""Shared test setup: CPU only, quiet TensorFlow, deterministic seeds, tiny data on disk."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
#: What the user had, for the `gpu` tests' subprocesses (tests/test_gpu_smoke.py); None = unset.
USER_CUDA_VISIBLE_DEVICES = os.environ.get("CUDA_VISIBLE_DEVICES")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # tests are CPU-only, even on a GPU box

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same random state."""
    import random

    import numpy as np

    random.seed(0)
    np.random.seed(0)
    yield


@pytest.fixture
def keras_seed():
    import keras

    keras.utils.set_random_seed(0)
    return 0
