#!/usr/bin/env bash
# One pass of the GPU checks and benchmarks, sized for a short lease on one H100/H200:
# correctness on CUDA first (the engine against the loop, CUDA graphs against eager), then
# the engine and study benchmarks. Every step writes its log under $OUT (default
# ./gpu-out); a step runs only while the time budget (BUDGET seconds, default 330) lasts.
# At most 8 logs (summary and 7 steps): the lease tool returns 8 files from $OUT.
#
#   bash benchmarks/gpu_check.sh            # after: pip install -e . (or see WHEELS below)
#
# WHEELS: on a machine with PyTorch but without this project's other dependencies, put
# their wheels in .whl/ (optuna, pluggy, alembic, sqlalchemy, mako, colorlog); the script
# installs them and the project into /tmp/site, offline.
set -u
OUT=${OUT:-gpu-out}
BUDGET=${BUDGET:-330}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu: a dry run of the plumbing
mkdir -p "$OUT"
start=$(date +%s)
export PYTHONUNBUFFERED=1

if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --no-build-isolation --upgrade --target /tmp/site .whl/*.whl . \
        >/tmp/install.log 2>&1 || { cat /tmp/install.log; exit 1; }
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

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv \
    2>&1 | tee -a "$OUT/summary.log"
# the card's matrix-product and memory ceilings, for the rooflines in RESULTS.md
timeout 40 python3 benchmarks/ceilings.py --device $DEVICE 2>&1 | tee -a "$OUT/summary.log"
# the engine against the loop on the GPU (CUDA graphs included), and graphs against eager;
# the analytic kernels on the GPU against the CPU reference, whole and in blocks
DMISEARCH_TEST_DEVICE=$DEVICE step tests 80 python3 -m pytest -q -p no:cacheprovider \
    --timeout 60 tests/test_engine.py \
    "tests/test_ranking.py::test_cuda_is_used_when_asked_or_refused_clearly" \
    tests/test_kernels.py::test_kernels_equal_the_pre_optimisation_reference \
    tests/test_kernels.py::test_blocks_of_any_size_give_one_blocks_kernel
# the kernels' Gram matrices on the GPU (blocks sized to its free memory): the headline
# (cnn_gap NTK of 1000 inputs of length 40) beside the CPU reference, then 4000 inputs
step kernels 100 bash -c "B='python3 benchmarks/bench_kernels.py --device $DEVICE \
    --log /tmp/bench_kernels.log'; \$B --headline --repeat 2 --max-ref-seconds 60 && \
    \$B --archs cnn_vec,cnn_gap --shapes 1x40,1x8x8 --paddings circular --activations relu \
    --ns \${KERNEL_N:-4000} --repeat 2 --no-reference"
step engine 120 python3 benchmarks/bench_engine.py --device $DEVICE --steps 50 --repeat 2 \
    --loop-models 2 --archs fcn,cnn_gap --ks 16,256,1024
# fcn's 500x needs TF32 (benchmarks/RESULTS.md, "What fcn's 500x needs"); momentum 0 is
# the anchors' plain SGD, for the comparison with them
step engine_more 140 bash -c "set -e; B='python3 benchmarks/bench_engine.py --device $DEVICE \
    --steps 50 --repeat 2 --loop-models 2'; \$B --tf32 --archs fcn,cnn_gap --ks 256,1024; \
    \$B --archs fcn --ks 256,1024 --momentum 0; \$B --tf32 --archs fcn --ks 256,1024 --momentum 0; \
    python3 benchmarks/profile_engine.py --device $DEVICE --arch fcn --k 1024 --no-graphs"
step quickstart 40 python3 benchmarks/bench_study.py studies/quickstart.toml --device $DEVICE \
    --batch 16 --skip-loop --skip-replay
step conv_build 40 bash -c "python3 benchmarks/bench_conv.py --device $DEVICE && \
    python3 benchmarks/bench_build.py --device $DEVICE --repeat 2"
step study_cnn_gap 100 python3 benchmarks/bench_study.py benchmarks/studies/cnn_gap.toml \
    --device $DEVICE --n-trials 32 --batch 16 --loop-trials 1 --skip-replay
echo "total $(($(date +%s) - start)) s" | tee -a "$OUT/summary.log"
