"""Training-loop overhead: DeepCluster's training epochs against a plain supervised `fit`.

Same LeNet backbone + head, batch size, images and augmentation (a PyDataset of
random views with the true labels for the plain model); the DeepCluster run
trains on pseudo-labels with its `Reclustering` callback. Images/s counts the
training part of each epoch only (re-clustering excluded: its cost is the
re-clustering benchmark's), median over epochs 1.. of every run (epoch 0
compiles), pooled over `--repeats` runs of each in alternating order.

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
    """The batches of `PseudoLabelDataset` (images and crop boxes), with fixed (true) labels."""

    def __init__(self, images, labels, views, batch_size, seed):
        super().__init__()
        self.images, self.labels, self.views = images, labels, views
        self.batch_size, self.seed = batch_size, seed

    def __len__(self):
        return len(self.images) // self.batch_size

    def __getitem__(self, index):
        rng = np.random.default_rng([self.seed, index])
        batch = rng.integers(len(self.images), size=self.batch_size)
        images = self.images[batch]
        boxes = self.views.random_boxes(len(batch), *images.shape[1:3], rng)
        return {"images": images, "boxes": boxes}, self.labels[batch]


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
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    data = kdc.data.load("idx", "fashion_mnist", FASHION_MNIST)
    images, labels = data.x_train[: args.images], data.y_train[: args.images]
    views = kdc.ImageViews.for_dataset("fashion_mnist")
    steps = args.images // args.batch_size

    def model():
        keras.utils.clear_session()
        network = kdc.DeepCluster(kdc.backbones.lenet(seed=61), 10, weight_decay=1e-3, views=views)
        network.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.1))
        return network

    def deepcluster_fit():
        dataset = kdc.PseudoLabelDataset(images, views, args.batch_size, seed=61)
        timer = TrainTimer()
        model().fit(
            dataset,
            epochs=args.epochs,
            verbose=0,
            callbacks=[kdc.Reclustering(dataset, seed=61), timer],
        )
        return timer.seconds

    def plain_fit():  # the same network, trained as a plain supervised keras.Model
        timer = TrainTimer()
        keras.Model.fit(
            model(),
            LabelledViews(images, labels, views, args.batch_size, 61),
            epochs=args.epochs,
            verbose=0,
            callbacks=[timer],
        )
        return timer.seconds

    runs = {"deepcluster_fit": [], "plain_fit": []}
    for repeat in range(args.repeats):
        # Alternate the order, so that a slow drift of the machine hits both alike.
        order = [deepcluster_fit, plain_fit] if repeat % 2 == 0 else [plain_fit, deepcluster_fit]
        for fit in order:
            runs[fit.__name__].append(fit())
    # Epoch 0 of every run compiles; the others are pooled.
    pooled = {name: [s for run in seconds for s in run[1:]] for name, seconds in runs.items()}
    rates = {
        name: steps * args.batch_size / statistics.median(seconds)
        for name, seconds in pooled.items()
    }
    slow = {
        name: sum(s > 1.3 * statistics.median(seconds) for s in seconds)
        for name, seconds in pooled.items()
    }
    overhead = rates["plain_fit"] / rates["deepcluster_fit"] - 1
    print(
        f"{keras.backend.backend()}: images/s DeepCluster {rates['deepcluster_fit']:.0f}, "
        f"plain {rates['plain_fit']:.0f}; DeepCluster costs {overhead:+.1%}; epochs over "
        f"1.3x the median: DeepCluster {slow['deepcluster_fit']} of "
        f"{len(pooled['deepcluster_fit'])}, plain {slow['plain_fit']} of {len(pooled['plain_fit'])}"
    )
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "backend": keras.backend.backend(),
                    "images": args.images,
                    "batch_size": args.batch_size,
                    "epochs": args.epochs,
                    "repeats": args.repeats,
                    "epoch_seconds": runs,
                    "images_per_second": rates,
                    "slow_epochs": slow,
                    "overhead": overhead,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
