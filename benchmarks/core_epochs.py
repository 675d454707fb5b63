"""Per-epoch cost and NMI of DeepCluster on real images, on the current backend.

Runs `DeepCluster.fit` with a `Reclustering` callback and reports, per epoch,
the seconds spent re-clustering (feature extraction + PCA + k-means) and
training, the NMI against the true labels and NMI(t, t-1). Writes a JSON file.

    KERAS_BACKEND=jax python benchmarks/core_epochs.py                 # sklearn digits
    KERAS_BACKEND=jax python benchmarks/core_epochs.py --fashion-mnist 10000 \
        --out docs/benchmarks/core_epochs_jax.json

Fashion-MNIST is read from the Debian package dataset-fashion-mnist
(/usr/share/datasets/fashion-mnist), with the authors' paper-era settings
(LeNet + BN, SGD lr 0.1, momentum 0.1, weight decay 1e-3, batch 128, no PCA).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import keras

import keras_deepcluster as kdc

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


class EpochTimer(keras.callbacks.Callback):
    """Seconds of each whole epoch (re-clustering included) into the logs."""

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs["seconds_epoch"] = time.perf_counter() - self.start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fashion-mnist", type=int, metavar="N", help="first N training images")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--clusters", type=int, default=10)
    parser.add_argument("--seed", type=int, default=61)
    parser.add_argument("--epoch-length", type=int, help="images drawn per epoch (default N)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    if args.fashion_mnist:
        fashion = kdc.data.load("idx", "fashion_mnist", FASHION_MNIST)
        images, labels = fashion.x_train[: args.fashion_mnist], fashion.y_train[: args.fashion_mnist]
        views = kdc.ImageViews.for_dataset("fashion_mnist")
        settings = dict(lr=0.1, momentum=0.1, weight_decay=1e-3, batch_size=128,
                        epoch_length=args.epoch_length)
        dataset = f"fashion_mnist[:{len(images)}]"
    else:
        digits = kdc.data.load("digits")
        images, labels = digits.x_train, digits.y_train
        views = kdc.ImageViews.for_dataset("mnist")
        settings = dict(lr=0.1, momentum=0.9, weight_decay=1e-3, batch_size=32, epoch_length=4 * len(images))
        dataset = "sklearn digits (1797, 8x8)"

    keras.utils.set_random_seed(args.seed)
    data = kdc.PseudoLabelDataset(
        images, views, batch_size=settings["batch_size"], seed=args.seed, epoch_length=settings["epoch_length"]
    )
    model = kdc.DeepCluster(
        kdc.backbones.lenet(seed=args.seed), args.clusters, weight_decay=settings["weight_decay"]
    )
    model.compile(optimizer=keras.optimizers.SGD(settings["lr"], momentum=settings["momentum"]))
    reclustering = kdc.Reclustering(data, labels=labels, seed=args.seed)
    start = time.perf_counter()
    history = model.fit(data, epochs=args.epochs, callbacks=[EpochTimer(), reclustering], verbose=0)
    wall = time.perf_counter() - start

    h = history.history
    rows = []
    print(f"{keras.backend.backend()} | {dataset} | k={args.clusters} | {settings}")
    print("epoch  recluster_s  train_s  nmi_labels  nmi_previous  loss")
    for e in range(args.epochs):
        recluster = h["seconds_features"][e] + h["seconds_pca"][e] + h["seconds_kmeans"][e]
        train = h["seconds_epoch"][e] - recluster
        rows.append(dict(epoch=e, recluster_s=recluster, train_s=train,
                         **{k: h[k][e] for k in ("nmi_labels", "nmi_previous", "loss",
                                                 "seconds_features", "seconds_kmeans")}))
        print(f"{e:5d}  {recluster:11.2f}  {train:7.2f}  {h['nmi_labels'][e]:10.4f}  "
              f"{h['nmi_previous'][e]:12.4f}  {h['loss'][e]:.3f}")
    print(f"wall {wall:.1f} s")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(dict(
            backend=keras.backend.backend(), dataset=dataset, clusters=args.clusters, seed=args.seed,
            settings=settings, wall_s=wall, epochs=rows, machine=platform.processor() or platform.machine(),
            cpus=os.cpu_count(),
        ), indent=1))


if __name__ == "__main__":
    main()
