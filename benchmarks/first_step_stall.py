"""What stalls the first training step of an epoch (found on TensorFlow; any backend runs).

20,000 Fashion-MNIST images, LeNet, k = 10; the clustering is frozen after
epoch 0, and at every epoch start a callback does one of: nothing, a feature
extraction of all images, or a k-means of random 60,000 x 84 features.
Prints, per epoch, the seconds of its first step and of the whole training
part, and counts the epochs whose first step took over 1 s. `--workers 1`
forces Keras's one-worker input path (what `DeepCluster.fit` used before it
chose 2 workers on TensorFlow).

    KERAS_BACKEND=tensorflow python benchmarks/first_step_stall.py --epoch-start extract --workers 1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import keras
import numpy as np

import keras_deepcluster as kdc
from keras_deepcluster.method import clustering

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


class StepClock(keras.callbacks.Callback):
    """Does the epoch-start work, then times the first step and the training part."""

    def __init__(self, work):
        super().__init__()
        self.work, self.first, self.train = work, [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.work(epoch)
        self.start = self.last = time.perf_counter()
        self.steps = []

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        self.steps.append(now - self.last)
        self.last = now

    def on_epoch_end(self, epoch, logs=None):
        self.first.append(self.steps[0])
        self.train.append(time.perf_counter() - self.start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epoch-start", choices=["nothing", "extract", "kmeans"], required=True)
    parser.add_argument("--workers", type=int, help="PyDataset workers (default: fit chooses)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    images = kdc.data.load("idx", "fashion_mnist", FASHION_MNIST).x_train[:20000]
    views = kdc.ImageViews.for_dataset("fashion_mnist")
    workers = {} if args.workers is None else {"workers": args.workers}
    data = kdc.PseudoLabelDataset(images, views, batch_size=128, seed=61, **workers)
    model = kdc.DeepCluster(kdc.backbones.lenet(seed=61), 10, weight_decay=1e-3)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.1))
    extractor = kdc.FeatureExtractor(model.backbone, views)
    random_features = np.random.default_rng(0).normal(size=(60000, 84)).astype(np.float32)
    work = {
        "nothing": lambda epoch: None,
        "extract": lambda epoch: extractor(images),
        "kmeans": lambda epoch: clustering.kmeans(random_features, 10, epoch),
    }[args.epoch_start]
    clock = StepClock(work)
    reclustering = kdc.Reclustering(data, seed=61, halt_after=1)
    model.fit(data, epochs=args.epochs, verbose=0, callbacks=[reclustering, clock])
    stalls = sum(first > 1.0 for first in clock.first[1:])
    print(
        f"{keras.backend.backend()}, epoch start: {args.epoch_start}, workers {data.workers}: "
        f"first step s {[round(s, 2) for s in clock.first]}; training s "
        f"{[round(s, 2) for s in clock.train]}; stalled (first step > 1 s) in {stalls} of "
        f"{args.epochs - 1} epochs after the first"
    )
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "backend": keras.backend.backend(),
                    "epoch_start": args.epoch_start,
                    "workers": data.workers,
                    "first_step_seconds": clock.first,
                    "train_seconds": clock.train,
                    "stalled_epochs": stalls,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
