"""Does training help on a few thousand images? Untrained vs final clustering, per run.

Trains bundled recipes on small image sets through `kdc.train` (the backend is
``KERAS_BACKEND``; run one backend at a time) and writes one JSON line per run:
the untrained network's clustering scores (its first clustering) and the final
ones on the training images and, where the set has one, the test split, the
verdict, and the wall time. ``--min-steps`` compares schedules: a number, or
``none`` for one pass over the images per clustering (the authors' schedule).

    KERAS_BACKEND=jax python benchmarks/small_data.py --sets fmnist3000 --seeds 61,1,2 \\
        --min-steps recipe,none --out docs/benchmarks/small_data/jax.jsonl
    python benchmarks/small_data.py --table docs/benchmarks/small_data/*.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
# The README's synthetic photo folder (4 classes of ellipses), written once.
SHAPES = Path(tempfile.gettempdir()) / "keras_deepcluster_small_data" / "shapes"
# name: (recipe, overrides, classes)
SETS = {
    "fmnist3000": ("fashion_mnist", dict(source="idx", data_dir=FASHION_MNIST, limit=3000), 10),
    "fmnist10000": ("fashion_mnist", dict(source="idx", data_dir=FASHION_MNIST, limit=10000), 10),
    "digits": ("digits", {}, 10),
    "shapes3000": ("cifar10", dict(source="folder", data_dir=str(SHAPES), pca=32), 4),
}


def run_one(
    name: str,
    seed: int,
    min_steps: str,
    epochs: int,
    k_factor: int,
    kmeans: str | None = None,
    epoch_multiplier: int | None = None,
    probes: bool = True,
) -> dict:
    import keras

    import keras_deepcluster as kdc

    recipe_name, overrides, classes = SETS[name]
    if name == "shapes3000" and not SHAPES.is_dir():
        kdc.data.write_image_folder(SHAPES, 3000)
    recipe = kdc.load_recipe(recipe_name)
    steps = (
        recipe.min_steps
        if min_steps == "recipe"
        else None
        if min_steps == "none"
        else int(min_steps)
    )
    recipe = recipe.replace(
        **overrides,
        clusters=classes * k_factor,
        epochs=epochs,
        seed=seed,
        min_steps=steps,
        kmeans=kmeans or recipe.kmeans,
        epoch_multiplier=epoch_multiplier or recipe.epoch_multiplier,
    )
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        run = kdc.train(recipe, out=Path(folder) / "run")
        wall = time.perf_counter() - start
        summary, history = run.summary, run.history
        result = {}
        if probes:
            data = kdc.runs.recipe_data.load_data(recipe)
            result["label_free"] = label_free_signals(recipe, run, data)
            result["knn20"] = {
                stage: kdc.runs.probes.knn_probe(recipe, data, run, random=stage == "untrained")[
                    "accuracy"
                ]["20"]
                for stage in ("untrained", "final")
            }
    return {
        "set": name,
        "recipe": recipe_name,
        "backend": keras.backend.backend(),
        "seed": seed,
        "k": recipe.clusters,
        "epochs": epochs,
        "min_steps": steps,
        "kmeans": recipe.kmeans,
        "epoch_multiplier": recipe.epoch_multiplier,
        "history": {key: [row[key] for row in history] for key in ("nmi_labels", "cross_entropy")},
        "untrained": summary["untrained_clustering"],
        "final": {
            split: summary["final_clustering"][split]
            for split in ("train", "test")
            if split in summary["final_clustering"]
        },
        "verdict": {
            split: effect["verdict"] for split, effect in summary["training_effect"].items()
        },
        "wall_seconds": wall,
        **result,
    }


def label_free_signals(recipe, run, data) -> dict:
    """The label-free signals of the untrained and the final clustering (training images)."""
    import keras_deepcluster as kdc
    from keras_deepcluster.evaluation.label_free import label_free_scores

    trained = kdc.Run.open(run.path)
    views = kdc.runs.recipe_data.image_views(recipe)
    shape = (views.size, views.size, data.x_train.shape[-1])
    untrained = kdc.FeatureExtractor(kdc.runs.build.build_backbone(recipe, shape), views)
    first = run.read_pseudo_labels(0)
    features = untrained(data.x_train, 256)
    model = kdc.ClusterModel.from_labels(features, first, recipe.clusters, recipe.pca)
    final_features = trained.embed(data.x_train)
    final_labels, _ = trained.cluster_model.assign(final_features)
    return {
        "untrained": label_free_scores(model.transform(features), first, recipe.seed),
        "final": label_free_scores(
            trained.cluster_model.transform(final_features), final_labels, recipe.seed
        ),
    }


def table(paths: list[str]) -> str:
    """Markdown: one row per set, backend, k and schedule; means over seeds."""
    rows = [json.loads(line) for path in paths for line in Path(path).read_text().splitlines()]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["set"], row["backend"], row["k"], row["min_steps"]), []).append(row)
    lines = [
        "| set | backend | k | min steps | seeds | NMI untrained → final (train) | change: "
        "mean [min, max] | test NMI untrained → final | kNN-20 gain, points | not worse | "
        "wall s per run |",
        "|---|---|---:|---:|---:|---|---|---|---:|---:|---:|",
    ]
    for (name, backend, k, steps), group in sorted(groups.items(), key=str):
        before = [row["untrained"]["train"]["nmi"] for row in group]
        after = [row["final"]["train"]["nmi"] for row in group]
        change = [b - a for a, b in zip(before, after)]
        test = ""
        if all("test" in row["final"] for row in group):
            tb = statistics.mean(row["untrained"]["test"]["nmi"] for row in group)
            ta = statistics.mean(row["final"]["test"]["nmi"] for row in group)
            test = f"{tb:.3f} → {ta:.3f}"
        held = sum(row["verdict"]["train"] != "worse" for row in group)
        knn = ""
        if all("knn20" in row for row in group):
            gain = [100 * (row["knn20"]["final"] - row["knn20"]["untrained"]) for row in group]
            knn = f"{statistics.mean(gain):+.1f}"
        lines.append(
            f"| {name} | {backend} | {k} | {steps or 'none'} | {len(group)} | "
            f"{statistics.mean(before):.3f} → {statistics.mean(after):.3f} | "
            f"{statistics.mean(change):+.3f} [{min(change):+.3f}, {max(change):+.3f}] | "
            f"{test} | {knn} | {held}/{len(group)} | "
            f"{statistics.mean(row['wall_seconds'] for row in group):.0f} |"
        )
    return "\n".join(lines)


def default_summary(paths: list[str]) -> str:
    """The runs with their recipe's own schedule: share not worse, mean NMI change and kNN
    gain with 95 % bootstrap intervals (10,000 resamples of the runs, seed 0)."""
    from keras_deepcluster.runs.recipe import load_recipe

    rows = [json.loads(line) for path in paths for line in Path(path).read_text().splitlines()]
    rows = [row for row in rows if row["min_steps"] == load_recipe(row["recipe"]).min_steps]
    change = [row["final"]["train"]["nmi"] - row["untrained"]["train"]["nmi"] for row in rows]
    knn = [100 * (row["knn20"]["final"] - row["knn20"]["untrained"]) for row in rows]
    kept = sum(row["verdict"]["train"] != "worse" for row in rows)
    rng = np.random.default_rng(0)

    def interval(values):
        means = rng.choice(values, (10_000, len(values))).mean(axis=1)
        low, high = np.quantile(means, [0.025, 0.975])
        return f"{np.mean(values):+.3f} [{low:+.3f}, {high:+.3f}]"

    return (
        f"With their recipe's schedule: {kept} of {len(rows)} runs not worse "
        f"({kept / len(rows):.0%}); NMI change {interval(change)}; kNN-20 gain, points "
        f"{interval(knn)}."
    )


def signal_table(paths: list[str]) -> str:
    """Markdown: Spearman rank correlation of each label-free signal with NMI, over all
    runs' untrained and final clusterings, and of their changes with NMI's change."""
    from scipy.stats import spearmanr

    rows = [json.loads(line) for path in paths for line in Path(path).read_text().splitlines()]
    rows = [row for row in rows if "label_free" in row]
    stages = [(row, stage) for row in rows for stage in ("untrained", "final")]
    nmis = [
        row[stage]["train"]["nmi"] if stage == "final" else row["untrained"]["train"]["nmi"]
        for row, stage in stages
    ]
    lines = [
        f"| signal | Spearman ρ with NMI ({len(stages)} clusterings) | ρ of the change "
        f"({len(rows)} runs) |",
        "|---|---:|---:|",
    ]
    for signal in ("silhouette", "seed_agreement", "cluster_generalization"):
        values = [row["label_free"][stage][signal] for row, stage in stages]
        level = spearmanr(values, nmis).statistic
        changes = [
            row["label_free"]["final"][signal] - row["label_free"]["untrained"][signal]
            for row in rows
        ]
        gains = [row["final"]["train"]["nmi"] - row["untrained"]["train"]["nmi"] for row in rows]
        change = spearmanr(changes, gains).statistic
        lines.append(f"| {signal} | {level:+.2f} | {change:+.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="fmnist3000")
    parser.add_argument("--seeds", default="61,1,2")
    parser.add_argument("--min-steps", default="recipe,none")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--k-factors", default="1", help="k = classes x each factor")
    parser.add_argument("--kmeans", help="k-means backend (default: the recipe's)")
    parser.add_argument("--epoch-multiplier", type=int, help="default: the recipe's")
    parser.add_argument("--no-probes", action="store_true", help="no kNN, no label-free signals")
    parser.add_argument("--history", nargs="+", help="print NMI per epoch of these files' runs")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--table", nargs="+", help="print the table of these result files")
    args = parser.parse_args()
    if args.table:
        print(table(args.table))
        print()
        print(default_summary(args.table))
        print()
        print(signal_table(args.table))
        return
    if args.history:
        lines = [line for path in args.history for line in Path(path).read_text().splitlines()]
        for row in map(json.loads, lines):
            steps = -(-row["epoch_multiplier"] * 3000 // 128) if row["set"] == "fmnist3000" else ""
            nmis = " ".join(f"{v:.3f}" for v in row["history"]["nmi_labels"])
            print(f"{row['backend']} seed {row['seed']} x{row['epoch_multiplier']} "
                  f"{row['kmeans']} steps {steps}: NMI {nmis}; cross-entropy last "
                  f"{row['history']['cross_entropy'][-1]:.2f}")  # fmt: skip
        return
    for name in args.sets.split(","):
        for factor in map(int, args.k_factors.split(",")):
            for steps in args.min_steps.split(","):
                for seed in map(int, args.seeds.split(",")):
                    result = run_one(
                        name,
                        seed,
                        steps,
                        args.epochs,
                        factor,
                        args.kmeans,
                        args.epoch_multiplier,
                        not args.no_probes,
                    )
                    line = json.dumps(result)
                    print(line, flush=True)
                    if args.out:
                        args.out.parent.mkdir(parents=True, exist_ok=True)
                        with args.out.open("a") as f:
                            f.write(line + "\n")


if __name__ == "__main__":
    main()
