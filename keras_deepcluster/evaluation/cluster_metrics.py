"""How well a clustering agrees with another clustering or with the true labels."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import normalized_mutual_info_score


def nmi(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised mutual information (arithmetic mean), as scikit-learn computes it."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"NMI needs two labelings of equal length; got {a.shape} and {b.shape}.")
    return float(normalized_mutual_info_score(a, b))


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
