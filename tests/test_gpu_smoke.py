"""`pytest -m gpu`: the GPU paths for real, where an NVIDIA GPU is visible (skipped elsewhere).

The rest of the suite hides GPUs (conftest.py sets CUDA_VISIBLE_DEVICES=""), so these run asp in
subprocesses with the user's own CUDA_VISIBLE_DEVICES. The full smoke script takes about 5 minutes and
runs only when the `gpu` marker is selected; docs/install.md#checking-a-gpu-machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import USER_CUDA_VISIBLE_DEVICES

from asp_export.versions import gpu_name

REPO = Path(__file__).resolve().parents[1]


def _gpu_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    if USER_CUDA_VISIBLE_DEVICES is not None:
        env["CUDA_VISIBLE_DEVICES"] = USER_CUDA_VISIBLE_DEVICES
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # this env's asp
    return env


def _visible_gpu() -> str | None:
    hidden = USER_CUDA_VISIBLE_DEVICES is not None and USER_CUDA_VISIBLE_DEVICES.strip() in ("", "-1")
    return None if hidden else gpu_name()


pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(_visible_gpu() is None, reason="no NVIDIA GPU visible (nvidia-smi)"),
]

_CUDA_SESSION = """
import json, sys
from asp_export.bench.runtimes import load_onnxruntime
loaded = load_onnxruntime(sys.argv[1], batch=2, threads=1, provider="cuda")
loaded.run()
print(json.dumps({"provider": loaded.provider, "fallback": loaded.fallback, "error": loaded.provider_error}))
"""


def test_onnxruntime_runs_a_model_on_cuda(tmp_path):
    from test_bench import make_onnx

    path = make_onnx(tmp_path / "m.onnx", 8)
    proc = subprocess.run(
        [sys.executable, "-c", _CUDA_SESSION, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=_gpu_env(),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    outcome = json.loads(proc.stdout.strip().splitlines()[-1])
    assert outcome == {"provider": "CUDAExecutionProvider", "fallback": False, "error": None}, outcome


def test_gpu_smoke_script_passes(tmp_path, request):
    if "gpu" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("the 5-minute smoke script runs only with `pytest -m gpu`")
    env = {**_gpu_env(), "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_smoke.sh"), str(tmp_path / "smoke")],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    summary = proc.stdout[proc.stdout.rfind("gpu_smoke summary") :]
    assert proc.returncode == 0, summary or proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "FAIL" not in summary, summary
