#!/usr/bin/env bash
# GPU smoke test: the GPU paths asp's CI cannot run, run once on a real NVIDIA machine.
#
#   pip install -e ".[gpu]"            # asp with the CUDA 12 wheels (docs/install.md)
#   bash benchmarks/gpu_smoke.sh [WORK_DIR]
#
# Plain `asp` commands (python only to read their JSON), no network, about 5 minutes on one GPU
# (10 at most): prints the GPU, the tensorflow / onnxruntime / cuDNN versions and onnxruntime's
# providers; prunes gasl-mnist on digits for 2 epochs in fp32 and in mixed precision; exports ONNX
# fp32 and fp16 with parity; benches onnxruntime CUDA (with --profile), TensorRT, and --runtime all.
# Ends with one line per check, "PASS|FAIL|SKIP <check>: <why>", and exits 1 if any check failed.
#
# Without a visible NVIDIA GPU it stops after the first check (exit 1). GPU_SMOKE_ALLOW_CPU=1 runs
# every step anyway (to try the script itself on a CPU machine: the GPU checks then fail, saying why).
# WORK_DIR (default: a new temporary directory) receives the run directories and reports.
set -u

ASP=${ASP:-asp}
PYTHON=${PYTHON:-python}
STEP_TIMEOUT=${STEP_TIMEOUT:-300}
WORK=${1:-$(mktemp -d -t asp-gpu-smoke.XXXXXX)}
mkdir -p "$WORK"
LOG="$WORK/gpu_smoke.log"
: >"$LOG"

RESULTS=()
FAILED=0
result() { # STATUS CHECK WHY
    RESULTS+=("$1 $2: $3")
    [ "$1" = FAIL ] && FAILED=$((FAILED + 1))
    echo "== $1 $2: $3"
}
run() { # NAME COMMAND... -> exit status of the command; output in $WORK/NAME.out and the log
    local name=$1
    shift
    echo "== $name: $*" | tee -a "$LOG"
    timeout "$STEP_TIMEOUT" "$@" >"$WORK/$name.out" 2>&1
    local status=$?
    cat "$WORK/$name.out" >>"$LOG"
    tail -n 5 "$WORK/$name.out"
    [ "$status" = 124 ] && echo "   (stopped after ${STEP_TIMEOUT}s)"
    return "$status"
}
pyjson() { # python code reading JSON files; prints one line (the reason), exit status = verdict
    "$PYTHON" - "$@" 2>>"$LOG"
}
finish() {
    echo
    echo "gpu_smoke summary ($WORK):"
    printf '%s\n' "${RESULTS[@]}"
    [ "$FAILED" = 0 ]
    exit $?
}

# --- 0. the machine --------------------------------------------------------------------------------
echo "== machine"
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
fi
"$PYTHON" - <<'EOF'
from importlib import metadata
for name in ("asp-export", "tensorflow", "keras", "onnxruntime-gpu", "onnxruntime", "nvidia-cudnn-cu12",
             "nvidia-cuda-runtime-cu12", "tensorrt", "tensorrt-cu12-libs"):
    try:
        print(f"   {name} {metadata.version(name)}")
    except metadata.PackageNotFoundError:
        print(f"   {name} (not installed)")
try:
    import onnxruntime as ort
    print("   onnxruntime available providers:", ort.get_available_providers())
except ImportError as err:
    print("   onnxruntime cannot be imported:", err)
EOF

GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
if [ -n "$GPU" ]; then
    result PASS gpu "nvidia-smi lists $GPU"
else
    result FAIL gpu "no NVIDIA GPU: nvidia-smi is missing or lists none"
    if [ "${GPU_SMOKE_ALLOW_CPU:-0}" != 1 ]; then
        for check in tensorflow_gpu onnxruntime_gpu_build prune_fp32 prune_mixed_precision export_onnx \
            bench_cuda bench_tensorrt bench_all; do
            result SKIP "$check" "no GPU"
        done
        finish
    fi
fi

# --- 1. the libraries see it ------------------------------------------------------------------------
WHY=$("$PYTHON" - <<'EOF' 2>>"$LOG"
import os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf
info = tf.sysconfig.get_build_info()
gpus = tf.config.list_physical_devices("GPU")
print(f"tensorflow {tf.__version__} (CUDA {info.get('cuda_version')}, cuDNN {info.get('cudnn_version')}) "
      f"sees {len(gpus)} GPU(s)")
raise SystemExit(0 if gpus else 1)
EOF
)
if [ $? = 0 ]; then result PASS tensorflow_gpu "$WHY"; else result FAIL tensorflow_gpu "${WHY:-tensorflow failed to import}"; fi

WHY=$("$PYTHON" - <<'EOF' 2>>"$LOG"
import onnxruntime as ort
providers = ort.get_available_providers()
ok = "CUDAExecutionProvider" in providers
print(f"onnxruntime {ort.__version__} has {'a' if ok else 'no'} CUDA provider built in; preload_dlls "
      f"{'present' if hasattr(ort, 'preload_dlls') else 'absent'}")
raise SystemExit(0 if ok else 1)
EOF
)
if [ $? = 0 ]; then result PASS onnxruntime_gpu_build "$WHY"; else result FAIL onnxruntime_gpu_build "${WHY:-onnxruntime failed to import}"; fi

