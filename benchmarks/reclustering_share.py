"""Re-clustering's share of a DeepCluster epoch on the full Fashion-MNIST training set.

LeNet + BN at the authors' settings on all 60,000 images; for each k, `--epochs`
epochs of `DeepCluster.fit`. Re-clustering is everything `Reclustering` does at
an epoch's start (timed around it: feature extraction, PCA, k-means, the
uniform sampler, and the rest: label statistics and the head's reset);
training is the rest of the epoch. Reported: the median over epochs 1.. of each
part (epoch 0 compiles).

    KERAS_BACKEND=jax python benchmarks/reclustering_share.py \
        --out docs/benchmarks/reclustering_share_jax.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import keras

import keras_deepcluster as kdc
from keras_deepcluster.method.pseudo_label_dataset import PseudoLabelDataset

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


class TimedDataset(PseudoLabelDataset):
    """Times `set_pseudo_labels`: the sampler's share of the epoch."""

    def set_pseudo_labels(self, labels, epoch):
        start = time.perf_counter()
        super().set_pseudo_labels(labels, epoch)
        self.seconds_sampler = time.perf_counter() - start


class Clock(keras.callbacks.Callback):
    """Notes the time at epoch begin/end; one goes before `Reclustering`, one after."""

    def __init__(self):
        super().__init__()
        self.begins, self.ends = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.begins.append(time.perf_counter())

    def on_epoch_end(self, epoch, logs=None):
        self.ends.append(time.perf_counter())


class Parts(keras.callbacks.Callback):
    """Collects each epoch's parts (seconds) from the logs and the two clocks."""

    def __init__(self, dataset, before, after):
        super().__init__()
        self.dataset, self.before, self.after = dataset, before, after
        self.rows = []

    def on_epoch_end(self, epoch, logs=None):
        reclustering = self.after.begins[-1] - self.before.begins[-1]
        parts = {
            "features": logs["seconds_features"],
            "pca": logs["seconds_pca"],
            "kmeans": logs["seconds_kmeans"],
            "sampler": self.dataset.seconds_sampler,
        }
        parts["other"] = reclustering - sum(parts.values())
        parts["reclustering"] = reclustering
        parts["train"] = time.perf_counter() - self.after.begins[-1]
        self.rows.append(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clusters", default="10,100,1000")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument(
        "--workers", type=int, default=1, help="PyDataset workers making the training input."
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    data = kdc.data.load("idx", "fashion_mnist", FASHION_MNIST)
    views = kdc.ImageViews.for_dataset("fashion_mnist")
    rows = []
    for k in map(int, args.clusters.split(",")):
        keras.utils.clear_session()
        workers = {"workers": args.workers} if args.workers > 1 else {}
        dataset = TimedDataset(data.x_train, views, batch_size=128, seed=61, **workers)
        model = kdc.DeepCluster(kdc.backbones.lenet(seed=61), k, weight_decay=1e-3)
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.1))
        before, after = Clock(), Clock()
        parts = Parts(dataset, before, after)
        reclustering = kdc.Reclustering(dataset, data.y_train, seed=61)
        model.fit(
            dataset, epochs=args.epochs, verbose=0, callbacks=[before, reclustering, after, parts]
        )
        epochs = parts.rows[1:]
        median = {name: statistics.median(e[name] for e in epochs) for name in epochs[0]}
        shares = [e["reclustering"] / (e["reclustering"] + e["train"]) for e in epochs]
        row = {
            "k": k,
            **{f"seconds_{name}": s for name, s in median.items()},
            "share": statistics.median(shares),
            "shares": shares,
            "epochs": epochs,
        }
        rows.append(row)
        print(
            f"k={k}: "
            + ", ".join(f"{name} {s:.2f}s" for name, s in median.items())
            + f"; re-clustering {row['share']:.1%} of the epoch (epochs: "
            + ", ".join(f"{s:.1%}" for s in shares)
            + ")",
            flush=True,
        )
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "backend": keras.backend.backend(),
                    "images": 60000,
                    "workers": args.workers,
                    "rows": rows,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
