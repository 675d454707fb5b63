"""Random-filter quality: how well an untrained network's features cluster."""

from __future__ import annotations

import dataclasses
import time

import keras
import numpy as np

from keras_deepcluster.evaluation.cluster_metrics import label_entropy, label_noise, nmi
from keras_deepcluster.method import clustering
from keras_deepcluster.method.features import extract_features
from keras_deepcluster.method.views import ImageViews


@dataclasses.dataclass
class FilterQuality:
    """Agreement of one k-means clustering of a network's features with the labels.

    Attributes:
        nmi: NMI(clusters, labels).
        label_entropy: Mean per-cluster entropy of the labels (nats).
        label_noise: Mean per-cluster 1 - majority-label fraction.
        seconds: Feature extraction + clustering time.
    """

    nmi: float
    label_entropy: float
    label_noise: float
    seconds: float


def filter_quality(
    backbone: keras.Model,
    images: np.ndarray,
    labels: np.ndarray,
    views: ImageViews,
    num_clusters: int,
    seed: int,
    pca_dim: int | None = None,
    kmeans_backend: str = "auto",
    feature_batch_size: int = 256,
) -> FilterQuality:
    """Clusters `backbone`'s features of `images` once and scores them against `labels`.

    The Deep Dive paper's measure of the quality of randomly initialised
    filters (its ``space`` experiment). The k-means seed is the one the first
    epoch of a `Reclustering` with the same `seed` uses, so for an untrained
    backbone drawn with `seed` the NMI equals that run's epoch-0 ``nmi_labels``.

    Examples:
        >>> quality = filter_quality(backbones.lenet(seed=3), x, y,
        ...     ImageViews.for_dataset("fashion_mnist"), num_clusters=5, seed=3)
        >>> quality.nmi
    """
    labels = np.asarray(labels)
    if labels.shape != (len(images),):
        raise ValueError(
            f"filter_quality needs one label per image; got shape {labels.shape} for "
            f"{len(images)} images."
        )
    start = time.perf_counter()
    features = extract_features(backbone, images, views, feature_batch_size)
    result = clustering.cluster_features(
        features,
        num_clusters,
        seed=clustering.kmeans_seed(seed, 0),
        pca_dim=pca_dim,
        kmeans_backend=kmeans_backend,
    )
    seconds = time.perf_counter() - start
    return FilterQuality(
        nmi(result.labels, labels),
        label_entropy(result.labels, labels),
        label_noise(result.labels, labels),
        seconds,
    )
