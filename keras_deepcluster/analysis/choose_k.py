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

Measured (`benchmarks/k_without_labels.py`, docs/results.md "Choosing k
without labels"): on short runs on Fashion-MNIST and digits each fell as k
grew, chose mostly the smallest candidate, and had a higher regret than a
random k; the largest candidate k, or NMI or AMI on 100 labelled images,
chose well. At one k, ``generalization`` chose the seed better than random.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping

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
}

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
        in [0, 1], ``seed_agreement_ari`` in [-0.5, 1]; NaN where the
        clustering has a single cluster (silhouette, generalization).

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
    }


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
