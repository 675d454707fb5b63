"""Several processes, one DeepCluster job, on JAX's multi-process runtime (`jax.distributed`).

Every process (one per host, or one per GPU) runs the same program. Each
extracts the features of its own shard of the images (`own_shard`), the
clustering is computed across the shards (`feature_routes.DEVICE`: PCA from
all-reduced moments, k-means with all-reduced sums and counts, the same
initial centroids everywhere), the shards' labels are gathered so that
every process draws the same global sample, and each process feeds its slice
of every global batch to Keras's `DataParallel` (`PseudoLabelDataset`).

The collectives here move NumPy arrays between processes: a few (k, d)
arrays per k-means iteration, never the (N, d) features. With one process
each is the identity.

Examples:
    On each of two hosts, ``I`` = 0 and 1:

    >>> processes.initialize("10.0.0.1:1234", num_processes=2, process_id=I)
    >>> with data_parallel().scope():
    ...     model = DeepCluster(...)
    ...     model.fit(data, callbacks=[Reclustering(data)])
"""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Callable

import keras
import numpy as np


def initialize(coordinator: str, num_processes: int, process_id: int, timeout: int = 120) -> None:
    """Joins this process to a job of `num_processes` processes (JAX backend).

    Call it before anything else touches JAX. Process 0 runs the coordinator
    at `coordinator` (its own host and a free port); the others connect to it.
    On CPUs the processes' collectives go over Gloo (TCP).

    Raises:
        ValueError: a bad address, count or id, or a backend other than JAX.
        ConnectionError: the coordinator did not answer within `timeout` s,
            or process 0 cannot listen on its port.
    """
    host, port = _address(coordinator)
    for name, value, low in (("num_processes", num_processes, 1), ("process_id", process_id, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}; got {value!r}.")
    if process_id >= num_processes:
        raise ValueError(
            f"process_id {process_id} is not below num_processes {num_processes}; "
            f"the processes of a job are numbered 0..{num_processes - 1}."
        )
    backend = keras.backend.backend()
    if backend != "jax":
        raise ValueError(
            f"Several processes need the JAX backend (jax.distributed); got {backend}. "
            "Keras's fit does not run under TensorFlow's MultiWorkerMirroredStrategy, and on "
            "PyTorch it runs in one process. Use `backend=jax`, or one process."
        )
    import jax

    # JAX aborts the whole process when the coordinator does not answer: check first.
    if process_id == 0:
        _check_can_listen(host, port)
    else:
        _wait_for(host, port, timeout)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator, num_processes, process_id, initialization_timeout=timeout
    )
    check_same("the number of processes", str(num_processes))


def process_index() -> int:
    """This process's index in the job (0 without `initialize`)."""
    return _jax().process_index() if _jax() else 0


def process_count() -> int:
    """The number of processes in the job (1 without `initialize`)."""
    return _jax().process_count() if _jax() else 1


def shard(n: int) -> slice:
    """This process's rows of N: contiguous, in process order, sizes differing by at most 1."""
    index, count = process_index(), process_count()
    return slice(n * index // count, n * (index + 1) // count)


def own_shard(items, take: Callable):
    """This process's rows of `items` (`shard`): ``take(items, indices)``, or `items` itself.

    With one process `items` are returned untouched, not read through `take`.
    """
    if process_count() == 1:
        return items
    rows = shard(len(items))
    return take(items, np.arange(rows.start, rows.stop))


def all_sum(value) -> np.ndarray:
    """The sum over processes of `value` (same shape everywhere), in float64 for floats."""
    value = np.asarray(value)
    if value.dtype.kind == "f":
        value = value.astype(np.float64)
    if process_count() == 1:
        return value
    return _gather(value).sum(axis=0)


def gather_shards(rows: np.ndarray) -> np.ndarray:
    """Every process's `rows` (its shard, from `shard`) concatenated in process order."""
    rows = np.asarray(rows)
    if process_count() == 1:
        return rows
    sizes = _gather(np.array([len(rows)]))[:, 0]
    padded = np.zeros((int(sizes.max()),) + rows.shape[1:], rows.dtype)
    padded[: len(rows)] = rows
    gathered = _gather(padded)
    return np.concatenate([part[:size] for part, size in zip(gathered, sizes)])


def global_rows(indices: np.ndarray, shard_rows: int, dim: int, read: Callable) -> np.ndarray:
    """Rows of an array sharded over the processes, read from whichever process holds each.

    Every process calls it with the same `indices`; each reads the rows of its own shard,
    and the parts are summed, so that every process gets all of them.

    Args:
        indices: int (m,) indices into the whole array (the shards in process order).
        shard_rows: The number of rows of this process's shard.
        dim: The width of a row.
        read: ``read(local_indices)`` gives rows of this process's shard (a NumPy array or
            a tensor) at its own indices.

    Returns:
        float32 (m, dim).
    """
    sizes = gather_shards(np.array([shard_rows]))
    start = int(sizes[: process_index()].sum())
    mine = (indices >= start) & (indices < start + shard_rows)
    rows = np.zeros((len(indices), dim), np.float32)
    if mine.any():
        rows[mine] = keras.ops.convert_to_numpy(read(indices[mine] - start))
    # Each row is non-zero on one process only: the float64 sum is that row, exactly.
    return all_sum(rows).astype(np.float32)


def broadcast(value) -> np.ndarray:
    """Process 0's `value` (same shape and dtype everywhere), on every process."""
    value = np.asarray(value)
    if process_count() == 1:
        return value
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.broadcast_one_to_all(value))


def check_same(what: str, value: str) -> None:
    """Raises ValueError, on every process, unless all processes have the same `value`.

    Used to refuse processes started with different settings, data or
    counts, which would otherwise train on different labels or hang.
    """
    if process_count() == 1:
        return
    digest = np.frombuffer(hashlib.sha256(value.encode()).digest(), np.uint8)
    digests = _gather(digest)
    differ = [i for i in range(len(digests)) if not np.array_equal(digests[i], digests[0])]
    if differ:
        raise ValueError(
            f"The processes disagree on {what}: process(es) {differ} differ from process 0. "
            "Start every process with the same recipe, options and data."
        )


def local(value):
    """This process's copy of a replicated JAX array (any other value as it is)."""
    if getattr(value, "is_fully_addressable", True):
        return value
    return value.addressable_data(0)


def _gather(value: np.ndarray) -> np.ndarray:
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(value, tiled=False))


def _jax():
    """The jax module when it runs several processes' job here, else None."""
    if keras.backend.backend() != "jax":
        return None
    import jax

    return jax if jax.distributed.is_initialized() else None


def _address(coordinator: str) -> tuple[str, int]:
    host, _, port = str(coordinator).rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"coordinator must be HOST:PORT (process 0's host and a free port, e.g. "
            f"10.0.0.1:1234 or 127.0.0.1:1234); got {coordinator!r}."
        )
    return host.strip("[]"), int(port)


def _check_can_listen(host: str, port: int) -> None:
    try:
        with socket.create_server(("", port), reuse_port=False):
            pass
    except OSError as error:
        raise ConnectionError(
            f"Process 0 runs the coordinator at {host}:{port} but cannot listen on port "
            f"{port} ({error.strerror}); choose a free port for `coordinator`."
        ) from None


def _wait_for(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=2):
                return
        except OSError as error:
            if time.monotonic() > deadline:
                raise ConnectionError(
                    f"The coordinator at {host}:{port} did not answer within {timeout:g} s "
                    f"({error.strerror or error}). Start process 0 with the same "
                    "`coordinator` (its own host and port), and check that this host can "
                    "reach it."
                ) from None
            time.sleep(0.5)
