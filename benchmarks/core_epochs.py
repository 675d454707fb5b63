"""Per-epoch cost and NMI of a recipe on the current backend, as JSON.

Trains exactly as `deepcluster train` does (`keras_deepcluster.train`),
into a temporary run directory, and reports per epoch the seconds spent re-clustering
(feature extraction + PCA + k-means) and training, the NMI against the true labels and
NMI(t, t-1); `--out` writes them, with the machine and settings, to a JSON file.

    KERAS_BACKEND=jax python benchmarks/core_epochs.py digits --epochs 5
    KERAS_BACKEND=jax python benchmarks/core_epochs.py fashion_mnist --source idx \
        --data-dir /usr/share/datasets/fashion-mnist --limit 10000 --clusters 10 --epochs 5 \
        --out docs/benchmarks/core_epochs_fmnist10k_jax.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import keras

from keras_deepcluster import load_recipe, train

OVERRIDES = {
    "limit": int,
    "epochs": int,
    "clusters": int,
    "seed": int,
    "epoch_multiplier": int,
    "source": str,
    "data_dir": str,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe", nargs="?", default="digits")
    for name, kind in OVERRIDES.items():
        parser.add_argument("--" + name.replace("_", "-"), type=kind)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    overrides = {name: getattr(args, name) for name in OVERRIDES if getattr(args, name) is not None}
    recipe = load_recipe(args.recipe).replace(**overrides)

    with tempfile.TemporaryDirectory() as directory:
        start = time.perf_counter()
        run = train(recipe, Path(directory) / "run")
        wall = time.perf_counter() - start
        history, images = run.history, run.summary["images"]

    rows = []
    print(f"{keras.backend.backend()} | {recipe.name} {overrides} | {images} images")
    print("epoch  recluster_s  train_s  nmi_labels  nmi_previous  loss")
    for h in history:
        recluster = h["seconds_features"] + h["seconds_pca"] + h["seconds_kmeans"]
        rows.append(
            dict(
                epoch=int(h["epoch"]),
                recluster_s=recluster,
                train_s=h["seconds_train"],
                **{
                    k: h.get(k)
                    for k in (
                        "nmi_labels",
                        "nmi_previous",
                        "loss",
                        "seconds_features",
                        "seconds_kmeans",
                    )
                },
            )
        )
        print(
            f"{int(h['epoch']):5d}  {recluster:11.2f}  {h['seconds_train']:7.2f}  "
            f"{h.get('nmi_labels', float('nan')):10.4f}  {h['nmi_previous']:12.4f}  {h['loss']:.3f}"
        )
    print(f"wall {wall:.1f} s")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                dict(
                    backend=keras.backend.backend(),
                    recipe=recipe.sections(),
                    images=images,
                    wall_s=wall,
                    epochs=rows,
                    machine=platform.processor() or platform.machine(),
                    cpus=os.cpu_count(),
                ),
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
