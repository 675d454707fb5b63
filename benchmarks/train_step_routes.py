"""Cost of DeepCluster's training step against Keras's plain supervised step.

DeepCluster keeps Keras's own `train_step` on every backend and overrides only
`compute_loss` (to add coupled weight decay). This script times, on the current
backend, images/s of:

* ``deepcluster``: `DeepCluster` (LeNet + head) with weight decay 1e-3;
* ``plain``: the same network as a plain functional `keras.Model`, compiled
  with sparse cross-entropy, no weight decay (the floor any route can reach).

    KERAS_BACKEND=torch python benchmarks/train_step_routes.py \
        --out docs/benchmarks/train_step_torch.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import keras
import numpy as np

import keras_deepcluster as kdc


def images_per_second(model, x, y, batch_size):
    """Images/s of one epoch of `fit`; the first call also compiles."""
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, shuffle=False)
    return len(x) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=10240)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.images, 32, 32, 1)).astype("float32")
    y = rng.integers(10, size=args.images)

    deepcluster = kdc.DeepCluster(kdc.backbones.lenet(seed=0), 10, weight_decay=1e-3)
    deepcluster.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.1))
    backbone = kdc.backbones.lenet(seed=0)
    logits = keras.layers.Dense(10)(keras.layers.ReLU()(backbone.output))
    plain = keras.Model(backbone.input, logits)
    plain.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )

    result = {
        "backend": keras.backend.backend(),
        "images": args.images,
        "batch_size": args.batch_size,
    }
    # Interleave the two so that machine noise hits both alike.
    models = {"deepcluster": deepcluster, "plain": plain}
    for model in models.values():
        images_per_second(model, x, y, args.batch_size)  # compile
    runs = {name: [] for name in models}
    for _ in range(args.repeats):
        for name, model in models.items():
            runs[name].append(images_per_second(model, x, y, args.batch_size))
    for name, values in runs.items():
        result[f"{name}_images_per_s"] = float(np.median(values))
    result["overhead_percent"] = 100 * (
        result["plain_images_per_s"] / result["deepcluster_images_per_s"] - 1
    )
    print(json.dumps(result))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
