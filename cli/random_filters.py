"""`deepcluster space`: the quality of the random filters of many seeds (paper §4.4)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click
import numpy as np
from rich.table import Table

from keras_deepcluster.recipe import Recipe
from keras_deepcluster.run_directory import RunDirectory
from keras_deepcluster_cli.options import (
    RUN_AGAIN,
    IntList,
    backend_option,
    checked,
    data_options,
    interruptible,
    make_console,
    output_options,
    resolve_recipe,
    use_backend,
    user_errors,
)

if TYPE_CHECKING:  # importing it imports Keras, before the command chose the backend
    from keras_deepcluster.evaluation import FilterQuality

RESULTS = "space.csv"
HISTOGRAM = "space_nmi.png"
COLUMNS = ("seed", "nmi", "label_entropy", "label_noise", "seconds")


@click.command()
@click.argument("recipe")
@click.option(
    "--seeds",
    required=True,
    type=IntList(),
    help="Seeds to score: integers and ranges, e.g. 0-99 or 1,5,9-12.",
)
@click.option("--clusters", "-k", type=int, callback=checked, help="k (default: the recipe's).")
@backend_option
@data_options
@output_options
def space(recipe, seeds, clusters, backend, out, overwrite, **data):
    """Random-filter quality: for each seed, cluster the features of the
    untrained network once and score the clusters against the labels (NMI,
    mean per-cluster label entropy and noise). Writes space.csv and a
    histogram; resumable: run it again and it scores only the missing seeds.

    The k-means of a seed is the first clustering of `deepcluster train` with
    that seed, so NMI here is that run's epoch-0 NMI.

    \b
    Examples:
      deepcluster space fashion_mnist --seeds 0-99 --source idx \\
          --data-dir /usr/share/datasets/fashion-mnist
      deepcluster space digits --seeds 0-19 -k 10 --out runs/space-digits
    """
    if any(seed < 0 for seed in seeds):
        raise click.BadParameter("seeds must be >= 0.", param_hint="--seeds")
    recipe = resolve_recipe(recipe, {"clusters": clusters, **data})
    use_backend(backend)
    from keras_deepcluster_cli import plots
    from keras_deepcluster_cli.progress import load_data

    console = make_console()
    out = out or Path("runs") / f"space-{recipe.name}-k{recipe.clusters}"
    run = RunDirectory(out)
    with user_errors():
        run.lock()  # before loading: another process may be scoring here
        data_ = load_data(console, recipe)
        if data_.y_train is None:
            raise ValueError(
                f"{recipe.dataset} has no labels; `space` scores clusters against labels."
            )
        resumed = run.open(recipe.replace(seed=0).to_toml(), overwrite)
        done = {row["seed"]: row for row in read_results(run)}
        todo = [seed for seed in seeds if seed not in done]
        console.print(
            f"space: {recipe.name}, k={recipe.clusters}, {len(data_.x_train)} images; "
            f"{len(seeds) - len(todo)} of {len(seeds)} seeds already scored"
            + (" (resumed)" if resumed else "")
        )
        scores = random_filter_qualities(recipe, todo, data_.x_train, data_.y_train)
        status = console.status(f"scoring {len(todo)} seeds")
        with interruptible(console, RUN_AGAIN), status:
            for i, (seed, quality) in enumerate(scores):
                status.update(f"{i + 1} of {len(todo)} seeds scored")
                done[seed] = {
                    "seed": seed,
                    "nmi": quality.nmi,
                    "label_entropy": quality.label_entropy,
                    "label_noise": quality.label_noise,
                    "seconds": quality.seconds,
                }
                write_results(run, done.values())
        rows = [done[seed] for seed in seeds]
        plots.space_histogram(
            rows, run.path / HISTOGRAM, f"{recipe.name}: random-filter quality, k={recipe.clusters}"
        )
    console.print(results_table(rows, f"space {recipe.name} k={recipe.clusters}"))
    console.print(f"{summary(rows)}; written to {out / RESULTS} and {out / HISTOGRAM}")


def random_filter_qualities(
    recipe: Recipe, seeds: Iterable[int], images: np.ndarray, labels: np.ndarray
) -> Iterator[tuple[int, FilterQuality]]:
    """`filter_quality` of the untrained network `recipe` draws with each seed, in turn.

    The views, k, PCA and k-means are the recipe's, so a seed's NMI is the
    epoch-0 NMI of its training run on these images. Yields ``(seed,
    FilterQuality)`` as each is scored, for callers that save or report as
    they go.
    """
    import keras

    import keras_deepcluster as kdc
    from keras_deepcluster import pretraining

    views = pretraining.image_views(recipe)
    shape = (views.size, views.size, images.shape[-1])
    for seed in seeds:
        keras.utils.clear_session()  # one network at a time in memory, not every seed's
        backbone = pretraining.build_backbone(recipe.replace(seed=seed), shape)
        yield (
            seed,
            kdc.evaluation.filter_quality(
                backbone, images, labels, views, recipe.clusters, seed, recipe.pca, recipe.kmeans
            ),
        )


def read_results(run: RunDirectory) -> list[dict]:
    path = run.path / RESULTS
    if not path.is_file():
        return []
    with run.reading(RESULTS), path.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
        if not rows or any(set(row) != set(COLUMNS) or None in row.values() for row in rows):
            raise ValueError("rows missing or cut short")
        return [{**{k: float(v) for k, v in row.items()}, "seed": int(row["seed"])} for row in rows]


def write_results(run: RunDirectory, rows) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(sorted(rows, key=lambda row: row["seed"]))
    run.write_text(RESULTS, text.getvalue())


def summary(rows: list[dict]) -> str:
    """Mean, sample sd, median, min and max of the seeds' NMI."""
    nmis = np.array([row["nmi"] for row in rows])
    sd = nmis.std(ddof=1) if len(nmis) > 1 else 0.0
    return (
        f"NMI over {len(nmis)} seeds: mean {nmis.mean():.4f}, sd {sd:.4f}, median "
        f"{np.median(nmis):.4f}, min {nmis.min():.4f}, max {nmis.max():.4f}"
    )


def results_table(rows: list[dict], title: str) -> Table:
    table = Table(title=title)
    for column in ("seed", "NMI", "label entropy", "label noise", "seconds"):
        table.add_column(column, justify="right")
    for row in sorted(rows, key=lambda r: -r["nmi"]):
        table.add_row(
            f"{row['seed']:.0f}",
            f"{row['nmi']:.4f}",
            f"{row['label_entropy']:.3f}",
            f"{row['label_noise']:.3f}",
            f"{row['seconds']:.1f}",
        )
    return table
