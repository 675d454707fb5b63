"""k-means in `keras.ops`: the algorithm of faiss, compiled, on the device Keras computes on.

Lloyd iterations from random initial centroids (as faiss). Each iteration is
one compiled function per chunk of points (assignment, distances, per-cluster
sums and counts), with chunks as large as the device's free memory allows, so
the time goes to one large matrix product per chunk. Centroids, labels and
counts stay on the device; per iteration only the k counts go to the host,
to repair empty clusters as faiss does (an empty centroid becomes a perturbed
copy of a large cluster's, chosen with probability growing with its size).
Points that do not fit in device memory next to the distance blocks stay on
the host and are streamed to the device a chunk at a time.

In deterministic mode (`determinism.enable_determinism`) the per-cluster sums
are a matrix product of one-hot labels with the points, which adds in a fixed
order, instead of a scatter-add, which on a GPU adds in no fixed order; it
doubles the arithmetic of an iteration.
"""

from __future__ import annotations

import functools

import keras
import numpy as np
from keras import ops

from keras_deepcluster.platform import determinism, devices, processes
from keras_deepcluster.platform.compilation import compiled
from keras_deepcluster.settings import KMEANS_ITERATIONS

# faiss's relative perturbation of a split centroid (Clustering.cpp, EPS).
_SPLIT_EPSILON = 1.0 / 1024.0
# Distances held at once when the device cannot say how much memory it has
# free (CPUs, TensorFlow): 64 MiB of float32 per chunk on a CPU, 1 GiB on a GPU.
_HOST_CHUNK_ELEMENTS = 1 << 24
_GPU_CHUNK_ELEMENTS = 1 << 28
# Share of the device's free memory that k-means may fill.
_MEMORY_SHARE = 0.5


def keras_kmeans(
    features,
    k: int,
    seed: int,
    iterations: int = KMEANS_ITERATIONS,
    chunk_rows: int | None = None,
    deterministic: bool | None = None,
) -> tuple[np.ndarray, float]:
    """k-means of `features` (N, d) into `k` clusters with `keras.ops`.

    Args:
        features: float32 (N, d), N >= k: a NumPy array, or a tensor already
            on the device (then nothing goes back to the host but the labels).
        k: Number of clusters.
        seed: Seed of the initial centroids and of the empty-cluster repair.
        iterations: Lloyd iterations.
        chunk_rows: Points per chunk; None sizes chunks from the free memory
            of the device (`chunk_plan`).
        deterministic: Sum in a fixed order (see the module); None follows
            `determinism.enabled()`.

    With several processes (`processes`), `features` is this process's
    shard: the initial centroids are drawn from all shards, the per-cluster
    sums and counts are summed over the processes every iteration, and the
    labels returned are this shard's.

    Returns:
        ``(labels, objective)`` as `clustering.kmeans`: int64 labels (N,) and the
        mean squared distance to the assigned centroid.

    Examples:
        >>> labels, objective = keras_kmeans(np.random.rand(1000, 16).astype("float32"), 10, seed=0)
    """
    n, d = (int(s) for s in features.shape)
    if deterministic is None:
        deterministic = determinism.enabled()
    planned_rows, resident = chunk_plan(n, d, k, deterministic)
    chunks = _Chunks(features, chunk_rows or planned_rows, resident)
    sizes = processes.gather_shards(np.array([n]))  # every shard's size, in process order
    rng = np.random.default_rng(seed)
    # The initial points are drawn from all shards, each read where it lives.
    picked = rng.choice(int(sizes.sum()), k, replace=False)
    centroids = ops.convert_to_tensor(processes.global_rows(picked, n, d, chunks.rows), "float32")
    step = _lloyd_step(keras.backend.backend(), k, deterministic)
    for _ in range(iterations):
        sums = ops.zeros((k, d), "float32")
        counts = ops.zeros((k,), "float32")
        for block in chunks:
            _, _, block_sums, block_counts = step(block, centroids)
            sums, counts = sums + block_sums, counts + block_counts
        if len(sizes) > 1:
            sums, counts = (ops.convert_to_tensor(_summed(x), "float32") for x in (sums, counts))
        centroids = _update(centroids, sums, counts, rng)
    labels, distances = [], 0.0
    for block in chunks:
        block_labels, block_distances, _, _ = step(block, centroids)
        labels.append(ops.convert_to_numpy(block_labels))
        distances += float(ops.convert_to_numpy(ops.sum(block_distances)))
    objective = float(processes.all_sum(distances)) / int(sizes.sum())
    return np.concatenate(labels).astype(np.int64), objective


def _summed(value) -> np.ndarray:
    return processes.all_sum(ops.convert_to_numpy(value)).astype(np.float32)


