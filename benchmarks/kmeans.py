"""k-means: faiss-cpu vs scikit-learn vs our `keras.ops` k-means, seconds and objective.

Data: N points in d = 256 dimensions drawn around 1,000 random centres and
L2-normalised, like DeepCluster's features after normalisation. Every method
runs 20 Lloyd iterations from its own seeded initialisation (faiss and keras:
random points; scikit-learn: k-means++, n_init=1), as in DeepCluster.

With ``--per-iteration`` one call of our k-means is also timed at 1, 2 and
21 iterations after a warm-up (compilation), and a line fitted through the
three times as a function of the passes over the points (the iterations and
the final assignment) splits a call into its seconds per pass (per Lloyd
iteration) and a fixed cost per call (the initial centroids, copies, planning,
any compilation); faiss's time is then that of ``--faiss-iterations``
iterations and the final assignment.

    KERAS_BACKEND=jax python benchmarks/kmeans.py --out docs/benchmarks/kmeans_jax.json
    KERAS_BACKEND=torch python benchmarks/kmeans.py --sizes 60000 --methods keras
    KERAS_BACKEND=jax python benchmarks/kmeans.py --sizes 1000000 --clusters 10000 \
        --methods keras,faiss --faiss-iterations 1 --per-iteration   # the GPU check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import keras
import numpy as np

from keras_deepcluster.method import clustering
from keras_deepcluster.platform import accelerated_kmeans, determinism, devices


def features(n: int, d: int = 256, centres: int = 1000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(centres, d)).astype(np.float32)
    x = means[rng.integers(centres, size=n)] + rng.normal(size=(n, d)).astype(np.float32)
    return clustering.l2_normalize(x)


def keras_per_iteration(x: np.ndarray, k: int, deterministic: bool) -> dict:
    """Seconds per Lloyd iteration and fixed seconds per call of our k-means, compiled."""
    points = keras.ops.convert_to_tensor(x)  # on the device, as after extraction there

    def run(iterations):
        accelerated_kmeans.keras_kmeans(
            points, k, seed=1, iterations=iterations, deterministic=deterministic
        )

    run(1)  # compile
    times = {}
    for iterations in (1, 2, 21):
        start = time.perf_counter()
        run(iterations)
        times[iterations] = time.perf_counter() - start
    passes = [iterations + 1 for iterations in times]  # and the final assignment
    per_pass, fixed = np.polyfit(passes, list(times.values()), 1)
    rows, resident = accelerated_kmeans.chunk_plan(len(x), x.shape[1], k, deterministic)
    return {
        "seconds_per_iteration": float(per_pass),
        "seconds_fixed_per_call": float(fixed),
        "seconds_1_iteration": times[1],
        "seconds_2_iterations": times[2],
        "seconds_21_iterations": times[21],
        "chunk_rows": rows,
        "points_resident": resident,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,60000,250000")
    parser.add_argument("--clusters", default="10,100,1000")
    parser.add_argument("--methods", default="faiss,keras,sklearn")
    parser.add_argument("--faiss-iterations", type=int, default=20)
    parser.add_argument("--per-iteration", action="store_true")
    parser.add_argument(
        "--deterministic",
        action="store_true",
        help="deterministic mode (enable_determinism): one-hot sums, deterministic kernels",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.deterministic:
        determinism.enable_determinism()  # before JAX first uses the device
    methods = args.methods.split(",")
    rows = []
    for n in map(int, args.sizes.split(",")):
        x = features(n)
        for k in map(int, args.clusters.split(",")):
            row = {"n": n, "d": x.shape[1], "k": k}
            for method in methods:
                iterations = args.faiss_iterations if method == "faiss" else 20
                start = time.perf_counter()
                _, objective = clustering.kmeans(x, k, 1, iterations, backend=method)
                row[method] = {
                    "seconds": time.perf_counter() - start,
                    "iterations": iterations,
                    "objective": objective,
                }
            if args.per_iteration and "keras" in methods:
                row["keras"].update(keras_per_iteration(x, k, args.deterministic))
            if "faiss" in row and args.faiss_iterations == 20:
                for method in methods:
                    row[method]["objective_vs_faiss"] = (
                        row[method]["objective"] / row["faiss"]["objective"]
                    )
            rows.append(row)
            print(n, k, {m: row[m] for m in methods}, flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                {
                    "backend": keras.backend.backend(),
                    "accelerator": devices.accelerator_available(),
                    "deterministic": args.deterministic,
                    "rows": rows,
                    "cpus": os.cpu_count(),
                    "machine": platform.processor() or platform.machine(),
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
