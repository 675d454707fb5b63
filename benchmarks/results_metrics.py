"""The field's metrics on Fashion-MNIST for docs/results.md: trained against untrained network.

For each seed, the fashion_mnist recipe at 15 epochs (docs/results.md's length) on the 60,000
training images: ACC (Hungarian), many-to-one ACC, ARI, AMI and NMI of the final clustering on
the 10,000 test images (assigned to the clusters of the training images), the weighted kNN
classifier (k = 20, 200, T = 0.07) and the linear probe on `conv_2`; and the same for the
untrained network of the seed (its features clustered once, with the k-means seed of epoch 0).
Resumable: finished runs and probes are kept. Writes docs/results/metrics/metrics.{json,md}.

    KERAS_BACKEND=tensorflow python benchmarks/results_metrics.py --seeds 6,39,61
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import keras
import numpy as np

import keras_deepcluster as kdc
from keras_deepcluster.method.clustering import kmeans_seed
from keras_deepcluster.runs import build, probes, recipe_data

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
METRICS = ("acc", "acc_many_to_one", "ari", "ami", "nmi", "knn_20", "knn_200", "linear")


def untrained_scores(recipe: kdc.Recipe, data) -> dict:
    """Clustering scores on the test split of the untrained network's features."""
    views = recipe_data.image_views(recipe)
    backbone = build.build_backbone(recipe, (views.size, views.size, 1))
    extractor = kdc.FeatureExtractor(backbone, views)
    model, _ = kdc.ClusterModel.fit(
        extractor(data.x_train),
        recipe.clusters,
        seed=kmeans_seed(recipe.seed, 0),
        pca_dim=recipe.pca,
        kmeans_backend=recipe.kmeans,
        kmeans_iterations=recipe.kmeans_iterations,
    )
    clusters, _ = model.assign(extractor(data.x_test))
    return kdc.evaluation.cluster_scores(clusters, data.y_test)


def seed_rows(recipe: kdc.Recipe, out: Path) -> dict[str, dict]:
    run = kdc.RunDirectory(out)
    if not run.is_finished:
        kdc.train(recipe, out, resume=run.is_run, on_note=print)
    data = recipe_data.recorded_data(run, recipe)
    rows = {}
    for model, random in (("trained", False), ("untrained", True)):
        suffix = "_random" if random else ""
        if not (run.path / f"probe{suffix}.json").is_file():
            probes.probe(recipe, data, run, random=random)
        if not (run.path / f"knn{suffix}.json").is_file():
            probes.knn_probe(recipe, data, run, random=random)
        scores = (
            untrained_scores(recipe, data) if random else run.summary["final_clustering"]["test"]
        )
        knn = run.read_json(f"knn{suffix}.json")["accuracy"]
        rows[model] = {
            **scores,
            "knn_20": knn["20"],
            "knn_200": knn["200"],
            "linear": run.read_json(f"probe{suffix}.json")["accuracy"],
        }
        print(recipe.seed, model, {k: round(v, 4) for k, v in rows[model].items()}, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="6,39,61")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--runs", type=Path, default=Path("runs/results/metrics"))
    parser.add_argument("--out", type=Path, default=Path("docs/results/metrics"))
    args = parser.parse_args()
    base = kdc.load_recipe("fashion_mnist").replace(
        source="idx", data_dir=FASHION_MNIST, epochs=args.epochs
    )
    seeds = [int(s) for s in args.seeds.split(",")]
    results = {
        seed: seed_rows(base.replace(seed=seed), args.runs / f"seed{seed}") for seed in seeds
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "metrics.json").write_text(
        json.dumps(
            {
                "recipe": base.sections(),
                "backend": keras.backend.backend(),
                "seeds": {str(seed): rows for seed, rows in results.items()},
            },
            indent=1,
        )
    )
    lines = [
        f"fashion_mnist recipe, {args.epochs} epochs, k = {base.clusters}, seeds {args.seeds}; "
        "test split (10,000 images); mean ± sd over the seeds, in %.",
        "",
        "| network | " + " | ".join(METRICS) + " |",
        "|---" * (len(METRICS) + 1) + "|",
    ]
    for model in ("trained", "untrained"):
        cells = []
        for metric in METRICS:
            values = 100 * np.array([results[seed][model][metric] for seed in seeds])
            cells.append(f"{values.mean():.2f} ± {values.std(ddof=1):.2f}")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    (args.out / "metrics.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