def chunk_plan(n: int, d: int, k: int, deterministic: bool = False) -> tuple[int, bool]:
    """Points per chunk, and whether all N x d points stay on the device.

    On a device that reports its free memory (a GPU on JAX or PyTorch), the
    points stay on it when they take at most a quarter of that memory, and a
    chunk holds as many points as half of what is left allows: per point, its
    k distances (twice: the product and what argmin reads, as eager PyTorch
    makes both), with deterministic sums its k one-hot entries, and its d
    coordinates, rounded down to a power of two: the free memory differs a
    little from call to call, and on JAX every new chunk shape would be
    compiled anew. Elsewhere chunks hold a fixed number of distances.
    """
    free = devices.free_memory_bytes()
    per_row = 4 * (k * (3 if deterministic else 2) + d)
    if free is None:
        budget = _GPU_CHUNK_ELEMENTS if devices.accelerator_available() else _HOST_CHUNK_ELEMENTS
        return max(1, min(n, budget // k)), True
    resident = 4 * n * d <= free / 4
    left = free - (4 * n * d if resident else 0)
    rows = max(1, int(left * _MEMORY_SHARE) // per_row)
    return min(n, 1 << (rows.bit_length() - 1)), resident


class _Chunks:
    """The points as device tensors of `rows` points each, made once or streamed."""

    def __init__(self, features, rows: int, resident: bool):
        self.features = features
        self.rows_per_chunk = rows
        on_host = isinstance(features, np.ndarray)
        self.host = np.ascontiguousarray(features, np.float32) if on_host else None
        self.resident = None
        if resident or not on_host:
            points = ops.convert_to_tensor(self.host if on_host else features, "float32")
            n = int(points.shape[0])
            self.resident = [points[i : i + rows] for i in range(0, n, rows)]

    def __iter__(self):
        if self.resident is not None:
            yield from self.resident
            return
        for start in range(0, len(self.host), self.rows_per_chunk):
            yield ops.convert_to_tensor(self.host[start : start + self.rows_per_chunk])

    def rows(self, indices: np.ndarray):
        """The points at `indices` (of this process's shard), as a device tensor."""
        if self.host is not None:
            return ops.convert_to_tensor(self.host[indices])
        return ops.take(self.features, ops.convert_to_tensor(indices), axis=0)


@functools.lru_cache(maxsize=16)
def _lloyd_step(backend: str, k: int, deterministic: bool):
    """The compiled work on one chunk: labels, distances, sums and counts per cluster.

    Kept per (backend, k, mode), so that each re-clustering reuses the
    compiled function instead of compiling it again.
    """

    def step(block, centroids):
        # argmin |x - c|^2 = argmin (|c|^2 - 2 x.c): one matrix product.
        scores = ops.sum(ops.square(centroids), axis=1)[None, :] - 2.0 * ops.matmul(
            block, ops.transpose(centroids)
        )
        labels = ops.argmin(scores, axis=1)
        nearest = ops.take_along_axis(scores, labels[:, None], axis=1)[:, 0]
        # |x|^2 added back, clipped at 0 against rounding.
        distances = ops.maximum(nearest + ops.sum(ops.square(block), axis=1), 0.0)
        if deterministic:
            one_hot = ops.one_hot(labels, k, dtype="float32")
            sums = ops.matmul(ops.transpose(one_hot), block)
            counts = ops.sum(one_hot, axis=0)
        else:
            # A scatter-add (Keras's PyTorch segment_sum copies the ids to N x d first).
            rows = labels[:, None]
            sums = ops.scatter_update(ops.zeros_like(centroids), rows, block, reduction="add")
            counts = ops.scatter_update(ops.zeros((k,)), rows, ops.ones_like(distances), "add")
        return labels, distances, sums, counts

    return compiled(step)


def _update(centroids, sums, counts, rng):
    """The next centroids: cluster means, then faiss's split of each empty cluster."""
    means = sums / ops.maximum(counts, 1.0)[:, None]
    centroids = ops.where((counts > 0)[:, None], means, centroids)
    host_counts = ops.convert_to_numpy(counts).astype(np.float64)  # k values, not N
    if host_counts.min() > 0:
        return centroids
    source, even, odd = split_plan(host_counts, rng)
    factors = np.where(np.arange(centroids.shape[1]) % 2 == 0, even[:, None], odd[:, None])
    picked = ops.take(centroids, ops.convert_to_tensor(source), axis=0)
    return picked * ops.convert_to_tensor(factors.astype(np.float32))


def split_plan(counts: np.ndarray, rng: np.random.Generator):
    """faiss's repair of empty clusters, planned on the k counts alone.

    Each empty cluster takes a copy of cluster j, picked with probability
    (size_j - 1) / (N - k) by rejection, and the two are pushed apart by a
    relative ``1/1024`` in opposite directions (alternating in sign over the
    dimensions). Returns, per cluster, the centroid it copies and the factors
    of its even and odd dimensions: ``new[c] = old[source[c]] * factor``.
    """
    counts = counts.copy()
    k, n = len(counts), counts.sum()
    source = np.arange(k)
    even, odd = np.ones(k), np.ones(k)
    for empty in np.flatnonzero(counts == 0):
        if counts.max() <= 1:
            break  # nothing left to split
        while True:
            j = int(rng.integers(k))
            if rng.random() * (n - k) < counts[j] - 1:
                break
        source[empty] = source[j]
        even[empty], odd[empty] = even[j] * (1 + _SPLIT_EPSILON), odd[j] * (1 - _SPLIT_EPSILON)
        even[j], odd[j] = even[j] * (1 - _SPLIT_EPSILON), odd[j] * (1 + _SPLIT_EPSILON)
        counts[empty] = counts[j] // 2
        counts[j] -= counts[empty]
    return source, even, odd
