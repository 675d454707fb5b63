"""Feature extraction of the 60,000 Fashion-MNIST training images: views vs network, by batch size.

Times the fixed views alone (NumPy resampling, 1,024 images per call) and
`extract_features` with LeNet at several batch sizes (each size compiled by a
first call on 256 images before timing).

    KERAS_BACKEND=jax python benchmarks/feature_extraction.py
"""

from __future__ import annotations

import time
from pathlib import Path

import keras_deepcluster as kdc

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def main() -> None:
    images = kdc.data.load("idx", "fashion_mnist", FASHION_MNIST).x_train
    views = kdc.ImageViews.for_dataset("fashion_mnist")
    backbone = kdc.backbones.lenet(seed=61)
    start = time.perf_counter()
    for i in range(0, len(images), 1024):
        views.fixed(images[i : i + 1024])
    print(f"fixed views only: {time.perf_counter() - start:.2f} s")
    for batch_size in (256, 1024, 4096):
        kdc.extract_features(backbone, images[:256], views, batch_size)  # compile
        start = time.perf_counter()
        kdc.extract_features(backbone, images, views, batch_size)
        print(f"extract_features, batch {batch_size}: {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
