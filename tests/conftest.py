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

#: The one switch for tests marked `slow` (6-60 s each): they run with ASP_SLOW_TESTS=1 (`make test`,
#: CI) or when selected with `-m slow`, and are skipped, with this reason, otherwise.
SLOW_REASON = "slow test (6-60 s): set ASP_SLOW_TESTS=1 or select with -m slow"


def pytest_collection_modifyitems(config, items):
    if os.environ.get("ASP_SLOW_TESTS") == "1" or "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason=SLOW_REASON)
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(skip)


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
