#!/usr/bin/env bash
# The GPU check: one prepared command for an offline machine with an NVIDIA GPU and the CUDA
# builds of JAX and PyTorch (no TensorFlow, no network). On a machine without a GPU it says so
# and times what it can, at CPU sizes. It writes into one folder (default gpu_check/):
#   env.txt           GPU, driver, versions
#   tests_jax.log     the suite on JAX, deterministic mode (pytest --deterministic), no TensorFlow
#   tests_torch.log   the same on PyTorch
#   kmeans.log        our k-means per backend (N = 1M, d = 256, k = 10,000) and faiss-cpu
#   cycle.log         5 epochs of the fashion_mnist recipe per backend (benchmarks/cycle.py)
#   imagenet.log      2 cycles of the imagenet recipe's network per backend, 10,240 random
#                     images (benchmarks/imagenet_rates.py): extraction and training images/s
#   gpu_check.json    all numbers of the above in one file
# Every stage has a time limit (STAGE_SECONDS), cut so that the whole check ends within
# DEADLINE_SECONDS (540 on a GPU); the tests run last.
#
# Prepare once, on a machine with network, in the repository root:
#   echo /.whl/ >> .git/info/exclude; echo /.fmnist/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
#       --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#       keras==3.15.1 namex optree faiss-cpu==1.15.1 importlib_resources
#   mkdir -p .fmnist && cp /usr/share/datasets/fashion-mnist/*-ubyte.gz .fmnist/
#       (the Debian package dataset-fashion-mnist)
# Run there (the device tool: carry [".whl", ".fmnist"]):
#   bash benchmarks/gpu_check.sh "$OUT"
# Run here, without a GPU:  bash benchmarks/gpu_check.sh /tmp/gpu_check
set -uo pipefail
cd "$(dirname "$0")/.."
out=$(mkdir -p "${1:-gpu_check}" && cd "${1:-gpu_check}" && pwd)
work=$(mktemp -d)
python=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
data=$([ -d .fmnist ] && echo "$PWD/.fmnist" || echo /usr/share/datasets/fashion-mnist)
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
# One JAX process at a time needs no preallocated GPU memory; several test workers would fight.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
# Deterministic mode (docs/reliability.md): XLA reads this flag when JAX starts.
export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_deterministic_ops=true"
start=$(date +%s)

if [ -d .whl ]; then  # the packages the GPU image lacks, then this project, offline
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$work/site" .whl/*.whl
    PYTHONPATH="$work/site" "$python" -m pip install -q --no-index --no-deps --no-compile \
        --no-build-isolation --target "$work/site" . >"$work/install.log" 2>&1 \
        || { cat "$work/install.log"; exit 1; }
    export PYTHONPATH="$work/site"
fi

