"""Seconds to compute the 2-D map of `deepcluster show`: scikit-learn's t-SNE (what it
runs) vs openTSNE (not a dependency; install it to compare).

The map embeds the features of a sample of the training images. Features here are
Fashion-MNIST pixels projected to 84 dimensions (LeNet's feature width) by a seeded PCA;
what matters for the time is the number of points. One method and size at a time, each
timed once after a warm-up on 200 points (imports, compiled code).

    python benchmarks/embedding_map.py --sizes 3000,10000 --out docs/benchmarks/embedding_map.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import time
from pathlib import Path

import numpy as np

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


def features(n: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    with gzip.open(FASHION_MNIST) as file:
        pixels = np.frombuffer(file.read(), np.uint8, offset=16).reshape(-1, 784)[:n]
    return PCA(84, random_state=0).fit_transform(pixels / 255.0).astype(np.float32)


def sklearn_tsne(points: np.ndarray) -> np.ndarray:
    """What `show` runs (`visualize.two_dimensional_map`)."""
    from keras_deepcluster.runs.visualize import two_dimensional_map

    return two_dimensional_map(points, seed=0)


def open_tsne(points: np.ndarray) -> np.ndarray:
    """openTSNE's FFT-accelerated t-SNE, one thread as above (``pip install openTSNE``)."""
    from openTSNE import TSNE

    tsne = TSNE(2, perplexity=30.0, random_state=0, n_jobs=1, verbose=False)
    return np.asarray(tsne.fit(np.asarray(points, np.float64)))


METHODS = {"sklearn_tsne": sklearn_tsne, "opentsne_fft": open_tsne}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="3000,10000")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = {"machine": platform.processor() or platform.machine(), "seconds": {}}
    for method in args.methods.split(","):
        METHODS[method](features(200))  # warm-up
        for size in map(int, args.sizes.split(",")):
            points = features(size)
            start = time.perf_counter()
            METHODS[method](points)
            seconds = time.perf_counter() - start
            results["seconds"][f"{method}/{size}"] = seconds
            print(f"{method} {size}: {seconds:.1f} s", flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
