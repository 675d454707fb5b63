"""Training epoch time against Keras's `steps_per_execution` (steps per compiled call).

20,000 Fashion-MNIST images, the fashion_mnist recipe's network and optimizer,
clustering frozen after epoch 0 so that later epochs time training alone, and
an async-safe batch callback that reads the loss (as the CLI's NaN check
does). Runs alternate between the settings; the median of epochs 1.. of
every run of a setting is reported.

    KERAS_BACKEND=tensorflow python benchmarks/steps_per_execution.py \\
        --out docs/benchmarks/steps_per_execution_tensorflow.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import keras
import numpy as np
from fit_overhead import TrainTimer  # a sibling script

import keras_deepcluster as kdc

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


class ReadLoss(keras.callbacks.Callback):
    async_safe = True

    def on_train_batch_end(self, batch, logs=None):
        if not np.isfinite(float(logs["loss"])):
            raise FloatingPointError(f"NaN loss at step {batch}")


def epochs(images, steps_per_execution: int, count: int) -> list[float]:
    keras.utils.clear_session()
    views = kdc.ImageViews.for_dataset("fashion_mnist")
    data = kdc.PseudoLabelDataset(images, views, batch_size=128, seed=61)
    model = kdc.DeepCluster(kdc.backbones.lenet(seed=61), 5, weight_decay=1e-3)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.1), steps_per_execution=steps_per_execution
    )
    timer = TrainTimer()
    # The timer comes after the callback that re-clusters, so it times training only.
    callbacks = [kdc.Reclustering(data, seed=61, halt_after=1), timer, ReadLoss()]
    model.fit(data, epochs=count, callbacks=callbacks, verbose=0)
    return timer.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--settings", default="1,8")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    images = kdc.data.load("idx", "fashion_mnist", FASHION_MNIST).x_train[: args.images]
    settings = [int(s) for s in args.settings.split(",")]
    runs = {s: [] for s in settings}
    for repeat in range(args.repeats):
        for setting in settings if repeat % 2 == 0 else settings[::-1]:
            runs[setting].append(epochs(images, setting, args.epochs))
    medians = {s: statistics.median(t for run in r for t in run[1:]) for s, r in runs.items()}
    for setting, median in medians.items():
        print(f"{keras.backend.backend()} steps_per_execution={setting}: {median:.3f} s per epoch")
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "backend": keras.backend.backend(),
                    "images": args.images,
                    "epoch_seconds": runs,
                    "median_seconds": medians,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
