"""The onnxruntime GPU paths of `asp bench`, on a CPU (issue 18): a GPU is "visible" through the one
function that asks nvidia-smi, and onnxruntime's session constructor is wrapped only to see what asp
handed it. Everything else -- onnxruntime failing to load its CUDA and TensorRT libraries, falling back,
refusing a session in strict mode -- is the real onnxruntime-gpu on this GPU-less machine.

No TensorFlow in this module (asp bench must not need it).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import onnxruntime as ort
import pytest
from click.testing import CliRunner
from test_bench import FAST, make_onnx

from asp_export.bench import BenchConfig, run_bench
from asp_export.bench import providers as providers_module
from asp_export.bench.profile import summarize_profile
from asp_export.bench.providers import check_strict_provider
from asp_export.bench.runtimes import load_onnxruntime
from asp_export.cli import cli
from asp_export.errors import ProviderError

GPU_BUILD = "CUDAExecutionProvider" in ort.get_available_providers()
needs_gpu_build = pytest.mark.skipif(not GPU_BUILD, reason="plain onnxruntime has no GPU providers to fail")


@pytest.fixture(autouse=True)
def _fresh_reports():
    providers_module._reported.clear()
    yield
    providers_module._reported.clear()


@pytest.fixture
def gpu_visible(monkeypatch):
    """nvidia-smi lists a GPU (the only stub: there is no GPU here, and onnxruntime cannot use one)."""
    monkeypatch.setattr(providers_module, "visible_gpu", lambda: "NVIDIA A100-SXM4-40GB")


@pytest.fixture
def sessions(monkeypatch):
    """Record every InferenceSession asp creates (providers, provider options, config) and create it."""
    seen: list[dict] = []
    real = ort.InferenceSession

    def recording(path, sess_options=None, providers=None, provider_options=None, **kwargs):
        seen.append({"providers": list(providers or []), "provider_options": provider_options, **kwargs})
        return real(
            path, sess_options=sess_options, providers=providers, provider_options=provider_options, **kwargs
        )

    monkeypatch.setattr(ort, "InferenceSession", recording)
    return seen


def _config(files, **kwargs) -> BenchConfig:
    return BenchConfig(
        inputs=tuple(map(str, files)),
        runtimes=("onnxruntime",),
        batches=(1,),
        threads=1,
        policy=FAST,
        **kwargs,
    )


@needs_gpu_build
def test_auto_ending_on_the_cpu_while_a_gpu_is_visible_is_a_fallback_with_the_reason(
    tmp_path, gpu_visible, caplog
):
    files = make_onnx(tmp_path / "dense.onnx", 8), make_onnx(tmp_path / "pruned.onnx", 4)
    with caplog.at_level(logging.WARNING, logger="asp_export.bench"):
        data = run_bench(_config(files, out=str(tmp_path / "b"))).data
    for row in data["rows"]:
        assert row["status"] == "ok" and row["provider"] == "CPUExecutionProvider"
        assert row["provider_requested"] == "auto" and row["fallback"] is True
        # onnxruntime's own words, e.g. "Failed to load library ...providers_cuda.so with error: ..."
        assert "Failed" in row["provider_error"], row["provider_error"]
    (warning,) = [r.getMessage() for r in caplog.records if "GPU is visible" in r.getMessage()]
    assert "NVIDIA A100" in warning and "CPUExecutionProvider" in warning and "Failed" in warning


def test_auto_on_the_cpu_without_a_visible_gpu_is_not_a_fallback(tmp_path):
    files = make_onnx(tmp_path / "dense.onnx", 8), make_onnx(tmp_path / "pruned.onnx", 4)
    data = run_bench(_config(files, out=str(tmp_path / "b"))).data
    assert {(r["provider"], r["fallback"]) for r in data["rows"]} == {("CPUExecutionProvider", False)}


@needs_gpu_build
def test_preload_dlls_runs_once_before_the_first_gpu_session_and_its_output_is_kept_off_stdout(
    tmp_path, monkeypatch, sessions, capsys
):
    order: list[str] = []
    monkeypatch.setattr(providers_module, "_preloaded", [])
    monkeypatch.setattr(ort, "preload_dlls", lambda: (order.append("preload"), print("Failed to load x")))
    path = make_onnx(tmp_path / "m.onnx", 4)
    load_onnxruntime(path, batch=1, threads=1, provider="cpu")
    assert order == []  # a CPU session needs no CUDA libraries
    real_count = len(sessions)
    load_onnxruntime(path, batch=1, threads=1, provider="cuda")
    load_onnxruntime(path, batch=1, threads=1, provider="cuda")
    assert order == ["preload"] and len(sessions) > real_count
    assert "Failed to load x" not in capsys.readouterr().out


@needs_gpu_build
def test_an_onnxruntime_without_preload_dlls_still_creates_sessions(tmp_path, monkeypatch):
    monkeypatch.setattr(providers_module, "_preloaded", [])
    monkeypatch.delattr(ort, "preload_dlls", raising=False)
    loaded = load_onnxruntime(make_onnx(tmp_path / "m.onnx", 4), batch=1, threads=1, provider="cuda")
    assert loaded.provider == "CPUExecutionProvider" and loaded.fallback is True


@needs_gpu_build
def test_tensorrt_gets_fp16_for_fp16_files_and_caches_under_the_bench_dir(tmp_path, sessions):
    widths = {"dense": 8, "pruned": 4}  # two file contents, each once named fp16 and once fp32
    files = [make_onnx(tmp_path / f"{m}_{p}.onnx", widths[m]) for p in ("fp16", "fp32") for m in widths]
    out = tmp_path / "b"
    data = run_bench(_config(files, out=str(out), provider="tensorrt")).data
    trt_calls = [c for c in sessions if c["providers"][0] == "TensorrtExecutionProvider"]
    assert len(trt_calls) == 4
    for call in trt_calls:
        assert call["provider_options"][0]["trt_engine_cache_enable"] == "True"
    by_file = {Path(r["path"]).name: r for r in data["rows"]}
    for name, row in by_file.items():
        options = row["provider_options"]
        assert options["trt_fp16_enable"] == ("True" if "fp16" in name else "False")
        assert options["trt_engine_cache_enable"] == "True" and options["trt_timing_cache_enable"] == "True"
        assert options["trt_timing_cache_path"] == str(out / "trt_cache")
        assert Path(options["trt_engine_cache_path"]).parent == out / "trt_cache"
        assert options["trt_engine_cache_path"].endswith("-b1")
    # one engine directory per file content: an engine built for other weights is never reused
    assert len({r["provider_options"]["trt_engine_cache_path"] for r in data["rows"]}) == 2
    assert data["settings"]["tensorrt_cache"] == str(out / "trt_cache")
    assert not (out / "trt_cache").exists()  # no GPU visible: no engines, no empty directories
    written = json.loads(json.dumps(data))  # what bench.json holds
    assert written["rows"][0]["provider_options"]["trt_fp16_enable"] in ("True", "False")


@needs_gpu_build
def test_strict_provider_refuses_the_cpu_and_exits_1_in_one_line(tmp_path, sessions):
    files = make_onnx(tmp_path / "dense.onnx", 8), make_onnx(tmp_path / "pruned.onnx", 4)
    data = run_bench(_config(files, out=str(tmp_path / "b"), provider="cuda", strict_provider=True)).data
    for row in data["rows"]:
        assert row["status"] == "load_failed"
        # onnxruntime itself refused: the session was told to put no node on the CPU
        assert "fallback to CPU EP has been explicitly disabled" in row["error"], row["error"]
    assert all("CPUExecutionProvider" not in c["providers"] for c in sessions)
    with pytest.raises(ProviderError, match="not on a GPU provider"):
        check_strict_provider(data)

    result = CliRunner().invoke(
        cli,
        ["bench", *map(str, files), "--provider", "cuda", "--strict-provider", "--batch", "1"]
        + ["--warmup", "1", "--iterations", "3", "--min-time", "0", "--out", str(tmp_path / "c")],
    )
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines()[-1].startswith("Error: --strict-provider:")
    assert (tmp_path / "c" / "bench.json").is_file()  # the evidence is written before the exit


def test_strict_provider_with_the_cpu_provider_is_bad_usage(tmp_path):
    path = make_onnx(tmp_path / "m.onnx", 4)
    result = CliRunner().invoke(cli, ["bench", str(path), "--provider", "cpu", "--strict-provider"])
    assert result.exit_code == 2 and "needs a GPU provider" in result.output
    assert not (tmp_path / "bench").exists()


def test_profile_counts_nodes_per_provider(tmp_path):
    files = make_onnx(tmp_path / "dense.onnx", 8), make_onnx(tmp_path / "pruned.onnx", 4)
    data = run_bench(_config(files, out=str(tmp_path / "b"), provider="cpu", profile=True)).data
    for profile in data["profiles"]:
        placed = profile["nodes_by_provider"]
        assert list(placed) == ["CPUExecutionProvider"] and placed["CPUExecutionProvider"] >= 2
        assert placed["CPUExecutionProvider"] == sum(op["nodes"] for op in profile["ops"])


def test_profile_summary_counts_each_node_once_under_the_provider_that_ran_it():
    def node(name, provider, ts):
        args = {"op_name": name.split("_")[0], "provider": provider}
        return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": 5, "args": args}

    events = [{"cat": "Session", "name": "model_run", "ts": t, "dur": 50} for t in (0, 100)]
    for start in (10, 110):
        events += [
            node("Conv_0", "CUDAExecutionProvider", start),
            node("Relu_1", "CUDAExecutionProvider", start + 10),
            node("Shape_2", "CPUExecutionProvider", start + 20),
        ]
    summary = summarize_profile(events, skip_runs=1)
    assert summary["nodes_by_provider"] == {"CPUExecutionProvider": 1, "CUDAExecutionProvider": 2}
