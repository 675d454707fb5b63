"""How well a clustering agrees with another clustering or with the true labels."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import (
    adjusted_mutual_info_score,
    adjusted_rand_score,
    normalized_mutual_info_score,
)


def nmi(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised mutual information (arithmetic mean), as scikit-learn computes it."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"NMI needs two labelings of equal length; got {a.shape} and {b.shape}.")
    return float(normalized_mutual_info_score(a, b))


def ari(a: np.ndarray, b: np.ndarray) -> float:
    """Adjusted Rand index, as scikit-learn computes it (1: identical, ~0: chance)."""
    a, b = _pair(a, b, "ARI")
    return float(adjusted_rand_score(a, b))


def ami(a: np.ndarray, b: np.ndarray) -> float:
    """Adjusted mutual information (arithmetic mean), as scikit-learn computes it."""
    a, b = _pair(a, b, "AMI")
    return float(adjusted_mutual_info_score(a, b))


def hungarian_accuracy(clusters: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy after the best one-to-one map of clusters to labels (the field's ACC).

    The map maximises the images it gets right (Hungarian algorithm,
    `scipy.optimize.linear_sum_assignment`), as SCAN and IIC report it. With
    more clusters than classes the clusters left unmatched count as wrong;
    `many_to_one_accuracy` is the measure for that case.

    Examples:
        >>> hungarian_accuracy([0, 0, 1, 1, 2, 2], [1, 1, 0, 0, 0, 2])
        0.8333333333333334
    """
    table = _contingency(*_pair(clusters, labels, "ACC"))
    rows, columns = linear_sum_assignment(table, maximize=True)
    return float(table[rows, columns].sum() / table.sum())


def many_to_one_accuracy(clusters: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy when every cluster predicts its majority label (several clusters may share one)."""
    table = _contingency(*_pair(clusters, labels, "ACC"))
    return float(table.max(axis=1).sum() / table.sum())


def matched_confusion(clusters: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cluster x label counts with clusters reordered by their Hungarian match.

    Returns:
        (table, cluster_ids): ``table[i, j]`` counts images of cluster
        ``cluster_ids[i]`` with label j (labels in sorted order); the
        matched clusters come first, in the order of the labels they match,
        so a good clustering puts its counts on the diagonal.
    """
    clusters, labels = _pair(clusters, labels, "the confusion matrix")
    ids = np.unique(clusters)
    table = _contingency(clusters, labels)
    rows, columns = linear_sum_assignment(table, maximize=True)
    matched = rows[np.argsort(columns)]
    order = np.concatenate([matched, np.setdiff1d(np.arange(len(ids)), matched)])
    return table[order], ids[order]


def cluster_scores(clusters: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """NMI, AMI, ARI, ACC (Hungarian) and many-to-one ACC of a clustering against labels."""
    return {
        "nmi": nmi(clusters, labels),
        "ami": ami(clusters, labels),
        "ari": ari(clusters, labels),
        "acc": hungarian_accuracy(clusters, labels),
        "acc_many_to_one": many_to_one_accuracy(clusters, labels),
    }


def _pair(a, b, what: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(
            f"{what} needs two non-empty labelings of equal length; got shapes {a.shape} and "
            f"{b.shape}."
        )
    return a, b


def _contingency(clusters: np.ndarray, labels: np.ndarray) -> np.ndarray:
    _, c = np.unique(clusters, return_inverse=True)
    _, y = np.unique(labels, return_inverse=True)
    table = np.zeros((c.max() + 1, y.max() + 1), np.int64)
    np.add.at(table, (c, y), 1)
    return table


def label_entropy(clusters: np.ndarray, labels: np.ndarray) -> float:
    """Mean over non-empty clusters of the entropy (nats) of the true labels inside."""
    table = _contingency(clusters, labels).astype(np.float64)
    p = table / table.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.nansum(np.where(p > 0, p * np.log(p), 0.0), axis=1)
    return float(entropy.mean())


def label_noise(clusters: np.ndarray, labels: np.ndarray) -> float:
    """Mean over non-empty clusters of 1 - (majority label count / cluster size)."""
    table = _contingency(clusters, labels)
    return float(np.mean(1.0 - table.max(axis=1) / table.sum(axis=1)))
