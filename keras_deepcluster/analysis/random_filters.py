"""The quality of many seeds' random filters (paper §4.4; `deepcluster space`).

The networks are built inside the functions: importing this module does not
import Keras, so a command can read ``space.csv`` before choosing the backend.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import numpy as np

from keras_deepcluster.runs.recipe import Recipe
from keras_deepcluster.runs.run_directory import RunDirectory

if TYPE_CHECKING:
    from keras_deepcluster.evaluation import FilterQuality

# The scores of a `space` folder, one row per seed, and its columns.
SPACE_RESULTS = "space.csv"
SPACE_COLUMNS = ("seed", "nmi", "label_entropy", "label_noise", "seconds")


def random_filter_qualities(
    recipe: Recipe, seeds: Iterable[int], images: np.ndarray, labels: np.ndarray
) -> Iterator[tuple[int, FilterQuality]]:
    """`filter_quality` of the untrained network `recipe` draws with each seed, in turn.

    The views, k, PCA and k-means are the recipe's, so a seed's NMI is the
    epoch-0 NMI of its training run on these images.

    Args:
        recipe: The settings of the networks (its seed is replaced by each of `seeds`).
        seeds: The seeds to score.
        images: The images to cluster.
        labels: One label per image.

    Yields:
        ``(seed, FilterQuality)`` as each is scored, for callers that save or
        report as they go.
    """
    import keras

    from keras_deepcluster import evaluation
    from keras_deepcluster.runs.build import build_backbone
    from keras_deepcluster.runs.recipe_data import image_views

    views = image_views(recipe)
    shape = (views.size, views.size, images.shape[-1])
    for seed in seeds:
        keras.utils.clear_session()  # one network at a time in memory, not every seed's
        backbone = build_backbone(recipe.replace(seed=seed), shape)
        yield (
            seed,
            evaluation.filter_quality(
                backbone, images, labels, views, recipe.clusters, seed, recipe.pca, recipe.kmeans
            ),
        )


def score_random_filters(
    recipe: Recipe,
    seeds: Iterable[int],
    images: np.ndarray,
    labels: np.ndarray,
    run: RunDirectory,
) -> Iterator[dict]:
    """Scores the seeds that `run`'s ``space.csv`` lacks, rewriting the file after each.

    Resumable: a seed scored before an interruption is kept and not scored
    again. The caller opens (and locks) `run` with the recipe's settings.

    Args:
        recipe: The settings of the networks, as in `random_filter_qualities`.
        seeds: The seeds wanted.
        images: The images to cluster.
        labels: One label per image.
        run: The `space` folder.

    Yields:
        The row of each newly scored seed (`SPACE_COLUMNS`), after it was written.
    """
    done = {row["seed"]: row for row in read_space_results(run)}
    todo = [seed for seed in seeds if seed not in done]
    for seed, quality in random_filter_qualities(recipe, todo, images, labels):
        done[seed] = {
            "seed": seed,
            "nmi": quality.nmi,
            "label_entropy": quality.label_entropy,
            "label_noise": quality.label_noise,
            "seconds": quality.seconds,
        }
        write_space_results(run, done.values())
        yield done[seed]


def read_space_results(run: RunDirectory) -> list[dict]:
    """The rows of `run`'s ``space.csv`` (none when it has no such file).

    Raises:
        DamagedFileError: The file is cut short or has other columns.
    """
    path = run.path / SPACE_RESULTS
    if not path.is_file():
        return []
    with run.reading(SPACE_RESULTS), path.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
        if not rows or any(set(row) != set(SPACE_COLUMNS) or None in row.values() for row in rows):
            raise ValueError("rows missing or cut short")
        return [{**{k: float(v) for k, v in row.items()}, "seed": int(row["seed"])} for row in rows]


def write_space_results(run: RunDirectory, rows: Iterable[dict]) -> None:
    """Writes `rows` as `run`'s ``space.csv``, sorted by seed, replacing it whole."""
    text = io.StringIO()
    writer = csv.DictWriter(text, SPACE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(sorted(rows, key=lambda row: row["seed"]))
    run.write_text(SPACE_RESULTS, text.getvalue())
