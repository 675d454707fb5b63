#!/usr/bin/env bash
# The GPU check: one prepared command for an offline machine with an NVIDIA GPU and the CUDA
# builds of JAX and PyTorch (no TensorFlow, no network). On a machine without a GPU it says so
# and times what it can, at CPU sizes. It writes into one folder (default gpu_check/):
#   env.txt            GPU, driver, versions
#   kmeans.log         our k-means per backend (N = 1M, d = 256, k = 10,000): seconds per
#                      iteration and fixed seconds per call, in the default and in deterministic
#                      mode (benchmarks/kmeans.py --per-iteration [--deterministic])
#   cycle.log          3 epochs of the fashion_mnist recipe per backend, default and
#                      --deterministic (benchmarks/cycle.py): the training epoch and its price
#   imagenet.log       2 cycles of the imagenet recipe's network per backend, 10,240 random
#                      images (benchmarks/imagenet_rates.py): extraction and training images/s
#   tests_jax.log      the tests that exercise the device (gpu_tests below) on JAX, in
#                      deterministic mode (pytest --deterministic)
#   tests_torch.log    the same on PyTorch, less the backend-independent ones (run on JAX)
#   tests_not_run.txt  the test files outside that selection
#   gpu_check.json     all numbers of the above in one file
# The stages run in the order given after OUT (default: kmeans cycle imagenet tests), so that
# a second call can run what the first had no time for: bash benchmarks/gpu_check.sh OUT tests.
# Each command has a time limit (STAGE_SECONDS), cut so that the call ends within
# DEADLINE_SECONDS (540 on a GPU: all four stages, about 8 minutes).
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
# Run here, without a GPU:  bash benchmarks/gpu_check.sh /tmp/gpu_check [STAGE ...]
set -uo pipefail
cd "$(dirname "$0")/.."
out=$(mkdir -p "${1:-gpu_check}" && cd "${1:-gpu_check}" && pwd)
shift $(($# > 0 ? 1 : 0))
stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(kmeans cycle imagenet tests)
for stage in "${stages[@]}"; do
    case $stage in
    kmeans | cycle | imagenet | tests) ;;
    *) echo "gpu_check.sh: no stage '$stage'; the stages are kmeans, cycle, imagenet, tests" >&2
        exit 2 ;;
    esac
done
work=$(mktemp -d)
python=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
data=$([ -d .fmnist ] && echo "$PWD/.fmnist" || echo /usr/share/datasets/fashion-mnist)
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
# One JAX process at a time needs no preallocated GPU memory; several test workers would fight.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
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

# The tests that exercise the device: clustering, re-clustering, the model and its PyTorch
# route, views, determinism, devices, processes, resumable runs and the CLI's runs.
gpu_tests=(tests/method/test_clustering.py tests/method/test_reclustering.py tests/method/test_model.py
    tests/method/test_views.py tests/platform/test_determinism.py tests/platform/test_devices.py tests/platform/test_processes.py
    tests/platform/test_torch_network.py tests/runs/test_runs.py tests/cli/test_cli.py)
if [ -n "$gpu" ]; then
    STAGE_SECONDS=${STAGE_SECONDS:-120}
    pytest_workers=(-n 8)                             # pytest-xdist is on the GPU image
    kmeans=(--sizes 1000000 --clusters 10000)
    cycle_data=()
    imagenet=(--images 10240 --epochs 2)
else
    STAGE_SECONDS=${STAGE_SECONDS:-600}
    pytest_workers=()
    kmeans=(--sizes 100000 --clusters 1000)
    cycle_data=(--limit 20000)
    imagenet=(--images 512 --clusters 50 --epochs 2)
fi
DEADLINE_SECONDS=${DEADLINE_SECONDS:-$([ -n "$gpu" ] && echo 540 || echo 3600)}
limit() {  # a command's time limit: its own, cut to what is left of the whole call's
    local left=$((start + DEADLINE_SECONDS - $(date +%s)))
    echo $((left < STAGE_SECONDS ? (left > 1 ? left : 1) : STAGE_SECONDS))
}

stage_kmeans() {  # deterministic mode: one-hot sums and the backend's deterministic kernels
    echo "== k-means" | tee -a "$out/kmeans.log"
    for backend in jax torch; do
        for mode in default deterministic; do
            flag=()
            [ $mode = deterministic ] && flag=(--deterministic)
            KERAS_BACKEND=$backend timeout "$(limit)" "$python" benchmarks/kmeans.py \
                "${kmeans[@]}" --methods keras --per-iteration "${flag[@]}" \
                --out "$out/kmeans_${backend}_$mode.json" >>"$out/kmeans.log" 2>&1
            echo "$backend $mode exit $?" | tee -a "$out/kmeans.log"
        done
    done
}

