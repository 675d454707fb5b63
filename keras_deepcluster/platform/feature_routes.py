"""Where a clustering's features live, and the arithmetic that depends on it.

`method.clustering` clusters through one of two routes, chosen once from the features
(`place`), each offering the same steps: count the non-finite rows, fit and apply the
PCA-whitening, L2-normalise, k-means, read some rows, and agree on the labels.

- `HOST`: a NumPy array in this process. PCA by faiss (``PCAMatrix(eigen_power=-0.5)``, as the
  original DeepCluster) or scikit-learn (``PCA(whiten=True)``, as the Deep Dive code), L2 in
  float64, k-means by faiss, scikit-learn or `keras.ops` (`accelerated_kmeans`).
- `DEVICE`: a tensor on the device (`FeatureExtractor(..., on_device=True)`), or with several
  processes (`processes`) this process's shard. Everything runs in `keras.ops`; sums are taken
  over the processes' shards, and only the labels, PCA's d x d scatter matrix and a few
  (k, d) arrays cross to the host.

Every k-means returns labels in ``0..k-1`` for every point (all shards').
"""

from __future__ import annotations

import abc
import dataclasses

import numpy as np
from keras import ops

from keras_deepcluster.platform import devices, processes
from keras_deepcluster.platform.accelerated_kmeans import keras_kmeans
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

    def __post_init__(self):
        self.mean = np.asarray(self.mean, np.float32)
        self.projection = np.asarray(self.projection, np.float32)


class FeatureRoute(abc.ABC):
    """The steps of a clustering on features that live in one place (`HOST` or `DEVICE`).

    The public methods check their arguments, the same on both routes, and leave the
    arithmetic to the route.
    """

    @abc.abstractmethod
    def count(self, features) -> int:
        """The number of feature rows (over every process's shard)."""

    @abc.abstractmethod
    def count_nonfinite(self, features) -> int:
        """The number of rows holding NaN or inf (over every process's shard)."""

    def fit_whitening(self, features, dim: int, backend: str = PCA_BACKEND, seed: int = 0):
        """Fits the PCA-whitening of `features` and applies it.

        Args:
            features: float32 (N, d) on this route.
            dim: Output dimension, ``1 <= dim <= d``.
            backend: ``"faiss"`` or ``"sklearn"``, on the host; they differ only in a
                constant scale, which the L2 normalisation that follows removes. The device
                computes faiss's whitening whatever the backend.
            seed: Random state of scikit-learn's solver.

        Returns:
            ``(whitened, whitening)``: float32 (N, dim) on this route, and the `Whitening`.
        """
        d = int(features.shape[1])
        if not 1 <= dim <= d:
            raise ValueError(
                f"PCA dimension must be between 1 and the feature dimension {d}; got {dim}."
            )
        if backend not in PCA_BACKENDS:
            raise ValueError(f"Unknown PCA backend {backend!r}; use one of {PCA_BACKENDS}.")
        return self._fit_whitening(features, dim, backend, seed)

    @abc.abstractmethod
    def whiten(self, features, whitening: Whitening):
        """``(features - mean) @ projection``, on this route."""

    @abc.abstractmethod
    def l2_normalize(self, features):
        """Each row divided by its L2 norm; a row of zeros stays zero."""

    def kmeans(
        self,
        features,
        k: int,
        seed: int,
        iterations: int = KMEANS_ITERATIONS,
        backend: str = KMEANS_BACKEND,
    ):
        """k-means of every point into `k` clusters.

        Args:
            features: float32 (N, d) on this route, N >= k.
            k: Number of clusters.
            seed: Seed of the initial centroids.
            iterations: Lloyd iterations.
            backend: One of `KMEANS_BACKENDS` (see `method.clustering.kmeans`).

        Returns:
            ``(labels, objective)``: int64 labels (N,) of every point, in 0..k-1 (possibly
            with empty clusters), and the mean squared distance to the assigned centroid.
        """
        if backend not in KMEANS_BACKENDS:
            raise ValueError(f"Unknown k-means backend {backend!r}; use one of {KMEANS_BACKENDS}.")
        n = self.count(features)
        if not 2 <= k <= n:
            raise ValueError(f"k-means needs 2 <= k <= N={n} points; got k={k}.")
        return self._kmeans(features, k, seed, iterations, backend)

    @abc.abstractmethod
    def rows(self, features, indices: np.ndarray) -> np.ndarray:
        """The rows of `features` at `indices` (into all shards, in process order), on the host."""

    @abc.abstractmethod
    def agree(self, labels: np.ndarray) -> np.ndarray:
        """Process 0's `labels` on every process (their float rounding may differ)."""

    @abc.abstractmethod
    def to_host(self, features) -> np.ndarray:
        """`features` as a float32 NumPy array (this process's shard)."""

    @abc.abstractmethod
    def _fit_whitening(self, features, dim: int, backend: str, seed: int):
        """`fit_whitening` after its checks."""

    @abc.abstractmethod
    def _kmeans(self, features, k: int, seed: int, iterations: int, backend: str):
        """`kmeans` after its checks."""


