"""Training from the image cache against training from memory: one epoch each, in one process.

The 60,000 Fashion-MNIST images of an IDX image cache (build it with
``deepcluster prepare idx --data-dir /usr/share/datasets/fashion-mnist``, or
any run of the fashion_mnist recipe from idx) are trained on as `DiskImages`
(read a batch at a time) and as the same array loaded into memory, alternating,
--repeats times: one DeepCluster training epoch (LeNet, k = 5, batch 128, labels
frozen after the first clustering), the mean of epochs 1 and 2.

    KERAS_BACKEND=jax python benchmarks/cache_reads.py --cache CACHE \\
        --out docs/benchmarks/cache_reads_jax.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import keras
import numpy as np

import keras_deepcluster as kdc


def epoch_seconds(images, labels) -> float:
    views = kdc.ImageViews.for_dataset("fashion_mnist")
    data = kdc.PseudoLabelDataset(images, views, batch_size=128, seed=0)
    model = kdc.DeepCluster(kdc.backbones.lenet(seed=0), 5, weight_decay=1e-3)
    steps = 1 if keras.backend.backend() == "torch" else 8
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), steps_per_execution=steps)
    seconds = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.start)

    reclustering = kdc.Reclustering(data, labels=labels, halt_after=1)
    model.fit(data, epochs=3, verbose=0, callbacks=[reclustering, Timer()])
    return float(np.mean(seconds[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    cached = kdc.data.load("cache", path=args.cache)
    in_memory = np.asarray(cached.x_train)
    rows = []
    for _ in range(args.repeats):
        for name, images in (("cache", cached.x_train), ("memory", in_memory)):
            rows.append({"images": name, "seconds_epoch": epoch_seconds(images, cached.y_train)})
            print(rows[-1], flush=True)
    if args.out:
        report = {"backend": keras.backend.backend(), "n": len(in_memory), "rows": rows}
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
