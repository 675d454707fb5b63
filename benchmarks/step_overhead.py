"""Host overhead of a DeepCluster training step: seconds per step at tiny batches.

At a batch of 2, 8 or 32 the arithmetic of a step is negligible, so its time
is what every step pays whatever its size: Python, dispatch of each operation,
the optimizer's update, the metrics. The model is the recipe's, built and
compiled as `kdc.train` builds it (`Pretraining.build`, the recipe's
``steps_per_execution`` where the backend takes it), trained with its
`Reclustering` callback; only the training part of each epoch is timed (the
re-clustering runs before the timer starts). Epoch 0 compiles and is left out;
the median over the other epochs of every repeat, divided by the steps. The
learning rate is 0.001, so that batches of 2 random images stay finite; it
does not change what a step costs.

    KERAS_BACKEND=torch python benchmarks/step_overhead.py \
        --out docs/benchmarks/step_overhead/torch.json
    KERAS_BACKEND=torch python benchmarks/step_overhead.py --keras-calls \
        --out docs/benchmarks/step_overhead/torch_keras_calls.json
        # PyTorch through Keras's layer calls, DeepCluster(direct_torch=False)
    KERAS_BACKEND=torch python benchmarks/step_overhead.py --profile fashion_mnist/8
        # cProfile of the timed epochs of one case instead: where a step's time goes
"""

from __future__ import annotations

import argparse
import cProfile
import json
import platform
import pstats
import statistics
from pathlib import Path

import keras
import numpy as np

# Run as a script from the repository root, this folder is on the path.
from fit_overhead import TrainTimer  # times the training part of each epoch

import keras_deepcluster as kdc
from keras_deepcluster.runs.build import Pretraining
from keras_deepcluster.runs.recipe_data import image_views

# LeNet on 28 x 28 grayscale, the AlexNet-micro on 32 x 32 RGB: the recipes' networks.
RECIPES = ("fashion_mnist", "cifar10")


def machine() -> str:
    """The CPU's model name and core count (from /proc/cpuinfo where there is one)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.machine()
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    flags = next((line for line in lines if line.startswith("flags")), "")
    extensions = [f for f in ("avx512f", "amx_tile") if f" {f}" in flags]
    return (
        f"{names[0] if names else platform.machine()}, {len(names)} cores, {' '.join(extensions)}"
    )


def step_seconds(
    recipe_name: str, batch_size: int, steps: int, epochs: int, direct_torch: bool = True
) -> list[float]:
    """Seconds per training step of each epoch after the first."""
    recipe = kdc.load_recipe(recipe_name).replace(
        batch_size=batch_size, epochs=epochs, epoch_multiplier=1, clusters=4, pca=None, lr=1e-3
    )
    views = image_views(recipe)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (steps * batch_size, 32, 32, views.channels), np.uint8)
    data = kdc.data.ImageData(recipe.dataset, images)
    keras.utils.clear_session()
    pretraining = Pretraining.build(recipe, data)
    pretraining.model.direct_torch = direct_torch
    timer = TrainTimer()
    pretraining.model.fit(
        pretraining.dataset,
        epochs=epochs,
        verbose=0,
        callbacks=[pretraining.reclustering, timer],
    )
    return [seconds / steps for seconds in timer.seconds[1:]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", default="2,8,32")
    parser.add_argument("--steps", type=int, default=200, help="Training steps per epoch.")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--profile", metavar="RECIPE/BATCH", help="Profile one case instead.")
    parser.add_argument(
        "--keras-calls",
        action="store_true",
        help="PyTorch: train through Keras's layer calls (DeepCluster(direct_torch=False)).",
    )
    args = parser.parse_args()
    if args.profile:
        recipe, batch_size = args.profile.split("/")
        profile = cProfile.Profile()
        profile.runcall(
            step_seconds, recipe, int(batch_size), args.steps, args.epochs, not args.keras_calls
        )
        pstats.Stats(profile).sort_stats("cumulative").print_stats(40)
        return
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    results = {}
    for recipe in RECIPES:
        for batch_size in batch_sizes:
            seconds = []
            for _ in range(args.repeats):
                seconds += step_seconds(
                    recipe, batch_size, args.steps, args.epochs, not args.keras_calls
                )
            median = statistics.median(seconds)
            results[f"{recipe}/{batch_size}"] = {
                "recipe": recipe,
                "batch_size": batch_size,
                "step_ms": [1000 * s for s in seconds],
                "median_step_ms": 1000 * median,
            }
            print(f"{keras.backend.backend()} {recipe} batch {batch_size}: {1000 * median:.2f} ms")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "backend": keras.backend.backend(),
            "direct_torch": keras.backend.backend() == "torch" and not args.keras_calls,
            "keras": keras.__version__,
            "machine": machine(),
            "steps_per_epoch": args.steps,
            "epochs": args.epochs,
            "repeats": args.repeats,
            "results": results,
        }
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