# --- 2. training: fp32 and mixed precision ------------------------------------------------------------
TRAINED=
devices_check=$(cat <<'EOF'
import json, sys
devices = json.load(open(sys.argv[1] + "/config.json"))["devices"]
if devices.get("warning"):
    print(devices["warning"])
    raise SystemExit(1)
print(f"trained on {devices['device']} ({devices['strategy']}, GPUs {devices['gpus']})")
raise SystemExit(0 if devices["device"] == "GPU" else 1)
EOF
)
for mode in fp32 mixed_precision; do
    extra=()
    [ "$mode" = mixed_precision ] && extra=(--mixed-precision)
    if run "prune_$mode" "$ASP" prune --model gasl-mnist --data digits --epochs 2 ${extra[@]+"${extra[@]}"} \
        --out "$WORK/run_$mode" --force; then
        WHY=$(pyjson "$WORK/run_$mode" <<<"$devices_check")
        if [ $? = 0 ]; then
            result PASS "prune_$mode" "$WHY"
            [ "$mode" = fp32 ] && TRAINED="$WORK/run_fp32"
        else
            result FAIL "prune_$mode" "$WHY"
        fi
    else
        result FAIL "prune_$mode" "asp prune failed: $(tail -n 1 "$WORK/prune_$mode.out")"
    fi
done
if [ -z "$TRAINED" ] && [ -f "$WORK/run_fp32/pruned.keras" ]; then
    TRAINED="$WORK/run_fp32" # trained on the CPU: the later steps can still run
fi
if [ -z "$TRAINED" ]; then
    for check in export_onnx bench_cuda bench_tensorrt bench_all; do result SKIP "$check" "no trained run"; done
    finish
fi

# --- 3. export with parity ------------------------------------------------------------------------------
if run export_onnx "$ASP" export "$TRAINED" --format onnx --precision fp32 --precision fp16 --force; then
    WHY=$(pyjson "$TRAINED" <<'EOF'
import json, sys
files = json.load(open(sys.argv[1] + "/export/manifest.json"))["files"]
refs = {json.dumps(f["parity"].get("reference"), sort_keys=True) for f in files}
worst = max(f["parity"]["max_rel_diff"] for f in files if f["precision"] == "fp32")
print(f"{len(files)} ONNX files pass parity (fp32 max_rel {worst:.1e}); reference {', '.join(refs)}")
raise SystemExit(0 if all(f["parity"]["passed"] for f in files) else 1)
EOF
)
    if [ $? = 0 ]; then result PASS export_onnx "$WHY"; else result FAIL export_onnx "$WHY"; fi
else
    result FAIL export_onnx "asp export failed: $(tail -n 1 "$WORK/export_onnx.out")"
fi

# --- 4. benchmarks ---------------------------------------------------------------------------------------
TIMING=(--batch 1,32 --warmup 5 --iterations 20 --min-time 0.2 --max-time 10)
rows_on=$(cat <<'EOF'
import json, sys
data = json.load(open(sys.argv[1] + "/bench.json"))
runtime, wanted = sys.argv[2], sys.argv[3]
rows = [r for r in data["rows"] if r["runtime"] == runtime]
bad = [r for r in rows if r["status"] != "ok" or r["provider"] != wanted or r["fallback"]]
placed = [p.get("nodes_by_provider") for p in data.get("profiles", []) if p.get("nodes_by_provider")]
if not rows:
    print(f"no {runtime} rows")
    raise SystemExit(1)
if bad:
    r = bad[0]
    why = r["error"] or r.get("provider_error") or "no error recorded"
    print(f"{len(bad)}/{len(rows)} {runtime} rows not on {wanted}: {r['model']} {r['precision']} batch "
          f"{r['batch']} on {r['provider']}: {why}"[:400])
    raise SystemExit(2 if any("libnvinfer" in str(r.get("provider_error")) for r in bad) else 1)
speed = [f"{p['precision']} b{p['batch']} {p['speedup_p50']:.2f}x" for p in data["pairs"]
         if p["runtime"] == runtime and p["speedup_p50"]]
print(f"{len(rows)} {runtime} rows on {wanted}; pruned speedup {', '.join(speed) or '-'}"
      + (f"; profile nodes {placed[0]}" if placed else ""))
EOF
)
bench() { # CHECK RUNTIME PROVIDER_THAT_MUST_RUN ASP_BENCH_OPTIONS...
    local check=$1 runtime=$2 wanted=$3
    shift 3
    if run "$check" "$ASP" bench "$TRAINED" "$@" "${TIMING[@]}" --out "$WORK/$check" --force; then
        WHY=$(pyjson "$WORK/$check" "$runtime" "$wanted" <<<"$rows_on")
        case $? in
        0) result PASS "$check" "$WHY" ;;
        2) result SKIP "$check" "TensorRT libraries not installed (not in the gpu extra; docs/install.md): $WHY" ;;
        *) result FAIL "$check" "$WHY" ;;
        esac
    else
        result FAIL "$check" "asp bench failed: $(tail -n 1 "$WORK/$check.out")"
    fi
}
bench bench_cuda onnxruntime CUDAExecutionProvider --runtime onnxruntime --provider cuda --profile
bench bench_tensorrt onnxruntime TensorrtExecutionProvider --runtime onnxruntime --provider tensorrt
bench bench_all onnxruntime CUDAExecutionProvider --runtime all --provider cuda --profile
if [ -f "$WORK/bench_all/bench.json" ]; then # the same run, TensorFlow's rows: on the GPU too?
    WHY=$(pyjson "$WORK/bench_all" tensorflow GPU:0 <<<"$rows_on")
    if [ $? = 0 ]; then result PASS bench_all_tensorflow "$WHY"; else result FAIL bench_all_tensorflow "$WHY"; fi
fi

finish
