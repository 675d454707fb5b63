"""Re-clustering's share of a DeepCluster epoch on the full Fashion-MNIST training set.

LeNet + BN at the authors' settings on all 60,000 images; for each k, two epochs
of `DeepCluster.fit` (epoch 1 is reported; epoch 0 compiles), broken down into
feature extraction, PCA, k-means (faiss), the uniform sampler and training.

    KERAS_BACKEND=jax python benchmarks/reclustering_share.py \
        --out docs/benchmarks/reclustering_share_jax.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import keras

import keras_deepcluster as kdc
from keras_deepcluster.pseudo_label_dataset import PseudoLabelDataset

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


class TimedDataset(PseudoLabelDataset):
    """Times `set_pseudo_labels`: the sampler's share of the epoch."""

    def set_pseudo_labels(self, labels, epoch):
        start = time.perf_counter()
        super().set_pseudo_labels(labels, epoch)
        self.seconds_sampler = time.perf_counter() - start


class EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs["seconds_train"] = time.perf_counter() - self.start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clusters", default="10,100,1000")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    data = kdc.data.load("idx", "fashion_mnist", FASHION_MNIST)
    views = kdc.ImageViews.for_dataset("fashion_mnist")
    rows = []
    for k in map(int, args.clusters.split(",")):
        keras.utils.clear_session()
        dataset = TimedDataset(data.x_train, views, batch_size=128, seed=61)
        model = kdc.DeepCluster(kdc.backbones.lenet(seed=61), k, weight_decay=1e-3)
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.1))
        history = model.fit(
            dataset,
            epochs=2,
            verbose=0,
            callbacks=[kdc.Reclustering(dataset, seed=61), EpochTimer()],
        )
        h = {key: values[-1] for key, values in history.history.items()}
        parts = {
            "features": h["seconds_features"],
            "pca": h["seconds_pca"],
            "kmeans": h["seconds_kmeans"],
            "sampler": dataset.seconds_sampler,
        }
        # The timer starts after Reclustering's on_epoch_begin, so training excludes it.
        total = sum(parts.values()) + h["seconds_train"]
        share = sum(parts.values()) / total
        rows.append(
            {
                "k": k,
                **{f"seconds_{name}": s for name, s in parts.items()},
                "seconds_train": h["seconds_train"],
                "seconds_epoch": total,
                "share": share,
            }
        )
        print(
            f"k={k}: "
            + ", ".join(f"{name} {s:.2f}s" for name, s in parts.items())
            + f", train {h['seconds_train']:.2f}s; re-clustering {share:.1%} of {total:.1f}s",
            flush=True,
        )
    if args.out:
        args.out.write_text(
            json.dumps(
                {"backend": keras.backend.backend(), "images": 60000, "rows": rows}, indent=1
            )
        )


if __name__ == "__main__":
    main()
