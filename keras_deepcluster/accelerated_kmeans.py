"""k-means in `keras.ops`: the same algorithm as faiss, on whatever device Keras uses.

Lloyd iterations with random initial centroids (as faiss), assignment in
chunks so that no distance matrix larger than `max_chunk_elements` exists, and
faiss's repair of empty clusters (an empty centroid becomes a perturbed copy of
a large cluster's centroid, chosen with probability growing with its size).
On a GPU the data stay on the device; centroids (k x d) go to the host once per
iteration for the empty-cluster repair.
"""

from __future__ import annotations

import numpy as np
from keras import ops

# faiss's relative perturbation of a split centroid (Clustering.cpp, EPS).
_SPLIT_EPSILON = 1.0 / 1024.0


def keras_kmeans(
    features: np.ndarray,
    k: int,
    seed: int,
    iterations: int = 20,
    max_chunk_elements: int = 1 << 24,
) -> tuple[np.ndarray, float]:
    """k-means of `features` (N, d) into `k` clusters with `keras.ops`.

    Args:
        features: float32 (N, d), N >= k.
        k: Number of clusters.
        seed: Seed of the initial centroids and of the empty-cluster repair.
        iterations: Lloyd iterations.
        max_chunk_elements: Largest number of point-centroid distances held at once.

    Returns:
        ``(labels, objective)`` as `clustering.kmeans`: int64 labels (N,) and the
        mean squared distance to the assigned centroid.

    Example:
    >>> labels, objective = keras_kmeans(np.random.rand(1000, 16).astype("float32"), 10, seed=0)
    """
    n, d = features.shape
    rng = np.random.default_rng(seed)
    points = ops.convert_to_tensor(np.ascontiguousarray(features, np.float32))
    squared_norms = ops.sum(ops.square(points), axis=1)
    chunk = max(1, max_chunk_elements // k)
    centroids = features[rng.choice(n, k, replace=False)].astype(np.float32)
    for _ in range(iterations):
        labels, _ = _assign(points, squared_norms, centroids, chunk)
        sums = ops.convert_to_numpy(ops.segment_sum(points, labels, num_segments=k))
        counts = np.bincount(ops.convert_to_numpy(labels), minlength=k).astype(np.float64)
        centroids = _split_empty(sums, counts, centroids, rng)
    labels, distances = _assign(points, squared_norms, centroids, chunk)
    return (
        ops.convert_to_numpy(labels).astype(np.int64),
        float(ops.convert_to_numpy(ops.sum(distances))) / n,
    )


def _assign(points, squared_norms, centroids, chunk):
    """Nearest centroid and squared distance of every point, `chunk` points at a time."""
    centroids = ops.convert_to_tensor(centroids)
    centroid_norms = ops.sum(ops.square(centroids), axis=1)
    labels, distances = [], []
    for start in range(0, int(points.shape[0]), chunk):
        block = points[start : start + chunk]
        # |x - c|^2 = |x|^2 - 2 x.c + |c|^2, clipped at 0 against rounding.
        d2 = (
            squared_norms[start : start + chunk, None]
            - 2.0 * ops.matmul(block, ops.transpose(centroids))
            + centroid_norms[None, :]
        )
        labels.append(ops.argmin(d2, axis=1))
        distances.append(ops.maximum(ops.min(d2, axis=1), 0.0))
    return ops.concatenate(labels), ops.concatenate(distances)


def _split_empty(sums, counts, previous, rng):
    """New centroids; each empty one becomes a perturbed half of a large cluster (faiss)."""
    centroids = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], previous)
    n, k = counts.sum(), len(counts)
    # Opposite perturbations, alternating in sign over the dimensions, as faiss does.
    sign = np.where(np.arange(centroids.shape[1]) % 2 == 0, 1.0, -1.0)
    for empty in np.flatnonzero(counts == 0):
        if counts.max() <= 1:
            break  # nothing left to split
        # faiss: pick cluster j with probability (size_j - 1) / (n - k), by rejection.
        while True:
            j = int(rng.integers(k))
            if rng.random() * (n - k) < counts[j] - 1:
                break
        centroids[empty] = centroids[j] * (1 + sign * _SPLIT_EPSILON)
        centroids[j] = centroids[j] * (1 - sign * _SPLIT_EPSILON)
        counts[empty] = counts[j] // 2
        counts[j] -= counts[empty]
    return centroids.astype(np.float32)