class HostRoute(FeatureRoute):
    """A NumPy array in this process: faiss, scikit-learn and NumPy (see the module)."""

    def __init__(self, block_rows: int = 8192):
        self.block_rows = block_rows

    def count(self, features) -> int:
        return len(features)

    def count_nonfinite(self, features) -> int:
        return int(np.count_nonzero(~np.isfinite(features).all(axis=1)))

    def _fit_whitening(self, features, dim, backend, seed):
        features = np.ascontiguousarray(features, dtype=np.float32)
        if backend == "faiss" and faiss is not None:
            return self._faiss_pca(features, dim)
        return self._sklearn_pca(features, dim, seed)

    def _faiss_pca(self, features: np.ndarray, dim: int):
        d = features.shape[1]
        pca = faiss.PCAMatrix(d, dim, -0.5)
        pca.epsilon = PCA_EPSILON
        pca.train(features)
        # faiss applies A x + b, with b = -A mean.
        projection = faiss.vector_to_array(pca.A).reshape(dim, d).T
        whitening = Whitening(faiss.vector_to_array(pca.mean), projection)
        eigenvalues = faiss.vector_to_array(pca.eigenvalues)[:dim]
        # (float32 eigenvalues: below a millionth of the largest is rounding, not variance)
        beyond_rank = eigenvalues <= 1e-6 * max(eigenvalues.max(initial=0), PCA_EPSILON)
        if not beyond_rank.any():
            return pca.apply_py(features), whitening
        # Fewer images than dimensions: faiss scales axes of no variance up to arbitrary
        # directions of norm ~1/sqrt(epsilon), which would swamp the rest after L2.
        whitening.projection[:, beyond_rank] = 0.0
        return self.whiten(features, whitening), whitening

    def _sklearn_pca(self, features: np.ndarray, dim: int, seed: int):
        from sklearn.decomposition import PCA

        pca = PCA(dim, whiten=True, random_state=seed)
        out = pca.fit_transform(features)
        # sklearn divides by sqrt(variance); guard zero-variance components.
        dead = pca.explained_variance_ <= PCA_EPSILON
        out[:, dead] = 0.0
        projection = pca.components_.T / np.sqrt(np.where(dead, 1.0, pca.explained_variance_))
        projection[:, dead] = 0.0
        return out.astype(np.float32), Whitening(pca.mean_, projection)

    def whiten(self, features, whitening):
        return (features - whitening.mean) @ whitening.projection

    def l2_normalize(self, features):
        # In blocks, so that the float64 copy is one small reused block, not N x d.
        out = np.empty(features.shape, np.float32)
        for start in range(0, len(features), self.block_rows):
            block = features[start : start + self.block_rows].astype(np.float64)
            norms = np.linalg.norm(block, axis=1, keepdims=True)
            out[start : start + self.block_rows] = block / np.maximum(norms, 1e-12)
        return out

    def _kmeans(self, features, k, seed, iterations, backend):
        if backend == "auto" and devices.accelerator_available():
            backend = "keras"
        if backend == "keras":
            return keras_kmeans(features, k, seed, iterations)
        features = np.ascontiguousarray(features, dtype=np.float32)
        n, d = features.shape
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

    def rows(self, features, indices):
        return features[indices]

    def agree(self, labels):
        return labels

    def to_host(self, features):
        return np.asarray(features, np.float32)


