"""Label-free signals of a clustering's quality, to test against the labelled scores.

Without labels a user cannot compute NMI; these are candidates that need
none. Each takes the features in the clustering's space (PCA-whitened if the
run whitens, L2-normalised) and the cluster ids. `benchmarks/small_data.py`
measures how each ranks runs against their NMI with the true classes; only
a signal that tracks it is shown to users (docs/results.md, "Label-free").

* `silhouette`: how much closer each point is to its own cluster than to the
  next (scikit-learn's silhouette, cosine, on a seeded sample).
* `seed_agreement`: NMI (or ARI) between k-means runs from two other seeds on
  the same features: a clustering that the data determines is found again.
* `cluster_generalization`: held-out accuracy (or Cohen's kappa) of a linear
  classifier that predicts the cluster ids from the features (TURTLE's
  "generalization" criterion: clusters a simple classifier can learn from half
  the points and predict on the other half are structure, not noise).

`analysis.choose_k` compares these across numbers of clusters, where the chance-corrected
variants (ARI, kappa) matter.
"""

from __future__ import annotations

import numpy as np

from keras_deepcluster.evaluation.cluster_metrics import ari, nmi
from keras_deepcluster.method import clustering

# Points sampled for the silhouette (quadratic in the sample).
SILHOUETTE_SAMPLE = 2000


def silhouette(features: np.ndarray, labels: np.ndarray, seed: int = 0) -> float:
    """Mean cosine silhouette of a seeded sample of at most `SILHOUETTE_SAMPLE` points."""
    from sklearn.metrics import silhouette_score

    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        return float("nan")
    size = min(SILHOUETTE_SAMPLE, len(labels))
    return float(
        silhouette_score(features, labels, metric="cosine", sample_size=size, random_state=seed)
    )


# How `seed_agreement` compares its two clusterings.
AGREEMENTS = {"nmi": nmi, "ari": ari}


def seed_agreement(
    features: np.ndarray, num_clusters: int, seed: int = 0, metric: str = "nmi"
) -> float:
    """Agreement of two k-means clusterings of `features` from seeds derived from `seed`.

    `metric` is ``"nmi"`` or ``"ari"``. NMI of two unrelated partitions
    grows with their number of clusters; ARI is about 0 for them at any k,
    the one to compare across k.
    """
    if metric not in AGREEMENTS:
        raise ValueError(f"Unknown agreement {metric!r}; use one of {tuple(AGREEMENTS)}.")
    first, _ = clustering.kmeans(features, num_clusters, seed=2 * seed + 1)
    second, _ = clustering.kmeans(features, num_clusters, seed=2 * seed + 2)
    return AGREEMENTS[metric](first, second)


def cluster_generalization(
    features: np.ndarray, labels: np.ndarray, seed: int = 0, chance_corrected: bool = False
) -> float:
    """Accuracy on a held-out half of a logistic regression fitted to predict `labels`.

    With `chance_corrected`, Cohen's kappa of its predictions instead: the
    accuracy above what guessing with the clusters' sizes gets (0 for
    chance, 1 for all right), which 1/k no longer sets a floor to.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import cohen_kappa_score

    labels = np.asarray(labels)
    order = np.random.default_rng(seed).permutation(len(labels))
    train, test = order[: len(order) // 2], order[len(order) // 2 :]
    if len(np.unique(labels[train])) < 2:
        return float("nan")
    classifier = LogisticRegression(max_iter=200).fit(features[train], labels[train])
    if chance_corrected:
        return float(cohen_kappa_score(labels[test], classifier.predict(features[test])))
    return float(classifier.score(features[test], labels[test]))


def label_free_scores(features: np.ndarray, labels: np.ndarray, seed: int = 0) -> dict:
    """All three signals of a clustering (`labels`) of normalised `features`."""
    num_clusters = int(np.max(labels)) + 1
    return {
        "silhouette": silhouette(features, labels, seed),
        "seed_agreement": seed_agreement(features, num_clusters, seed),
        "cluster_generalization": cluster_generalization(features, labels, seed),
    }