gpu=$("$python" -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" 2>/dev/null)
{
    echo "date: $(date -u +%FT%TZ)"
    echo "gpu: ${gpu:-none (no CUDA device: CPU sizes below)}"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
    echo "cpus: $(nproc)"
    "$python" -c "import sys, keras, jax, torch, numpy; print('python', sys.version.split()[0], 'keras', keras.__version__, 'jax', jax.__version__, 'torch', torch.__version__, 'numpy', numpy.__version__)" 2>&1 | tail -1
    "$python" -c "import jax; print('jax devices', jax.devices())" 2>&1 | tail -1
} >"$out/env.txt"
cat "$out/env.txt"

if [ -n "$gpu" ]; then
    STAGE_SECONDS=${STAGE_SECONDS:-110}
    tests=(tests)                                     # the whole suite (TensorFlow tests skip)
    pytest_workers=(-n 6)                             # pytest-xdist is on the GPU image
    kmeans=(--sizes 1000000 --clusters 10000)
    cycle=()
    imagenet=(--images 10240 --epochs 2)
else
    STAGE_SECONDS=${STAGE_SECONDS:-600}
    tests=(tests/test_clustering.py tests/test_reclustering.py tests/test_model.py
        tests/test_views.py tests/test_determinism.py)
    pytest_workers=()
    kmeans=(--sizes 100000 --clusters 1000)
    cycle=(--limit 20000)
    imagenet=(--images 512 --clusters 50 --epochs 2)
fi
DEADLINE_SECONDS=${DEADLINE_SECONDS:-$([ -n "$gpu" ] && echo 540 || echo 3600)}
limit() {  # a stage's time limit: its own, cut to what is left of the whole check's
    local left=$((start + DEADLINE_SECONDS - $(date +%s)))
    echo $((left < STAGE_SECONDS ? (left > 1 ? left : 1) : STAGE_SECONDS))
}

echo "== k-means" | tee "$out/kmeans.log"
for backend in jax torch; do
    KERAS_BACKEND=$backend timeout "$(limit)" "$python" benchmarks/kmeans.py "${kmeans[@]}" \
        --methods keras --per-iteration --out "$work/kmeans_$backend.json" >>"$out/kmeans.log" 2>&1
    echo "$backend exit $?" >>"$out/kmeans.log"
done
# faiss-cpu for one iteration (and the final assignment): the CPU reference.
KERAS_BACKEND=torch timeout "$(limit)" "$python" benchmarks/kmeans.py "${kmeans[@]}" \
    --methods faiss --faiss-iterations 1 --out "$work/kmeans_faiss.json" >>"$out/kmeans.log" 2>&1
echo "faiss exit $?" >>"$out/kmeans.log"
tail -4 "$out/kmeans.log"

echo "== fashion_mnist cycle" | tee "$out/cycle.log"
for backend in jax torch; do
    timeout "$(limit)" "$python" benchmarks/cycle.py --backends "$backend" --epochs 5 \
        --cli "$python -m keras_deepcluster_cli.main" --out "$work/cycle_$backend.json" \
        -- --source idx --data-dir "$data" "${cycle[@]}" >>"$out/cycle.log" 2>&1
    echo "$backend exit $?" >>"$out/cycle.log"
done
tail -4 "$out/cycle.log"

echo "== imagenet rates" | tee "$out/imagenet.log"
for backend in jax torch; do
    KERAS_BACKEND=$backend timeout "$(limit)" "$python" benchmarks/imagenet_rates.py \
        "${imagenet[@]}" --out "$work/imagenet_$backend.json" >>"$out/imagenet.log" 2>&1
    echo "$backend exit $?" >>"$out/imagenet.log"
done
tail -4 "$out/imagenet.log"

for backend in jax torch; do
    echo "== tests, $backend"
    KERAS_BACKEND=$backend timeout "$(limit)" "$python" -m pytest -q -p no:cacheprovider \
        --deterministic "${pytest_workers[@]}" "${tests[@]}" >"$out/tests_$backend.log" 2>&1
    echo "exit $? after $(($(date +%s) - start)) s" >>"$out/tests_$backend.log"
    tail -3 "$out/tests_$backend.log"
done

"$python" - "$out" "$work" "$start" <<'EOF'
import json, pathlib, re, sys, time
out, work, start = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), int(sys.argv[3])
def load(name):
    path = work / name
    return json.loads(path.read_text()) if path.exists() else None
def tests(backend):
    text = (out / f"tests_{backend}.log").read_text()
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|error)", text)}
    failed = re.findall(r"^FAILED (\S+)", text, re.M)
    return {"counts": counts, "failed": failed, "timed_out": "exit 124" in text}
summary = {
    "env": (out / "env.txt").read_text().splitlines(),
    "tests": {b: tests(b) for b in ("jax", "torch")},
    "kmeans": {b: load(f"kmeans_{b}.json") for b in ("jax", "torch", "faiss")},
    "cycle": {b: load(f"cycle_{b}.json") for b in ("jax", "torch")},
    "imagenet": {b: load(f"imagenet_{b}.json") for b in ("jax", "torch")},
    "seconds": time.time() - start,
}
(out / "gpu_check.json").write_text(json.dumps(summary, indent=1))
print(f"gpu_check.json written; {summary['seconds']:.0f} s in all")
EOF
rm -rf "$work"
