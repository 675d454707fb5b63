"""Choosing the seed, k and halt epoch with a few labelled images (`deepcluster select`).

The Deep Dive paper's proposal (digest §4.8), made concrete:

1. **seed** (`choose_seed`): the candidate whose untrained network clusters the
   labelled images best (NMI of one k-means, `filter_quality`);
2. **k** (`choose_clusters`): a short trial run per candidate k with that seed,
   scored with the labelled images by every criterion of `CRITERIA`; one of
   them chooses (all are recorded, so their choices can be compared later);
3. **halt epoch** (`choose_halt`): in the winning trial, the epoch whose
   pseudo-labels agree best with the labelled images (NMI on them); halt after
   it, or never if the agreement still rose at the trial's last epoch.

Only the labelled images' labels are used for choosing. Without any
(``labelled=None`` in `choose_clusters`), the trials are scored by the
label-free criteria of `analysis.choose_k` instead, the seed is the
recipe's and the clustering never halts; on Fashion-MNIST and digits those
criteria chose k no better than chance (docs/results.md, "Choosing k without
labels"). Keras is imported by the steps that build networks, not by
importing this module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from keras_deepcluster.analysis.choose_k import CRITERIA as LABEL_FREE_CRITERIA
from keras_deepcluster.analysis.choose_k import RUN_SAMPLE, check_candidates, label_free_run_scores
from keras_deepcluster.analysis.random_filters import random_filter_qualities
from keras_deepcluster.data.image_data import ImageData
from keras_deepcluster.runs.recipe import Recipe
from keras_deepcluster.runs.run_directory import RunDirectory

# How a trial run is scored with the labelled images (higher is better).
CRITERIA = {
    "probe": "held-out accuracy of a linear probe trained on the other labelled images",
    "knn": "5-fold cross-validated 10-NN accuracy on all labelled images",
    "linear": "5-fold cross-validated logistic-regression accuracy on all labelled images",
    "nmi": "NMI of the trial's last pseudo-labels with the labelled images",
}
# What each trial run keeps of its scores, so that an interrupted selection resumes.
TRIAL_SCORES = "scores_labelled.json"
LABEL_FREE_SCORES = "scores_label_free.json"


@dataclasses.dataclass(frozen=True)
class LabelledImages:
    """The training images whose labels the choices may use, drawn once.

    Attributes:
        rows: Their indices in the training set, ascending.
        held_out: Which of them score the trial probes (the others train them).
        data: The training data with only their labels (the others -1), no test split.
    """

    rows: np.ndarray
    held_out: np.ndarray
    data: ImageData

    @property
    def images(self) -> np.ndarray:
        """The labelled images."""
        return self.data.x_train[self.rows]

    @property
    def labels(self) -> np.ndarray:
        """Their labels."""
        return self.data.y_train[self.rows]


@dataclasses.dataclass(frozen=True)
class SeedChoice:
    """Step 1's answer.

    Attributes:
        seed: The chosen seed.
        nmi: Every candidate seed's NMI (one k-means of its random features).
        why: The choice in words.
    """

    seed: int
    nmi: dict[int, float]
    why: str


@dataclasses.dataclass(frozen=True)
class ClustersChoice:
    """Step 2's answer.

    Attributes:
        clusters: The chosen k.
        scores: Every trial's scores, ``{k: {criterion: score}}``.
        choices: The k each criterion of `CRITERIA` chooses.
        why: The choice in words.
    """

    clusters: int
    scores: dict[int, dict[str, float]]
    choices: dict[str, int]
    why: str


@dataclasses.dataclass(frozen=True)
class HaltChoice:
    """Step 3's answer.

    Attributes:
        halt_after: The epoch to halt the clustering after, or None (never).
        why: The choice in words.
    """

    halt_after: int | None
    why: str


def draw_labelled(data: ImageData, count: int, draw: int, holdout: float) -> LabelledImages:
    """Draws the `count` labelled images (seed `draw`), and the `holdout` fraction of them.

    Args:
        data: The training data, with labels.
        count: How many training images may be used with their labels.
        draw: Seed of the draw of the labelled images and of their held-out part.
        holdout: Fraction of them held out to score the trial probes.

    Raises:
        ValueError: The data has no labels, or fewer training images than `count`.
    """
    if data.y_train is None:
        raise ValueError(f"{data.name} has no labels; `select` needs `labelled` of them.")
    if count > len(data.x_train):
        raise ValueError(
            f"`labelled={count}` is more than the {len(data.x_train)} training images."
        )
    rng = np.random.default_rng(draw)
    rows = np.sort(rng.choice(len(data.x_train), count, replace=False))
    held_out = np.zeros(count, bool)
    held_out[rng.choice(count, round(holdout * count), replace=False)] = True
    partial = np.full(len(data.x_train), -1, np.int64)
    partial[rows] = data.y_train[rows]
    known = dataclasses.replace(data, y_train=partial, x_test=None, y_test=None)
    return LabelledImages(rows, held_out, known)


def choose_seed(recipe: Recipe, seeds: Sequence[int], labelled: LabelledImages) -> SeedChoice:
    """Step 1: the seed whose random filters cluster the labelled images best.

    Args:
        recipe: The settings of the networks and of the k-means.
        seeds: The candidate seeds.
        labelled: The labelled images (`draw_labelled`).
    """
    scores = {
        seed: quality.nmi
        for seed, quality in random_filter_qualities(
            recipe, seeds, labelled.images, labelled.labels
        )
    }
    best = max(scores, key=scores.get)
    why = (
        f"seed {best}: NMI {scores[best]:.4f} of k-means (k={recipe.clusters}) on its random "
        f"features of the {len(labelled.rows)} labelled images, best of {len(seeds)}"
    )
    return SeedChoice(best, scores, why)


def choose_clusters(
    trial: Recipe,
    candidates: Sequence[int],
    criterion: str,
    labelled: LabelledImages | None,
    out: Path,
    *,
    data: ImageData | None = None,
    overwrite: bool = False,
    devices: int = 1,
    on_step: Callable[[str], None] | None = None,
) -> ClustersChoice:
    """Step 2: k, by `criterion`, from a short run of `trial` per candidate k.

    The trials see only the labelled images' labels and are scored with them
    by every criterion of `CRITERIA` (`trial_scores`); without labelled images
    they train on `data` unlabelled and are scored by every criterion of
    `LABEL_FREE_CRITERIA` (`label_free_run_scores`). Each is a run directory
    ``trial-k<k>`` under `out`, kept with its scores, so an interrupted
    selection resumes.

    Args:
        trial: The settings of the trial runs (their k is each candidate's).
        candidates: The candidate k.
        criterion: The criterion that chooses: of `CRITERIA`, or without
            labelled images of `LABEL_FREE_CRITERIA`.
        labelled: The labelled images (`draw_labelled`), or None: none.
        out: The folder of the trial runs.
        data: The training data, for trials without labelled images.
        overwrite: Replace trial runs of other settings in `out`.
        devices: Train data-parallel on this many devices.
        on_step: Called with a line saying what is being done.

    Raises:
        RunDirectoryError: `out` holds a trial run of other settings, without `overwrite`.
        ValueError: a criterion of the other kind, or a k the label-free scores cannot take.
    """
    from keras_deepcluster.runs import pretraining
    from keras_deepcluster.runs.trained_run import Run

    criteria = CRITERIA if labelled is not None else LABEL_FREE_CRITERIA
    if criterion not in criteria:
        kind = "with labelled images" if labelled is not None else "without labelled images"
        raise ValueError(
            f"Criterion {criterion!r} cannot choose k {kind}; use one of {', '.join(criteria)}."
        )
    if labelled is None:
        data = dataclasses.replace(data, y_train=None, x_test=None, y_test=None)
        check_candidates(candidates, min(len(data.x_train), RUN_SAMPLE))
    step = on_step or (lambda line: None)
    scores = {}
    for k in candidates:
        recipe = trial.replace(clusters=k)
        run = RunDirectory(out / f"trial-k{k}")
        run.check_replaceable(recipe.to_toml(), overwrite)
        step(f"trial run k={k}, {trial.epochs} epochs")
        pretraining.train_unless_finished(
            recipe, data if labelled is None else labelled.data, run, devices=devices
        )
        scores_file = TRIAL_SCORES if labelled is not None else LABEL_FREE_SCORES
        kept = run.read_json(scores_file) if (run.path / scores_file).is_file() else {}
        if set(criteria) - set(kept):  # none kept, or kept before a criterion was added
            if labelled is not None:
                step(f"scoring trial k={k} with the labelled images")
                trial_score = trial_scores(run, trial, labelled)
            else:
                step(f"scoring trial k={k} without labels")
                trial_score = label_free_run_scores(Run.open(run.path), data.x_train, trial.seed)
            run.write_json(scores_file, trial_score)
        scores[k] = run.read_json(scores_file)
    choices = {name: max(scores, key=lambda k: scores[k][name]) for name in criteria}
    best = choices[criterion]
    why = (
        f"k={best}: {criteria[criterion]} {scores[best][criterion]:.4f} "
        f"after {trial.epochs} trial epochs, best of k in {list(candidates)}"
    )
    return ClustersChoice(best, scores, choices, why)


def choose_halt(trial: RunDirectory) -> HaltChoice:
    """Step 3: halt after the trial epoch whose labels agreed best with the labelled images.

    Args:
        trial: The chosen trial run (its history's ``nmi_labels``).

    Returns:
        The halt epoch, or None (never) when the agreement still peaked at the
        trial's last epoch, and why.
    """
    nmis = [row["nmi_labels"] for row in trial.read_history()]
    peak = int(np.argmax(nmis))
    if peak + 1 < len(nmis):
        why = (
            f"halt after {peak + 1} epochs: NMI with the labelled images peaked at "
            f"epoch {peak} ({nmis[peak]:.4f}) of the trial"
        )
        return HaltChoice(peak + 1, why)
    why = (
        f"never halt: NMI with the labelled images still peaked at the trial's "
        f"last epoch ({nmis[peak]:.4f})"
    )
    return HaltChoice(None, why)


def trial_scores(run: RunDirectory, recipe: Recipe, labelled: LabelledImages) -> dict[str, float]:
    """Every criterion of `CRITERIA` for one finished trial run of `recipe`.

    Args:
        run: The finished trial run (its model and history).
        recipe: Its settings (views, probe layer, probe epochs, seed).
        labelled: The labelled images (`draw_labelled`).
    """
    import keras

    from keras_deepcluster import evaluation
    from keras_deepcluster.runs.recipe_data import image_views

    backbone = keras.saving.load_model(run.path / RunDirectory.MODEL).backbone
    views = image_views(recipe)
    x, y, held = labelled.images, labelled.labels, labelled.held_out
    probe = evaluation.linear_probe(
        backbone,
        recipe.probe_layer,
        (x[~held], y[~held]),
        (x[held], y[held]),
        views,
        epochs=recipe.probe_epochs,
        flip=recipe.probe_flip,
        seed=recipe.seed,
    )
    scores = {"probe": probe.accuracy, "nmi": run.read_history()[-1]["nmi_labels"]}
    for classifier in ("knn", "linear"):
        scores[classifier] = evaluation.cross_validated_accuracy(
            backbone, recipe.probe_layer, x, y, views, classifier, seed=recipe.seed
        )
    return scores
