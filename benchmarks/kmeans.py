"""k-means: faiss-cpu vs scikit-learn vs our `keras.ops` k-means, seconds and objective.

Data: N points in d = 256 dimensions drawn around 1,000 random centres and
L2-normalised, like DeepCluster's features after normalisation. Every method
runs 20 Lloyd iterations from its own seeded initialisation (faiss and keras:
random points; scikit-learn: k-means++, n_init=1), as in DeepCluster.

    KERAS_BACKEND=jax python benchmarks/kmeans.py --out docs/benchmarks/kmeans_jax.json
    KERAS_BACKEND=torch python benchmarks/kmeans.py --sizes 60000 --methods keras
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

from keras_deepcluster import clustering


def features(n: int, d: int = 256, centres: int = 1000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(centres, d)).astype(np.float32)
    x = means[rng.integers(centres, size=n)] + rng.normal(size=(n, d)).astype(np.float32)
    return clustering.l2_normalize(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,60000,250000")
    parser.add_argument("--clusters", default="10,100,1000")
    parser.add_argument("--methods", default="faiss,keras,sklearn")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = []
    for n in map(int, args.sizes.split(",")):
        x = features(n)
        for k in map(int, args.clusters.split(",")):
            row = {"n": n, "d": x.shape[1], "k": k}
            for method in args.methods.split(","):
                start = time.perf_counter()
                _, objective = clustering.kmeans(x, k, seed=1, iterations=20, backend=method)
                row[method] = {"seconds": time.perf_counter() - start, "objective": objective}
            if "faiss" in row:
                for method in args.methods.split(","):
                    row[method]["objective_vs_faiss"] = (
                        row[method]["objective"] / row["faiss"]["objective"]
                    )
            rows.append(row)
            print(
                n,
                k,
                {
                    m: (round(v["seconds"], 2), round(v["objective"], 5))
                    for m, v in row.items()
                    if isinstance(v, dict)
                },
                flush=True,
            )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                {
                    "backend": keras.backend.backend(),
                    "rows": rows,
                    "cpus": os.cpu_count(),
                    "machine": platform.processor() or platform.machine(),
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