class DeviceRoute(FeatureRoute):
    """A tensor on the device, this process's shard: `keras.ops` (see the module)."""

    def count(self, features) -> int:
        return int(processes.all_sum(int(features.shape[0])))

    def count_nonfinite(self, features) -> int:
        bad = ops.logical_not(ops.all(ops.isfinite(features), axis=1))
        # Summed over the shards, so that every process raises or none.
        return int(processes.all_sum(int(ops.convert_to_numpy(ops.sum(ops.cast(bad, "int32"))))))

    def _fit_whitening(self, features, dim, backend, seed):
        """faiss's ``PCAMatrix(eigen_power=-0.5)`` with `PCA_EPSILON`; process 0's axes."""
        if processes.process_count() == 1:
            mean = ops.mean(features, axis=0)
        else:  # the shards' sums, added in float64 on the host
            total = processes.all_sum(ops.convert_to_numpy(ops.sum(features, axis=0)))
            mean = ops.convert_to_tensor(total / self.count(features), "float32")
        centred = features - mean
        # Only the d x d scatter matrix goes to the host, for a float64 eigendecomposition;
        # faiss does not divide it by N, so neither do we (the same output, epsilon alike).
        scatter = ops.convert_to_numpy(ops.matmul(ops.transpose(centred), centred))
        del centred  # (N, d): freed before `whiten` makes its own
        eigenvalues, eigenvectors = np.linalg.eigh(processes.all_sum(scatter).astype(np.float64))
        top = np.argsort(eigenvalues)[::-1][:dim]
        scale = (np.maximum(eigenvalues[top], 0) + PCA_EPSILON) ** -0.5
        # One projection everywhere, whatever each host's eigendecomposition rounds to.
        projection = processes.broadcast((eigenvectors[:, top] * scale).astype(np.float32))
        whitening = Whitening(ops.convert_to_numpy(mean), projection)
        return self.whiten(features, whitening), whitening

    def whiten(self, features, whitening):
        mean = ops.convert_to_tensor(whitening.mean)
        return ops.matmul(features - mean, ops.convert_to_tensor(whitening.projection))

    def l2_normalize(self, features):
        # In float32: a float64 copy would double the device memory the features take.
        norms = ops.sqrt(ops.sum(ops.square(features), axis=1, keepdims=True))
        return features / ops.maximum(norms, 1e-12)

    def _kmeans(self, features, k, seed, iterations, backend):
        if backend in ("faiss", "sklearn"):
            check_kmeans_backend(backend)
            return HOST.kmeans(self.to_host(features), k, seed, iterations, backend)
        labels, objective = keras_kmeans(features, k, seed, iterations)
        return processes.gather_shards(labels), objective

    def rows(self, features, indices):
        def read(local: np.ndarray):
            return ops.take(features, ops.convert_to_tensor(local), axis=0)

        n, d = (int(size) for size in features.shape)
        return processes.global_rows(np.asarray(indices), n, d, read)

    def agree(self, labels):
        return processes.broadcast(labels)

    def to_host(self, features):
        return np.asarray(ops.convert_to_numpy(features), np.float32)


HOST = HostRoute()
DEVICE = DeviceRoute()


def check_kmeans_backend(backend: str) -> None:
    """Raises ValueError for a k-means back end that cannot cluster these processes' shards.

    faiss and scikit-learn cluster in one process; with several, k-means runs in
    `keras.ops` over their shards.
    """
    if processes.process_count() > 1 and backend not in ("auto", "keras"):
        raise ValueError(
            f"kmeans_backend={backend!r} clusters in one process; with "
            f"{processes.process_count()} processes k-means runs in keras.ops over their "
            "shards: use 'auto' or 'keras'."
        )


def place(features) -> tuple[FeatureRoute, object]:
    """The route that clusters `features`, and the features as that route takes them.

    A NumPy array stays on the host and a tensor on the device; with several processes
    `features` is this process's shard, and the clustering spans the shards on the device.
    """
    if isinstance(features, np.ndarray) and processes.process_count() == 1:
        return HOST, features
    return DEVICE, ops.convert_to_tensor(features, "float32")


def extract_to_device(kmeans_backend: str, num_images: int, feature_dim: int) -> bool:
    """Whether a re-clustering should leave its features on the device for k-means there.

    So when k-means runs in `keras.ops` (``"keras"``, or ``"auto"`` on a GPU) and the
    (N, D) features take at most a quarter of the device's free memory.
    """
    if kmeans_backend != "keras" and not (
        kmeans_backend == "auto" and devices.accelerator_available()
    ):
        return False
    free = devices.free_memory_bytes()
    return free is None or 4 * num_images * feature_dim <= free / 4


def wait_for(features) -> None:
    """Returns once the device has computed `features` (at once for a NumPy array)."""
    if not isinstance(features, np.ndarray):
        ops.convert_to_numpy(features[0, 0])
