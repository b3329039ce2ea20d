#!/usr/bin/env bash
# The ntk curve on MNIST-1D (4000 training signals of length 40, 1000 test), end to end:
# `dmisearch run` of benchmarks/studies/mnist1d_ntk.toml (one trial: the cnn_gap NTK's Gram
# matrices and the kernel regression solves at five sizes) on a fresh journal, timed.
#     bash benchmarks/bench_mnist1d_ntk.sh [THREADS]   (default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${1:-2}"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
echo "# $(date -u +%FT%T) $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $threads threads, load $(cut -d' ' -f1-3 /proc/loadavg)"
start=$(date +%s.%N)
dmisearch run benchmarks/studies/mnist1d_ntk.toml --storage "journal:$dir/j.log" \
    --threads "$threads" --no-progress
end=$(date +%s.%N)
echo "# wall seconds: $(echo "$end - $start" | bc)"
