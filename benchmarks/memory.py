"""Peak memory (RSS) of one re-clustering: feature extraction + k-means, N synthetic images.

Each N runs in a fresh subprocess so the peaks do not mix; the baseline is the
process after importing keras_deepcluster and building LeNet, before the images exist.

    KERAS_BACKEND=jax python benchmarks/memory.py --out docs/benchmarks/memory_jax.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def measure(n: int, k: int) -> dict:
    import numpy as np

    import keras_deepcluster as kdc

    backbone = kdc.backbones.lenet(seed=0)
    views = kdc.ImageViews.for_dataset("fashion_mnist")
    extractor = kdc.FeatureExtractor(backbone, views)
    extractor(np.zeros((256, 28, 28), np.uint8))  # compile
    baseline = peak_mib()
    images = np.random.default_rng(0).integers(0, 256, (n, 28, 28), dtype=np.uint8)
    features = extractor(images)
    after_features = peak_mib()
    kdc.cluster_features(features, k, seed=0)
    return {
        "n": n,
        "k": k,
        "baseline_mib": baseline,
        "after_features_mib": after_features,
        "after_kmeans_mib": peak_mib(),
        "images_mib": images.nbytes / 2**20,
        "features_mib": features.nbytes / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="60000,250000")
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.clusters)))
        return
    rows = []
    for n in map(int, args.sizes.split(",")):
        child = subprocess.run(
            [sys.executable, __file__, "--one", str(n), "--clusters", str(args.clusters)],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    if args.out:
        import keras

        args.out.write_text(
            json.dumps({"backend": keras.backend.backend(), "rows": rows}, indent=1)
        )


if __name__ == "__main__":
    main()
