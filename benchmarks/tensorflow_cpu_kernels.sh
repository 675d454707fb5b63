#!/usr/bin/env bash
# TensorFlow's CPU kernels, side by side in one run: what an AVX2-only CPU gets by default
# (oneDNN off: TensorFlow turns it on by default only with AVX-512 VNNI/BF16, AVX-VNNI or AMX),
# what keras_deepcluster now sets there (oneDNN on, limited to AVX2 to stand in for such a CPU),
# and this CPU's own default. One fashion_mnist cycle benchmark per setting (benchmarks/cycle.py).
#
#   bash benchmarks/tensorflow_cpu_kernels.sh docs/benchmarks/tensorflow_cpu_kernels
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docs/benchmarks/tensorflow_cpu_kernels}
data=${FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
mkdir -p "$out"
run() {  # name, then environment settings
    local name=$1; shift
    env "$@" TF_CPP_MIN_LOG_LEVEL=3 .venv/bin/python benchmarks/cycle.py --backends tensorflow \
        --epochs 4 --out "$out/$name.json" -- --source idx --data-dir "$data"
}
run onednn_off TF_ENABLE_ONEDNN_OPTS=0
run onednn_avx2 TF_ENABLE_ONEDNN_OPTS=1 ONEDNN_MAX_CPU_ISA=AVX2
run onednn_native TF_ENABLE_ONEDNN_OPTS=1
grep -o 'avx512[a-z_]*\|avx2' /proc/cpuinfo | sort -u | tr '\n' ' ' > "$out/cpu_flags.txt" || true
