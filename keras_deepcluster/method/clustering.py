"""Feature preprocessing and k-means: the clustering half of a DeepCluster epoch.

A clustering checks that the features are finite, PCA-whitens them (optional),
L2-normalises them, runs k-means and refills the clusters k-means left empty, so that
the labels cover ``0..k-1``. Each step runs where the features are
(`platform.feature_routes`): a NumPy array on the host (PCA by faiss or scikit-learn,
k-means by faiss, scikit-learn or `keras.ops`), a tensor on the device
(`FeatureExtractor(..., on_device=True)`, or each process's shard with several
processes) in `keras.ops`, where only the labels and small matrices cross to the host.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from keras_deepcluster.platform import feature_routes
from keras_deepcluster.platform.feature_routes import Whitening  # noqa: F401 - named here too
from keras_deepcluster.settings import (  # noqa: F401 - the choices, named here too
    KMEANS_BACKEND,
    KMEANS_BACKENDS,
    KMEANS_ITERATIONS,
    PCA_BACKEND,
    PCA_BACKENDS,
    renamed_keywords,
)

# Independent random streams derived from the run's seed, one per use.
KMEANS_STREAM, HEAD_STREAM = 1, 2


def derive_seed(seed: int, epoch: int, stream: int) -> int:
    """A 31-bit seed that depends on (seed, epoch, stream) only."""
    return int(np.random.default_rng([seed, epoch, stream]).integers(2**31 - 1))


def kmeans_seed(seed: int, epoch: int) -> int:
    """The k-means seed of `epoch` in a run seeded with `seed`."""
    return derive_seed(seed, epoch, KMEANS_STREAM)


@dataclasses.dataclass
class Clustering:
    """The outcome of clustering one epoch's features.

    Attributes:
        labels: int64 array (N,), values in ``0..k-1``, every cluster non-empty.
        objective: Mean squared distance of a point to its centroid.
        empty_clusters: Clusters k-means left empty that were refilled here.
        seconds_pca: Wall time of PCA-whitening (0 when off).
        seconds_kmeans: Wall time of k-means, L2 normalisation included.
        whitening: The PCA-whitening applied (None without PCA).
        points: The whitened, L2-normalised features k-means clustered, when asked for
            (``keep_points``; `ClusterModel` computes its centroids from them), else None.
    """

    labels: np.ndarray
    objective: float
    empty_clusters: int
    seconds_pca: float
    seconds_kmeans: float
    whitening: Whitening | None = None
    points: np.ndarray | None = None


def pca_whiten(features, dim: int, backend: str = PCA_BACKEND, seed: int = 0):
    """Projects `features` on their top `dim` principal axes with unit variance.

    The whitened features of `fit_whitening` (see there).
    """
    return fit_whitening(features, dim, backend, seed)[0]


def fit_whitening(features, dim: int, backend: str = PCA_BACKEND, seed: int = 0):
    """Fits the PCA-whitening of `features` and applies it.

    Args:
        features: float32 array (N, d), or a tensor on the device (then
            whitened there as faiss does, and `backend` plays no part).
        dim: Output dimension, ``1 <= dim <= d``.
        backend: ``"faiss"`` (``PCAMatrix(eigen_power=-0.5)``, as the original
            DeepCluster) or ``"sklearn"`` (``PCA(whiten=True)``, as the Deep
            Dive code). The two differ only in a constant scale, which the L2
            normalisation that follows removes.
        seed: Random state for scikit-learn's solver.

    Returns:
        ``(whitened, whitening)``: float32 (N, dim) (a tensor for a tensor) and the
        `Whitening` that made it, to apply to other features.
    """
    route, features = feature_routes.place(features)
    return route.fit_whitening(features, dim, backend, seed)


def l2_normalize(features):
    """Divides each row by its L2 norm (in float64 on the host, float32 on the device).

    A row of zeros (every unit of the feature layer dead for that image; the
    authors' code turns it into NaN and k-means crashes) stays zero.
    """
    route, features = feature_routes.place(features)
    return route.l2_normalize(features)


def kmeans(
    features,
    k: int,
    seed: int,
    iterations: int = KMEANS_ITERATIONS,
    backend: str = KMEANS_BACKEND,
) -> tuple[np.ndarray, float]:
    """k-means on every point.

    Args:
        features: float32 array (N, d), N >= k, or a tensor on the device.
        k: Number of clusters.
        seed: Seed of the initial centroids.
        iterations: Lloyd iterations.
        backend: ``"faiss"``, ``"sklearn"``, ``"keras"`` (`keras.ops`, on the
            accelerator if there is one) or ``"auto"``: keras when Keras sees a
            GPU or the features are a tensor, else faiss if importable, else
            scikit-learn.

    Returns:
        ``(labels, objective)``: int64 labels (N,) in 0..k-1 (possibly with
        empty clusters) and the mean squared distance to the assigned centroid.
    """
    route, features = feature_routes.place(features)
    return route.kmeans(features, k, seed, iterations, backend)


def fill_empty_clusters(labels: np.ndarray, features, k: int) -> tuple[np.ndarray, int]:
    """Gives every empty cluster half of the currently largest cluster.

    The largest cluster is split at the median of its projection on its first
    principal axis (in index order when all its points coincide), which is
    what faiss's own split approximates. Only the rows of the clusters split
    are read from `features` (a NumPy array, or a tensor on the device: see
    `fit_whitening`). Returns the repaired labels and the number of clusters
    that were empty.
    """
    route, features = feature_routes.place(features)
    labels = labels.copy()
    counts = np.bincount(labels, minlength=k)
    empty = np.flatnonzero(counts == 0)
    if not len(empty):
        return labels, 0
    members = dict(zip(np.unique(labels).tolist(), cluster_members(labels)))
    for cluster in empty:
        largest = int(np.argmax(counts))
        points = route.rows(features, members[largest]).astype(np.float64)
        points -= points.mean(axis=0)
        axis = _principal_axis(points)
        order = np.argsort(points @ axis, kind="stable")
        half = len(order) // 2
        moved = members[largest][np.sort(order[half:])]
        members[largest] = members[largest][np.sort(order[:half])]
        members[int(cluster)] = moved
        labels[moved] = cluster
        counts[largest] -= len(moved)
        counts[cluster] = len(moved)
    return route.agree(labels), len(empty)


def cluster_members(labels: np.ndarray) -> list[np.ndarray]:
    """The indices of each non-empty cluster, ascending, by cluster id (one sort, O(N log N))."""
    order = np.argsort(labels, kind="stable")
    _, starts = np.unique(labels[order], return_index=True)
    return np.split(order, starts[1:])


def _principal_axis(points: np.ndarray, iterations: int = 20) -> np.ndarray:
    axis = np.ones(points.shape[1]) / np.sqrt(points.shape[1])
    for _ in range(iterations):
        nxt = points.T @ (points @ axis)
        norm = np.linalg.norm(nxt)
        if norm == 0:
            return axis
        axis = nxt / norm
    return axis


@renamed_keywords(k="num_clusters", iterations="kmeans_iterations")
def cluster_features(
    features,
    num_clusters: int,
    seed: int,
    pca_dim: int | None = None,
    pca_backend: str = PCA_BACKEND,
    kmeans_backend: str = KMEANS_BACKEND,
    kmeans_iterations: int = KMEANS_ITERATIONS,
    keep_points: bool = False,
) -> Clustering:
    """PCA-whiten (optional), L2-normalise and k-means `features`.

    `features` is a float32 (N, d) NumPy array or a tensor on the device;
    a tensor stays there (see the module), and with several processes it is
    this process's shard (the labels are every shard's). Every clustering of a run goes
    through here: each epoch's, and the final one `ClusterModel.fit` keeps
    (with `keep_points`, which returns the clustered points too).

    Examples:
        >>> x = np.random.default_rng(0).normal(size=(100, 8)).astype("float32")
        >>> result = cluster_features(x, num_clusters=4, seed=0)
        >>> sorted(np.unique(result.labels))
        [0, 1, 2, 3]
    """
    route, features = feature_routes.place(features)
    bad = route.count_nonfinite(features)
    if bad:
        raise FloatingPointError(
            f"{bad} of {route.count(features)} feature rows contain NaN or inf; the network "
            "has diverged (lower the learning rate)."
        )
    start = time.perf_counter()
    whitening = None
    if pca_dim is not None:
        features, whitening = route.fit_whitening(features, pca_dim, pca_backend, seed)
    seconds_pca = time.perf_counter() - start
    start = time.perf_counter()
    features = route.l2_normalize(features)
    labels, objective = route.kmeans(
        features, num_clusters, seed, kmeans_iterations, kmeans_backend
    )
    labels, empty = fill_empty_clusters(labels, features, num_clusters)
    seconds_kmeans = time.perf_counter() - start
    points = route.to_host(features) if keep_points else None
    return Clustering(labels, objective, empty, seconds_pca, seconds_kmeans, whitening, points)
