"""Feature preprocessing and k-means: the clustering half of a DeepCluster epoch.

k-means runs in faiss-cpu when it can be imported, in `keras.ops` on the
accelerator when Keras sees a GPU (`accelerated_kmeans`), and in scikit-learn
when faiss is missing or on request. Every path returns labels in ``0..k-1``
with every cluster non-empty. Features may be a NumPy array or a tensor on
the device (`FeatureExtractor(..., on_device=True)`): a tensor is
PCA-whitened, normalised and clustered there, with `keras.ops`, and only the
labels (and PCA's d x d covariance) cross to the host.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
from keras import ops

from keras_deepcluster.platform import processes
from keras_deepcluster.platform.accelerated_kmeans import keras_kmeans
from keras_deepcluster.platform.devices import accelerator_available
from keras_deepcluster.settings import (
    KMEANS_BACKEND,
    KMEANS_BACKENDS,
    KMEANS_ITERATIONS,
    PCA_BACKEND,
    PCA_BACKENDS,
)

try:  # faiss is a hard dependency, but a broken install should not stop us.
    import faiss
except ImportError:  # pragma: no cover - exercised only without faiss
    faiss = None

# Added to PCA eigenvalues so that directions with zero variance (dead ReLU
# units) are not scaled by 0^-0.5 = inf.
PCA_EPSILON = 1e-5

# Independent random streams derived from the run's seed, one per use.
KMEANS_STREAM, HEAD_STREAM = 1, 2


def derive_seed(seed: int, epoch: int, stream: int) -> int:
    """A 31-bit seed that depends on (seed, epoch, stream) only."""
    return int(np.random.default_rng([seed, epoch, stream]).integers(2**31 - 1))


def kmeans_seed(seed: int, epoch: int) -> int:
    """The k-means seed of `epoch` in a run seeded with `seed`."""
    return derive_seed(seed, epoch, KMEANS_STREAM)


@dataclasses.dataclass
class Whitening:
    """A fitted PCA-whitening: ``(features - mean) @ projection``.

    Attributes:
        mean: float32 (d,) feature mean.
        projection: float32 (d, d') projection on the top principal axes, scaled to unit
            variance (axes of zero variance project to zero).
    """

    mean: np.ndarray
    projection: np.ndarray


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


def pca_whiten(
    features: np.ndarray, dim: int, backend: str = PCA_BACKEND, seed: int = 0
) -> np.ndarray:
    """Projects `features` on their top `dim` principal axes with unit variance.

    The whitened features of `fit_whitening` (see there).
    """
    return fit_whitening(features, dim, backend, seed)[0]


def fit_whitening(
    features: np.ndarray, dim: int, backend: str = PCA_BACKEND, seed: int = 0
) -> tuple[np.ndarray, Whitening]:
    """Fits the PCA-whitening of `features` and applies it.

    Args:
        features: float32 array (N, d), or a tensor on the device (then
            whitened there as faiss does, the covariance's eigenvectors
            computed on the host, and `backend` plays no part).
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
    d = int(features.shape[1])
    if not 1 <= dim <= d:
        raise ValueError(
            f"PCA dimension must be between 1 and the feature dimension {d}; got {dim}."
        )
    if backend not in PCA_BACKENDS:
        raise ValueError(f"Unknown PCA backend {backend!r}; use one of {PCA_BACKENDS}.")
    if not isinstance(features, np.ndarray):
        return _fit_whitening_on_device(features, dim)
    features = np.ascontiguousarray(features, dtype=np.float32)
    if backend == "faiss" and faiss is not None:
        pca = faiss.PCAMatrix(d, dim, -0.5)
        pca.epsilon = PCA_EPSILON
        pca.train(features)
        # faiss applies A x + b, with b = -A mean.
        projection = faiss.vector_to_array(pca.A).reshape(dim, d).T
        whitening = _float32(Whitening(faiss.vector_to_array(pca.mean), projection))
        eigenvalues = faiss.vector_to_array(pca.eigenvalues)[:dim]
        # (float32 eigenvalues: below a millionth of the largest is rounding, not variance)
        beyond_rank = eigenvalues <= 1e-6 * max(eigenvalues.max(initial=0), PCA_EPSILON)
        if not beyond_rank.any():
            return pca.apply_py(features), whitening
        # Fewer images than dimensions: faiss scales axes of no variance up to arbitrary
        # directions of norm ~1/sqrt(epsilon), which would swamp the rest after L2.
        whitening.projection[:, beyond_rank] = 0.0
        return (features - whitening.mean) @ whitening.projection, whitening
    from sklearn.decomposition import PCA

    pca = PCA(dim, whiten=True, random_state=seed)
    out = pca.fit_transform(features)
    # sklearn divides by sqrt(variance); guard zero-variance components.
    dead = pca.explained_variance_ <= PCA_EPSILON
    out[:, dead] = 0.0
    projection = pca.components_.T / np.sqrt(np.where(dead, 1.0, pca.explained_variance_))
    projection[:, dead] = 0.0
    return out.astype(np.float32), _float32(Whitening(pca.mean_, projection))


def _float32(whitening: Whitening) -> Whitening:
    return Whitening(
        np.asarray(whitening.mean, np.float32), np.asarray(whitening.projection, np.float32)
    )


def _fit_whitening_on_device(features, dim: int):
    """faiss's ``PCAMatrix(eigen_power=-0.5)`` with `PCA_EPSILON`, in `keras.ops`.

    With several processes, `features` is this process's shard: the mean and
    the scatter matrix are summed over the shards, and process 0's projection
    is used everywhere.
    """
    mean = ops.mean(features, axis=0)
    if processes.process_count() > 1:
        total = processes.all_sum(ops.convert_to_numpy(ops.sum(features, axis=0)))
        mean = ops.convert_to_tensor(total / processes.all_sum(features.shape[0]), "float32")
    centred = features - mean
    # Only the d x d scatter matrix goes to the host, for a float64 eigendecomposition;
    # faiss does not divide it by N, so neither do we (the same output, epsilon alike).
    scatter = processes.all_sum(ops.convert_to_numpy(ops.matmul(ops.transpose(centred), centred)))
    eigenvalues, eigenvectors = np.linalg.eigh(scatter.astype(np.float64))
    top = np.argsort(eigenvalues)[::-1][:dim]
    scale = (np.maximum(eigenvalues[top], 0) + PCA_EPSILON) ** -0.5
    projection = processes.broadcast((eigenvectors[:, top] * scale).astype(np.float32))
    whitening = Whitening(ops.convert_to_numpy(mean).astype(np.float32), projection)
    return ops.matmul(centred, ops.convert_to_tensor(projection)), whitening


def l2_normalize(features: np.ndarray, block_rows: int = 8192) -> np.ndarray:
    """Divides each row by its L2 norm (computed in float64), into a new float32 array.

    A row of zeros (every unit of the feature layer dead for that image; the
    authors' code turns it into NaN and k-means crashes) stays zero. Works
    through `block_rows` rows at a time, so the float64 copy is one small
    reused block, not N x d (fewer page faults, a quarter of the memory).
    A tensor on the device is normalised there, in float32.
    """
    if not isinstance(features, np.ndarray):  # a tensor on the device
        norms = ops.sqrt(ops.sum(ops.square(features), axis=1, keepdims=True))
        return features / ops.maximum(norms, 1e-12)
    out = np.empty(features.shape, np.float32)
    for start in range(0, len(features), block_rows):
        block = features[start : start + block_rows].astype(np.float64)
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        out[start : start + block_rows] = block / np.maximum(norms, 1e-12)
    return out


def kmeans(
    features: np.ndarray,
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
    if backend not in KMEANS_BACKENDS:
        raise ValueError(f"Unknown k-means backend {backend!r}; use one of {KMEANS_BACKENDS}.")
    n, d = (int(size) for size in features.shape)
    if not 2 <= k <= n:
        raise ValueError(f"k-means needs 2 <= k <= N={n} points; got k={k}.")
    on_device = not isinstance(features, np.ndarray)
    if backend == "auto" and (on_device or accelerator_available()):
        backend = "keras"
    if backend == "keras":
        return keras_kmeans(features, k, seed, iterations)
    features = np.ascontiguousarray(ops.convert_to_numpy(features), dtype=np.float32)
    if backend == "faiss" and faiss is None:
        raise ImportError("k-means backend 'faiss' asked for, but faiss cannot be imported.")
    if backend == "sklearn" or faiss is None:
        from sklearn.cluster import KMeans

        model = KMeans(k, max_iter=iterations, n_init=1, random_state=seed)
        labels = model.fit_predict(features)
        return labels.astype(np.int64), float(model.inertia_) / n
    clus = faiss.Kmeans(
        d,
        k,
        niter=iterations,
        seed=int(seed),
        # Cluster every point: by default faiss subsamples to 256 per centroid.
        max_points_per_centroid=max(10_000_000, n // k + 1),
        min_points_per_centroid=1,  # silence the "too few points" warning
    )
    clus.train(features)
    distances, labels = clus.index.search(features, 1)
    return labels[:, 0].astype(np.int64), float(distances.sum()) / n


def fill_empty_clusters(labels: np.ndarray, features: np.ndarray, k: int) -> tuple[np.ndarray, int]:
    """Gives every empty cluster half of the currently largest cluster.

    The largest cluster is split at the median of its projection on its first
    principal axis (in index order when all its points coincide), which is
    what faiss's own split approximates. Returns the repaired labels and the
    number of clusters that were empty.
    """
    labels = labels.copy()
    counts = np.bincount(labels, minlength=k)
    empty = np.flatnonzero(counts == 0)
    if not len(empty):
        return labels, 0
    members = dict(zip(np.unique(labels).tolist(), cluster_members(labels)))
    for cluster in empty:
        largest = int(np.argmax(counts))
        points = _rows(features, members[largest]).astype(np.float64)
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
    return labels, len(empty)


def cluster_members(labels: np.ndarray) -> list[np.ndarray]:
    """The indices of each non-empty cluster, ascending, by cluster id (one sort, O(N log N))."""
    order = np.argsort(labels, kind="stable")
    _, starts = np.unique(labels[order], return_index=True)
    return np.split(order, starts[1:])


def _rows(features, indices: np.ndarray) -> np.ndarray:
    """Rows of a NumPy array or of a device tensor (only those go to the host)."""
    if isinstance(features, np.ndarray):
        return features[indices]
    return ops.convert_to_numpy(ops.take(features, ops.convert_to_tensor(indices), axis=0))


def _principal_axis(points: np.ndarray, iterations: int = 20) -> np.ndarray:
    axis = np.ones(points.shape[1]) / np.sqrt(points.shape[1])
    for _ in range(iterations):
        nxt = points.T @ (points @ axis)
        norm = np.linalg.norm(nxt)
        if norm == 0:
            return axis
        axis = nxt / norm
    return axis


def cluster_features(
    features: np.ndarray,
    k: int,
    seed: int,
    pca_dim: int | None = None,
    pca_backend: str = PCA_BACKEND,
    kmeans_backend: str = KMEANS_BACKEND,
    iterations: int = KMEANS_ITERATIONS,
    keep_points: bool = False,
) -> Clustering:
    """PCA-whiten (optional), L2-normalise and k-means `features`.

    `features` is a float32 (N, d) NumPy array or a tensor on the device;
    a tensor stays there (see the module). Every clustering of a run goes
    through here: each epoch's, and the final one `ClusterModel.fit` keeps
    (with `keep_points`, which returns the clustered points too).

    Examples:
        >>> x = np.random.default_rng(0).normal(size=(100, 8)).astype("float32")
        >>> result = cluster_features(x, k=4, seed=0)
        >>> sorted(np.unique(result.labels))
        [0, 1, 2, 3]
    """
    if isinstance(features, np.ndarray):
        finite_rows = np.isfinite(features).all(axis=1)
    else:
        finite_rows = ops.convert_to_numpy(ops.all(ops.isfinite(features), axis=1))
    # Summed over the processes' shards, so that every process raises or none.
    bad = int(processes.all_sum(np.count_nonzero(~finite_rows)))
    if bad:
        raise FloatingPointError(
            f"{bad} of {int(processes.all_sum(len(finite_rows)))} feature rows contain NaN or "
            "inf; the network has diverged (lower the learning rate)."
        )
    several = processes.process_count() > 1
    if several:  # this process's shard: PCA and k-means in keras.ops, summed over the processes
        features = ops.convert_to_tensor(features, "float32")
    start = time.perf_counter()
    whitening = None
    if pca_dim is not None:
        features, whitening = fit_whitening(features, pca_dim, pca_backend, seed)
    seconds_pca = time.perf_counter() - start
    start = time.perf_counter()
    features = l2_normalize(features)
    if several:  # (`kmeans` would check k against this shard's size alone)
        labels, objective = keras_kmeans(features, k, seed, iterations)
        labels, features = _every_shard(labels, features, k)
    else:
        labels, objective = kmeans(features, k, seed, iterations, kmeans_backend)
    labels, empty = fill_empty_clusters(labels, features, k)
    if several and empty:  # one repair for all processes, whatever their float rounding
        labels = processes.broadcast(labels)
    seconds_kmeans = time.perf_counter() - start
    points = ops.convert_to_numpy(features) if keep_points else None
    return Clustering(labels, objective, empty, seconds_pca, seconds_kmeans, whitening, points)


def _every_shard(labels: np.ndarray, features, k: int):
    """All processes' labels; their features too only when a cluster is empty (rare).

    Memory per process stays its shard and a few (k, d) arrays unless
    `fill_empty_clusters` needs the points of the largest cluster.
    """
    labels = processes.gather_shards(labels)
    if np.bincount(labels, minlength=k).min() == 0:
        features = processes.gather_shards(ops.convert_to_numpy(features))
    return labels, features