stage_cycle() {  # the CLI's --deterministic sets XLA's flag before JAX starts
    echo "== fashion_mnist cycle" | tee -a "$out/cycle.log"
    for backend in jax torch; do
        for mode in default deterministic; do
            flag=()
            [ $mode = deterministic ] && flag=(--deterministic)
            timeout "$(limit)" "$python" benchmarks/cycle.py --backends "$backend" --epochs 3 \
                --cli "$python -m keras_deepcluster_cli.main" \
                --out "$out/cycle_${backend}_$mode.json" \
                -- --source idx --data-dir "$data" "${cycle_data[@]}" "${flag[@]}" \
                >>"$out/cycle.log" 2>&1
            echo "$backend $mode exit $?" | tee -a "$out/cycle.log"
        done
    done
}

stage_imagenet() {
    echo "== imagenet rates" | tee -a "$out/imagenet.log"
    for backend in jax torch; do
        KERAS_BACKEND=$backend timeout "$(limit)" "$python" benchmarks/imagenet_rates.py \
            "${imagenet[@]}" --out "$out/imagenet_$backend.json" >>"$out/imagenet.log" 2>&1
        echo "$backend exit $?" | tee -a "$out/imagenet.log"
    done
}

stage_tests() {
    for test in tests/test_*.py; do
        [[ " ${gpu_tests[*]} " == *" $test "* ]] || echo "$test"
    done >"$out/tests_not_run.txt"
    for backend in jax torch; do
        echo "== tests, $backend"
        # The backend-independent tests once, on JAX.
        marker=()
        [ $backend = torch ] && marker=(-m "not backend_independent")
        KERAS_BACKEND=$backend timeout "$(limit)" "$python" -m pytest -q -p no:cacheprovider \
            --deterministic "${pytest_workers[@]}" "${marker[@]}" "${gpu_tests[@]}" \
            >"$out/tests_$backend.log" 2>&1
        echo "exit $? after $(($(date +%s) - start)) s" >>"$out/tests_$backend.log"
        tail -2 "$out/tests_$backend.log"
    done
}

for stage in "${stages[@]}"; do
    "stage_$stage"
done

# gpu_check.json: what the stages run into OUT so far (this call and earlier ones) measured.
"$python" - "$out" "$start" <<'EOF'
import json, pathlib, re, sys, time

out, start = pathlib.Path(sys.argv[1]), int(sys.argv[2])
BACKENDS, MODES = ("jax", "torch"), ("default", "deterministic")


def load(name):
    path = out / name
    return json.loads(path.read_text()) if path.exists() else None


def tests(backend):
    path = out / f"tests_{backend}.log"
    if not path.exists():
        return None
    text = path.read_text()
    found = re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", text)
    return {
        "counts": {kind: int(count) for count, kind in found},
        "failed": re.findall(r"^(?:FAILED|ERROR) (\S+)", text, re.M),
        "timed_out": "exit 124" in text,
    }


def value(kind, backend, mode):
    """Seconds per k-means iteration, or of a training epoch; None if not measured."""
    try:
        if kind == "kmeans":
            return load(f"kmeans_{backend}_{mode}.json")["rows"][0]["keras"]["seconds_per_iteration"]
        return load(f"cycle_{backend}_{mode}.json")["results"][backend]["seconds_train"]
    except (TypeError, KeyError, IndexError):
        return None


def price(kind, backend):
    default, fixed = (value(kind, backend, mode) for mode in MODES)
    return fixed / default if default and fixed else None


not_run = out / "tests_not_run.txt"
summary = {
    "env": (out / "env.txt").read_text().splitlines(),
    "tests": {b: tests(b) for b in BACKENDS},
    "tests_not_run": not_run.read_text().split() if not_run.exists() else None,
    "kmeans": {f"{b}_{m}": load(f"kmeans_{b}_{m}.json") for b in BACKENDS for m in MODES},
    "cycle": {f"{b}_{m}": load(f"cycle_{b}_{m}.json") for b in BACKENDS for m in MODES},
    "imagenet": {b: load(f"imagenet_{b}.json") for b in BACKENDS},
    "deterministic_price": {
        b: {"kmeans_iteration": price("kmeans", b), "training_epoch": price("cycle", b)}
        for b in BACKENDS
    },
    "seconds_this_call": time.time() - start,
}
(out / "gpu_check.json").write_text(json.dumps(summary, indent=1))
print(f"gpu_check.json written; this call took {summary['seconds_this_call']:.0f} s")
EOF
rm -rf "$work"
