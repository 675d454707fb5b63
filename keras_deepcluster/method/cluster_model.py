"""`ClusterModel`: a clustering kept to assign new images to it.

The re-clustering of an epoch keeps only the labels. What a finished run
needs to place new images in its clusters is kept here: the PCA-whitening
its clustering applied (mean and projection), and the centroids in the
whitened, L2-normalised space, each the mean of its cluster's members. A new
image gets the nearest centroid and its distance. `fit` clusters through
`clustering.cluster_features`, as every epoch does; `from_labels` and new
features take the same steps on the host, where the centroids are
(`feature_routes.HOST`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from keras_deepcluster.method import clustering
from keras_deepcluster.platform.feature_routes import HOST, Whitening
from keras_deepcluster.settings import (
    KMEANS_BACKEND,
    KMEANS_ITERATIONS,
    PCA_BACKEND,
    renamed_keywords,
)

# Rows per block of the assignment's distance computation (block x k floats).
ASSIGN_BLOCK = 4096


@dataclasses.dataclass(frozen=True)
class ClusterModel:
    """PCA-whitening (optional), L2 normalisation and centroids.

    Attributes:
        centroids: float32 (k, d') in the normalised space.
        mean: float32 (d,) feature mean, or None without PCA.
        projection: float32 (d, d') whitening projection, or None without PCA.
    """

    centroids: np.ndarray
    mean: np.ndarray | None = None
    projection: np.ndarray | None = None

    @classmethod
    @renamed_keywords(iterations="kmeans_iterations")
    def fit(
        cls,
        features: np.ndarray,
        num_clusters: int,
        seed: int,
        pca_dim: int | None = None,
        kmeans_backend: str = KMEANS_BACKEND,
        kmeans_iterations: int = KMEANS_ITERATIONS,
        pca_backend: str = PCA_BACKEND,
    ) -> tuple[ClusterModel, np.ndarray]:
        """Clusters `features` (N, d) as `Reclustering` does; returns the model and the labels."""
        result = clustering.cluster_features(
            np.asarray(features, np.float32),
            num_clusters,
            seed,
            pca_dim,
            pca_backend,
            kmeans_backend,
            kmeans_iterations,
            keep_points=True,
        )
        centroids = _centroids(result.points, result.labels, num_clusters)
        return cls._of(centroids, result.whitening), result.labels

    @classmethod
    def _of(cls, centroids: np.ndarray, whitening: Whitening | None) -> ClusterModel:
        if whitening is None:
            return cls(centroids)
        return cls(centroids, whitening.mean, whitening.projection)

    @classmethod
    def from_labels(
        cls,
        features: np.ndarray,
        labels: np.ndarray,
        num_clusters: int,
        pca_dim: int | None = None,
        pca_backend: str = PCA_BACKEND,
    ) -> ClusterModel:
        """The model of a clustering already made: `labels` (N,) of `features` (N, d).

        What a run keeps when an earlier epoch's clustering was its best:
        the centroids of that epoch's pseudo-labels in its features' space.
        """
        features, whitening = np.asarray(features, np.float32), None
        if pca_dim is not None:
            features, whitening = HOST.fit_whitening(features, pca_dim, pca_backend)
        normalised = HOST.l2_normalize(features)
        labels = np.asarray(labels, np.int64)
        if labels.shape != (len(normalised),) or labels.min() < 0 or labels.max() >= num_clusters:
            raise ValueError(
                f"labels must hold one cluster id in [0, {num_clusters}) per feature row "
                f"({len(normalised)}); got shape {labels.shape}."
            )
        return cls._of(_centroids(normalised, labels, num_clusters), whitening)

    @property
    def num_clusters(self) -> int:
        return len(self.centroids)

    @property
    def whitening(self) -> Whitening | None:
        """The PCA-whitening of the clustering, or None without PCA."""
        return None if self.projection is None else Whitening(self.mean, self.projection)

    def transform(self, features: np.ndarray) -> np.ndarray:
        """Features (N, d) into the clustering's space: whitened (if PCA), L2-normalised."""
        features = np.asarray(features, np.float32)
        expected = len(self.mean) if self.projection is not None else self.centroids.shape[1]
        if features.ndim != 2 or features.shape[1] != expected:
            raise ValueError(
                f"The features have shape {features.shape}; this clustering was fitted to "
                f"features of {expected} dimensions."
            )
        if self.projection is not None:
            features = HOST.whiten(features, self.whitening)
        return HOST.l2_normalize(features)

    def assign(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The nearest centroid of each row of `features` (N, d), and the distance to it.

        Returns:
            ``(labels, distances)``: int64 (N,) and float32 (N,) Euclidean
            distances in the clustering's space.
        """
        points = self.transform(features)
        squared_norms = np.sum(self.centroids.astype(np.float64) ** 2, axis=1)
        labels = np.empty(len(points), np.int64)
        distances = np.empty(len(points), np.float32)
        for start in range(0, len(points), ASSIGN_BLOCK):
            block = points[start : start + ASSIGN_BLOCK].astype(np.float64)
            squared = (
                np.sum(block**2, axis=1, keepdims=True) - 2 * block @ self.centroids.T
            ) + squared_norms
            nearest = np.argmin(squared, axis=1)
            labels[start : start + len(block)] = nearest
            best = squared[np.arange(len(block)), nearest]
            distances[start : start + len(block)] = np.sqrt(np.maximum(best, 0))
        return labels, distances

    def save(self, file) -> None:
        """Writes the model as ``.npz`` to a path or an open binary file (see `load`)."""
        arrays = {"centroids": self.centroids}
        if self.projection is not None:
            arrays |= {"mean": self.mean, "projection": self.projection}
        np.savez(file, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> ClusterModel:
        with np.load(path) as npz:
            return cls(
                npz["centroids"],
                npz["mean"] if "mean" in npz else None,
                npz["projection"] if "projection" in npz else None,
            )


def _centroids(normalised: np.ndarray, labels: np.ndarray, num_clusters: int) -> np.ndarray:
    """Each cluster's mean row (float32 (k, d')); an empty cluster's centroid is zero."""
    sums = np.zeros((num_clusters, normalised.shape[1]), np.float64)
    np.add.at(sums, labels, normalised)
    counts = np.bincount(labels, minlength=num_clusters)[:, None]
    return (sums / np.maximum(counts, 1)).astype(np.float32)
