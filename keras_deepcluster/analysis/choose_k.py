"""Choosing k (and seed) without labels: label-free scores of finished runs, and the choice.

Each candidate (a number of clusters, a seed, or both) is a finished run;
`label_free_run_scores` scores its final clustering on its training images
with the signals of `label_free`, and `choose` takes the candidate with the
highest score of one criterion of `CRITERIA`.

The scores are biased by k, each its own way, so a criterion's choice across
k is only as good as its correction:

* ``silhouette`` is about 0 for a partition of structureless points at any k,
  but in many dimensions it is highest for few, coarse clusters.
* ``generalization`` (a linear classifier's held-out accuracy on the
  clusters, as TURTLE selects hyper-parameters at a known k) falls as k
  grows: more boundaries to learn, and chance is 1/k. It favours small k.
* ``generalization_kappa`` (Cohen's kappa of the same predictions) removes
  the chance part, not the harder task: it still leans to small k.
* ``seed_agreement_nmi`` (NMI of two k-means seeds): the NMI of unrelated
  partitions rises with k, so its floor differs between candidates.
* ``seed_agreement_ari`` (ARI of the same) is about 0 for unrelated partitions
  at any k; it favours the k that k-means finds again, which few coarse
  clusters often are (stability is no proof of the right k).

The null-corrected criteria subtract the trend instead of hoping it is
absent, as the gap statistic (Tibshirani, Walther and Hastie, 2001) does:
each score is also computed on `REFERENCES` reference sets with the
structure removed (`null_references`: the clustering's points with each
column permuted independently, then L2-normalised again), clustered by
k-means at the same k, and the criterion is the score minus the references'
mean; its standard error (``<criterion>_se``, the references' standard
deviation times sqrt(1 + 1/B)) says how much of a difference between
candidates is noise.

* ``gap``: the gap statistic, mean log k-means objective of the references
  minus the log objective of the clustering (mean squared distance to the
  cluster means).
* ``silhouette_gap``: the silhouette minus the references' silhouette.

Measured (`benchmarks/k_without_labels.py`, docs/results.md "Choosing k
without labels"): on short runs on Fashion-MNIST, MNIST and digits, none chose
k as well as the largest candidate; most chose the smallest, with a higher
regret than a random k. The null-corrected ones did not change that: ``gap``
beat a random k on digits only. Each run's features were trained to form its
own k clusters, a trend that no reference without structure removes. At one
k, ``generalization_kappa`` chose the seed better than random on all three.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Iterator, Mapping

import numpy as np

# Label-free criteria (higher is better) and what each favours.
CRITERIA = {
    "silhouette": "mean cosine silhouette of the final clustering; favours few, coarse clusters",
    "generalization": "held-out accuracy of a linear classifier predicting the clusters; "
    "falls as k grows",
    "generalization_kappa": "the same classifier's Cohen's kappa (chance-corrected); "
    "still leans to small k",
    "seed_agreement_nmi": "NMI of two k-means seeds on the run's features; its chance level "
    "rises with k",
    "seed_agreement_ari": "ARI of two k-means seeds (chance-corrected); favours the stablest k",
    "gap": "gap statistic: log k-means objective of column-permuted references at the same k "
    "minus the clustering's",
    "silhouette_gap": "silhouette minus that of k-means on column-permuted references at the "
    "same k",
}
# The criteria corrected against null references; each also has a ``<name>_se`` score.
NULL_CORRECTED = ("gap", "silhouette_gap")
# Reference sets per null-corrected score (the gap statistic's B).
REFERENCES = 10

# Training images a run is scored on, a seeded sample of them (embedding is the slow part).
RUN_SAMPLE = 10_000


def check_candidates(num_clusters: Iterable[int], num_points: int) -> None:
    """Refuses numbers of clusters the scores cannot be computed for on `num_points` points.

    Each k must be at least 2 and at most half the points: the
    generalization score trains on one half and tests on the other.

    Raises:
        ValueError: naming the candidates out of range.
    """
    wrong = [k for k in num_clusters if not 2 <= k <= num_points // 2]
    if wrong:
        raise ValueError(
            f"k = {', '.join(map(str, wrong))} cannot be scored on {num_points} images: "
            f"each k must be between 2 and half the images ({num_points // 2})."
        )


def label_free_k_scores(
    points: np.ndarray, labels: np.ndarray, num_clusters: int, seed: int = 0
) -> dict[str, float]:
    """Every criterion of `CRITERIA` for a clustering, computed without labels.

    Args:
        points: float (N, d) in the clustering's space (whitened if the run
            whitens, L2-normalised), as `ClusterModel.transform` gives.
        labels: int (N,) cluster ids in ``0..num_clusters-1``.
        num_clusters: The clustering's k (empty clusters included).
        seed: Seed of the samples, the classifier's split and the k-means seeds.

    Returns:
        ``{criterion: score}``: ``silhouette`` in [-1, 1], ``generalization``
        in [0, 1], ``generalization_kappa`` in [-1, 1], ``seed_agreement_nmi``
        in [0, 1], ``seed_agreement_ari`` in [-0.5, 1], ``silhouette_gap`` in
        [-2, 2], ``gap`` any real (0: no more structure than the references);
        NaN where the clustering has a single cluster (silhouette,
        generalization, gap); and the standard error of each of
        `NULL_CORRECTED` as ``<criterion>_se``.

    Raises:
        ValueError: k below 2 or above half the points.
    """
    from keras_deepcluster.evaluation import label_free  # k-means: Keras; CRITERIA need none

    check_candidates([num_clusters], len(points))
    return {
        "silhouette": label_free.silhouette(points, labels, seed),
        "generalization": label_free.cluster_generalization(points, labels, seed),
        "generalization_kappa": label_free.cluster_generalization(
            points, labels, seed, chance_corrected=True
        ),
        "seed_agreement_nmi": label_free.seed_agreement(points, num_clusters, seed, "nmi"),
        "seed_agreement_ari": label_free.seed_agreement(points, num_clusters, seed, "ari"),
        **null_corrected_scores(points, labels, num_clusters, seed),
    }


def null_references(points: np.ndarray, count: int, seed: int = 0) -> Iterator[np.ndarray]:
    """`count` structureless twins of `points`, for the null-corrected criteria.

    Each column is permuted independently, which keeps every coordinate's
    distribution (the whitening's unit variance, its tails) and removes the
    dependence between coordinates that clusters are; the rows are then
    L2-normalised again, back onto the sphere k-means clustered on. A
    coordinate with several modes keeps them, so the reference keeps some
    structure and the correction errs towards smaller scores.

    Args:
        points: float (N, d) in the clustering's space.
        count: How many references.
        seed: Seed of the permutations.
    """
    from keras_deepcluster.method import clustering

    rng = np.random.default_rng(seed)
    for _ in range(count):
        yield clustering.l2_normalize(rng.permuted(np.asarray(points, np.float32), axis=0))


def null_corrected_scores(
    points: np.ndarray,
    labels: np.ndarray,
    num_clusters: int,
    seed: int = 0,
    references: int = REFERENCES,
) -> dict[str, float]:
    """Each criterion of `NULL_CORRECTED` and its standard error (``<criterion>_se``).

    The clustering's score minus the mean of the same score of k-means at
    `num_clusters` on each of `references` `null_references`; the standard
    error is their standard deviation times sqrt(1 + 1/references), as the gap
    statistic's.

    Args:
        points: float (N, d) in the clustering's space.
        labels: int (N,) cluster ids of the clustering.
        num_clusters: The k of the references' k-means.
        seed: Seed of the references, their k-means and the silhouette's sample.
        references: Reference sets (the gap statistic's B), at least 2.

    Raises:
        ValueError: fewer than 2 references.
    """
    from keras_deepcluster.evaluation import label_free
    from keras_deepcluster.method import clustering

    if references < 2:
        raise ValueError(f"{references} null references give no standard error; use at least 2.")
    scores = {
        "gap": -_log_objective(points, labels) if len(np.unique(labels)) > 1 else math.nan,
        "silhouette_gap": label_free.silhouette(points, labels, seed),
    }
    null = {name: [] for name in scores}
    for index, reference in enumerate(null_references(points, references, seed)):
        reference_labels, _ = clustering.kmeans(reference, num_clusters, seed=seed + index)
        null["gap"].append(-_log_objective(reference, reference_labels))
        null["silhouette_gap"].append(label_free.silhouette(reference, reference_labels, seed))
    result = {}
    for name, score in scores.items():
        values = np.asarray(null[name])
        result[name] = float(score - values.mean())
        result[f"{name}_se"] = float(values.std() * math.sqrt(1 + 1 / references))
    return result


def _log_objective(points: np.ndarray, labels: np.ndarray) -> float:
    """Log of the k-means objective of a partition: mean squared distance to its cluster means."""
    points = np.asarray(points, np.float64)
    _, labels = np.unique(labels, return_inverse=True)
    sums = np.zeros((labels.max() + 1, points.shape[1]))
    np.add.at(sums, labels, points)
    means = sums / np.bincount(labels)[:, None]
    objective = np.mean(np.sum((points - means[labels]) ** 2, axis=1))
    return math.log(max(objective, np.finfo(np.float64).tiny))  # duplicate points: objective 0


def label_free_run_scores(
    run, images: np.ndarray | None = None, seed: int = 0, sample: int | None = RUN_SAMPLE
) -> dict[str, float]:
    """The label-free scores of a finished run's final clustering (`label_free_k_scores`).

    `evaluation.choose_k.label_free_k_scores` of the images' features
    (``layer="output"``) in the clustering's space, with their nearest centroids.

    Args:
        run: The finished run (`kdc.Run`).
        images: The images to score it on (default: the run's training images,
            `data`).
        seed: Seed of the image sample and of the scores.
        sample: At most this many images, a seeded sample; None: all.

    Raises:
        ValueError: the run's k is above half the scored images.
    """
    images = run.data().x_train if images is None else images
    check_candidates([run.num_clusters], min(len(images), sample or len(images)))
    if sample is not None and len(images) > sample:
        rows = np.sort(np.random.default_rng(seed).choice(len(images), sample, replace=False))
        images = images[rows]
    features = run.embed(images, layer="output")  # what the run clustered
    labels, _ = run.cluster_model.assign(features)
    points = run.cluster_model.transform(features)
    return label_free_k_scores(points, labels, run.num_clusters, seed)


def choose(scores_by_candidate: Mapping[Hashable, Mapping[str, float]], criterion: str) -> Hashable:
    """The candidate whose `criterion` score is highest (the first of equals).

    Args:
        scores_by_candidate: ``{candidate: {criterion: score}}``, e.g. k or
            ``(k, seed)`` to the scores `label_free_run_scores` gives.
        criterion: One of `CRITERIA`.

    Raises:
        ValueError: an unknown criterion, no candidates, or none with a
            finite score for it.
    """
    if criterion not in CRITERIA:
        raise ValueError(
            f"Unknown label-free criterion {criterion!r}; use one of {', '.join(CRITERIA)}."
        )
    finite = {
        candidate: scores[criterion]
        for candidate, scores in scores_by_candidate.items()
        if math.isfinite(scores.get(criterion, math.nan))
    }
    if not finite:
        raise ValueError(f"No candidate has a finite {criterion!r} score to choose by.")
    return max(finite, key=finite.get)
