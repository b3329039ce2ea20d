#!/usr/bin/env bash
# One pass of the GPU checks and benchmarks, sized for a short lease on one H100/H200:
# correctness on CUDA first (the engine against the loop, CUDA graphs against eager), then
# the engine and study benchmarks. Every step writes its log under $OUT (default
# ./gpu-out); a step runs only while the time budget (BUDGET seconds, default 360) lasts.
#
#   bash benchmarks/gpu_check.sh            # after: pip install -e . (or see WHEELS below)
#
# WHEELS: on a machine with PyTorch but without this project's other dependencies, put
# their wheels in .whl/ (optuna, pluggy, alembic, sqlalchemy, mako, colorlog); the script
# installs them and the project into /tmp/site, offline.
set -u
OUT=${OUT:-gpu-out}
BUDGET=${BUDGET:-360}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu: a dry run of the plumbing
mkdir -p "$OUT"
start=$(date +%s)
export PYTHONUNBUFFERED=1

if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --no-build-isolation --upgrade --target /tmp/site .whl/*.whl . \
        >"$OUT/install.log" 2>&1 || { cat "$OUT/install.log"; exit 1; }
    export PYTHONPATH=/tmp/site
fi

step() {  # step NAME LIMIT_S COMMAND...: run while the budget lasts, log to $OUT/NAME.log
    local name=$1 limit=$2
    shift 2
    local left=$((BUDGET - ($(date +%s) - start)))
    if [ "$left" -lt 20 ]; then
        echo "== $name: skipped (budget spent)" | tee -a "$OUT/summary.log"
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "== $name (limit ${limit}s): $*" | tee -a "$OUT/summary.log"
    local t0=$(date +%s)
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    tail -n 40 "$OUT/$name.log" >>"$OUT/summary.log"
    echo "-- $name: exit $rc, $(($(date +%s) - t0)) s" | tee -a "$OUT/summary.log"
}

step device 60 python3 - <<'EOF'
import subprocess, torch, time
print(subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version,clocks.sm",
                      "--format=csv"], capture_output=True, text=True).stdout)
print("torch", torch.__version__, "cuda", torch.version.cuda)
n = 8192
for name, dtype, tf32 in [("fp32", torch.float32, False), ("tf32", torch.float32, True),
                          ("bf16", torch.bfloat16, False)]:
    torch.backends.cuda.matmul.allow_tf32 = tf32
    a, b = (torch.randn(n, n, device="cuda", dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(10):
        a @ b
    e.record()
    torch.cuda.synchronize()
    print(f"matmul {name}: {2 * n**3 * 10 / (s.elapsed_time(e) / 1e3) / 1e12:.1f} TFLOP/s")
EOF

# the engine against the loop on the GPU (CUDA graphs included), and graphs against eager
DMISEARCH_TEST_DEVICE=$DEVICE step tests 120 python3 -m pytest -q -p no:cacheprovider \
    --timeout 100 tests/test_engine.py \
    "tests/test_ranking.py::test_cuda_is_used_when_asked_or_refused_clearly"
step engine 150 python3 benchmarks/bench_engine.py --device $DEVICE --ks 1,16,256,1024 \
    --steps 50 --archs fcn,cnn_gap
step conv_gpu 40 python3 benchmarks/bench_conv.py --device $DEVICE --cases gpu
step conv_gpu_tf32 40 python3 benchmarks/bench_conv.py --device $DEVICE --cases gpu --tf32
step study_cnn_gap 120 python3 benchmarks/bench_study.py benchmarks/studies/cnn_gap.toml \
    --device $DEVICE --batch 16 --loop-trials 3 --skip-replay
step engine_tf32 90 python3 benchmarks/bench_engine.py --device $DEVICE --ks 256,1024 \
    --steps 50 --archs fcn,cnn_gap --tf32
step quickstart 60 python3 benchmarks/bench_study.py studies/quickstart.toml --device $DEVICE \
    --batch 16 --skip-loop --skip-replay
step engine_more 60 python3 benchmarks/bench_engine.py --device $DEVICE --ks 16,256 --steps 50 \
    --archs cnn_vec,lcn
step conv 30 python3 benchmarks/bench_conv.py --device $DEVICE
step kernels 40 python3 benchmarks/bench_kernels.py --device $DEVICE --ns 1000,2000,4000
echo "total $(($(date +%s) - start)) s" | tee -a "$OUT/summary.log"
