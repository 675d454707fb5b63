"""The imagenet recipe's per-device rates: the inputs of the scale model in docs/performance.md.

Runs `--epochs` DeepCluster cycles of the `imagenet` recipe's network (AlexNet +
Sobel + BN, 224-px views of 256-px uint8 images, k = 10,000, PCA 256, batch 256,
SGD 0.05/0.9, weight decay 1e-5) on one device of the current backend, and
records per epoch the seconds of extraction, PCA, k-means and training, and
the images/s of extraction and training. The first epoch compiles: read the
last. The images are random uint8 (speed does not depend on their content);
N must be at least k.

    KERAS_BACKEND=jax python benchmarks/imagenet_rates.py --images 10240 --out rates_jax.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import keras
import numpy as np

import keras_deepcluster as kdc

SECONDS = ("seconds_features", "seconds_pca", "seconds_kmeans")


class TrainingTimes(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = getattr(self, "seconds", []) + [time.perf_counter() - self.start]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--clusters", type=int, default=10_000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.images, 256, 256, 3), dtype=np.uint8)
    views = kdc.ImageViews.for_dataset("imagenet")
    backbone = kdc.backbones.get(
        "alexnet", input_shape=(224, 224, 3), batch_norm=True, sobel=True, seed=31
    )
    result = {
        "backend": keras.backend.backend(),
        "accelerator": kdc.platform.devices.accelerator_available(),
        "images": args.images,
        "batch_size": args.batch_size,
        "keras": keras.__version__,
        "python": platform.python_version(),
    }

    data = kdc.PseudoLabelDataset(images, views, batch_size=args.batch_size, seed=0)
    model = kdc.DeepCluster(backbone, args.clusters, weight_decay=1e-5)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    reclustering = kdc.Reclustering(data, pca_dim=256, seed=31, feature_batch_size=256)
    training = TrainingTimes()  # after Reclustering: its epoch starts once the labels are set
    history = model.fit(data, epochs=args.epochs, verbose=0, callbacks=[reclustering, training])
    epochs = []
    for epoch, seconds in enumerate(training.seconds):
        row = {key: history.history[key][epoch] for key in SECONDS}
        row["seconds_training"] = seconds
        row["extraction_images_per_second"] = args.images / row["seconds_features"]
        row["training_images_per_second"] = len(data) * args.batch_size / seconds
        epochs.append(row)
    result["epochs"] = epochs  # the first compiles: read the last
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
