"""The devices DeepCluster trains on: one, or several with data parallelism.

Several devices train on JAX (`keras.distribution.DataParallel`) or
TensorFlow (`tf.distribute.MirroredStrategy`); Keras's `fit` on PyTorch runs
on one device. There DeepCluster's training step is Keras's own, so the batch
is split across replicas of the network and the gradients are summed, as for
any Keras model. Re-clustering runs once per epoch for all replicas: every
replica extracts the features of its share of each batch, the features are
gathered into one array, k-means runs once (`feature_routes`: faiss on the
host, or our k-means on the device, `kmeans_backend`), and the single set of
pseudo-labels feeds all replicas. After `processes.initialize` (a job of several JAX
processes, one per host or GPU) the distribution spans every device of every
process, and the clustering is computed across the processes' shards
(`keras_deepcluster.platform.processes`).
"""

from __future__ import annotations

import contextlib

import keras

from keras_deepcluster.platform import processes


def accelerator_available() -> bool:
    """Whether the current Keras backend sees a GPU (used by ``kmeans_backend="auto"``)."""
    return _device_type() == "gpu"


def free_memory_bytes() -> int | None:
    """Free memory of the first GPU in bytes, where the backend can tell; else None.

    PyTorch counts what its caching allocator holds but does not use as free;
    JAX reports its allocator's limit and use. TensorFlow reports no limit,
    and a CPU's memory is the host's: both give None.
    """
    if _device_type() != "gpu":
        return None
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        free, _ = torch.cuda.mem_get_info()
        return int(free + torch.cuda.memory_reserved() - torch.cuda.memory_allocated())
    if backend == "jax":
        import jax

        stats = jax.devices()[0].memory_stats() or {}
        if "bytes_limit" in stats:
            return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    return None


def device_count() -> int:
    """How many devices of the kind Keras computes on (GPUs if any, else CPUs) it sees."""
    return len(_devices())


def data_parallel(devices: int | None = None):
    """A data-parallel distribution over `devices` devices, for this backend.

    Build, compile and `fit` the `DeepCluster` model inside its ``scope()``:
    on JAX it is a `keras.distribution.DataParallel`, on TensorFlow a
    `tf.distribute.MirroredStrategy`. One device needs no distribution, so
    ``data_parallel(1)`` is a scope that changes nothing, on every backend.
    Batch sizes (training and feature extraction) must be multiples of the
    number of devices. After `processes.initialize`, the distribution spans
    every device of every process (`devices` None or that number), and each
    process feeds its slice of every batch.

    Args:
        devices: How many devices to use, the first ones Keras lists (GPUs if
            any, else CPUs); None uses all of them.

    Returns:
        An object whose ``scope()`` is the context to build and train in.

    Raises:
        ValueError: `devices` is not a positive integer, more than the
            devices there are, or more than one on the PyTorch backend.

    Examples:
        >>> distribution = data_parallel(2)
        >>> with distribution.scope():
        ...     model = DeepCluster(backbones.lenet(), num_clusters=10)
        ...     model.compile(optimizer="sgd")
        ...     model.fit(data, epochs=5, callbacks=[Reclustering(data)])
    """
    if processes.process_count() > 1:
        return _across_processes(devices)
    available = _devices()
    if devices is None:
        devices = len(available)
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise ValueError(f"devices must be a positive integer or None (all); got {devices!r}.")
    backend = keras.backend.backend()
    if devices > 1 and backend not in ("jax", "tensorflow"):
        raise ValueError(
            f"Several devices need the JAX or TensorFlow backend: Keras's fit on "
            f"{backend} runs on one device. Use the jax or tensorflow backend, or 1 device."
        )
    if devices > len(available):
        raise ValueError(
            f"{devices} devices asked for, but the {backend} backend sees "
            f"{len(available)} ({', '.join(available)}); use at most {len(available)}."
        )
    if devices == 1:
        return _SingleDevice()
    if backend == "jax":
        return keras.distribution.DataParallel(devices=available[:devices])
    import tensorflow as tf

    return tf.distribute.MirroredStrategy(available[:devices])


def _across_processes(devices: int | None):
    """DataParallel over every device of every process, each process feeding its own batches."""
    import jax

    available = jax.devices()
    if devices is not None and devices != len(available):
        raise ValueError(
            f"With {jax.process_count()} processes training spans every device of every "
            f"process ({len(available)}); got devices={devices}. Leave devices out (None)."
        )
    # Each process's PyDataset already yields its own slice of each batch.
    return keras.distribution.DataParallel(devices=available, auto_shard_dataset=False)


def input_workers(replicas: int) -> int:
    """Threads that feed a `keras.utils.PyDataset` training on `replicas` devices.

    On TensorFlow one worker means Keras feeds the data through tf.data's
    `from_generator` with autotuned prefetching, which stalls the first step
    of some epochs, mostly after a feature extraction
    (benchmarks/first_step_stall.py, docs/design.md); Keras's thread enqueuer
    (2 workers) does not, and keeps the batches in order. Under a
    multi-replica strategy the enqueuer changes what the replicas train on,
    so that keeps one, as do the other backends.
    """
    return 2 if keras.backend.backend() == "tensorflow" and replicas == 1 else 1


def replica_count(model: keras.Model) -> int:
    """Over how many devices `model` splits each batch (1 without a distribution)."""
    distribution = keras.distribution.distribution()  # JAX
    if distribution is not None:
        return int(distribution.device_mesh.devices.size)
    strategy = getattr(model, "distribute_strategy", None)  # TensorFlow
    return 1 if strategy is None else strategy.num_replicas_in_sync


def strategy_replicas() -> int:
    """Replicas of the TensorFlow strategy in scope; 1 outside one and on other backends.

    Under a `tf.distribute` strategy each replica computes the loss and the
    batch-norm statistics of its share of the batch, and the gradients are
    summed, whereas JAX computes everything over the whole, sharded batch.
    """
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


class _SingleDevice:
    def scope(self):
        return contextlib.nullcontext()


def _device_type() -> str:
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return "gpu" if any(device.platform == "gpu" for device in jax.devices()) else "cpu"
    if backend == "torch":
        import torch

        return "gpu" if torch.cuda.is_available() else "cpu"
    if backend == "tensorflow":
        import tensorflow as tf

        return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"
    return "cpu"


def _devices() -> list[str]:
    backend = keras.backend.backend()
    kind = _device_type()
    if backend == "jax":
        return keras.distribution.list_devices(kind)
    if backend == "tensorflow":
        import tensorflow as tf

        return [device.name for device in tf.config.list_logical_devices(kind.upper())]
    if backend == "torch":
        import torch

        return [f"cuda:{i}" for i in range(torch.cuda.device_count())] if kind == "gpu" else ["cpu"]
    return ["cpu"]
