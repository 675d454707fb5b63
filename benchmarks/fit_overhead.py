"""Training-loop overhead: DeepCluster's training epochs against a plain supervised `fit`.

Same LeNet backbone + head, batch size, images and augmentation (a PyDataset of
random views with the true labels for the plain model); the DeepCluster run
trains on pseudo-labels with its `Reclustering` callback. Images/s counts the
training part of each epoch only (re-clustering excluded: its cost is the
re-clustering benchmark's), median over epochs 1.. (epoch 0 compiles).

    KERAS_BACKEND=jax python benchmarks/fit_overhead.py --out docs/benchmarks/fit_overhead_jax.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import keras
import numpy as np

import keras_deepcluster as kdc

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


class LabelledViews(keras.utils.PyDataset):
    """The training views of `PseudoLabelDataset`, with fixed (true) labels."""

    def __init__(self, images, labels, views, batch_size, seed):
        super().__init__()
        self.images, self.labels, self.views = images, labels, views
        self.batch_size, self.seed = batch_size, seed

    def __len__(self):
        return len(self.images) // self.batch_size

    def __getitem__(self, index):
        rng = np.random.default_rng([self.seed, index])
        batch = rng.integers(len(self.images), size=self.batch_size)
        return self.views.random(self.images[batch], rng), self.labels[batch]


class TrainTimer(keras.callbacks.Callback):
    """Seconds from the end of on_epoch_begin callbacks to the end of the epoch."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    data = kdc.data.load("idx", "fashion_mnist", FASHION_MNIST)
    images, labels = data.x_train[: args.images], data.y_train[: args.images]
    views = kdc.ImageViews.for_dataset("fashion_mnist")
    steps = args.images // args.batch_size

    def model():
        return kdc.DeepCluster(kdc.backbones.lenet(seed=61), 10, weight_decay=1e-3)

    results = {}
    deepcluster = model()
    deepcluster.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.1))
    dataset = kdc.PseudoLabelDataset(images, views, args.batch_size, seed=61)
    timer = TrainTimer()
    deepcluster.fit(
        dataset,
        epochs=args.epochs,
        verbose=0,
        callbacks=[kdc.Reclustering(dataset, seed=61), timer],
    )
    results["deepcluster_fit"] = timer.seconds

    plain = model()  # the same network, trained as a plain supervised keras.Model
    plain.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.1))
    timer = TrainTimer()
    keras.Model.fit(
        plain,
        LabelledViews(images, labels, views, args.batch_size, 61),
        epochs=args.epochs,
        verbose=0,
        callbacks=[timer],
    )
    results["plain_fit"] = timer.seconds

    rates = {
        name: steps * args.batch_size / statistics.median(seconds[1:])
        for name, seconds in results.items()
    }
    overhead = rates["plain_fit"] / rates["deepcluster_fit"] - 1
    print(
        f"{keras.backend.backend()}: images/s DeepCluster {rates['deepcluster_fit']:.0f}, "
        f"plain {rates['plain_fit']:.0f}; DeepCluster costs {overhead:+.1%}"
    )
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "backend": keras.backend.backend(),
                    "images": args.images,
                    "batch_size": args.batch_size,
                    "epoch_seconds": results,
                    "images_per_second": rates,
                    "overhead": overhead,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
