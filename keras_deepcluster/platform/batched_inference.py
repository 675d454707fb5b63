"""A compiled forward pass run over every image, batch after batch, on one or more devices.

Where the features go (the host or the device), how a model distributed over several
devices is fed, and what each of several processes runs: `method.features` calls `run`
and stays free of these.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np

from keras_deepcluster.platform import devices, processes


def run(
    network: keras.Model,
    forward: Callable,
    images,
    dtype: str,
    dim: int,
    batch_size: int,
    on_batch: Callable[[int, int], None] | None = None,
    on_device: bool = False,
):
    """The outputs (N, `dim`) of `network` over `images`, batch after batch.

    Args:
        network: The Keras model (for its weights and its distribution).
        forward: Its compiled pass, ``forward(trainable, non_trainable, batch)``.
        images: (N, ...) array-like whose slices are batches of images.
        dtype: What each batch is converted to (``"uint8"`` or ``"float32"``).
        dim: The width of the output rows.
        batch_size: Images per call; the last batch is zero-padded to it, so the compiled
            pass sees one input shape (fewer images than a batch: the next power of two).
        on_batch: Called as ``on_batch(images_done, images_total)`` after each batch.
        on_device: Keep the outputs on the device as one tensor (not for a model
            distributed over several devices, whose outputs come to the host).

    Returns:
        A float32 NumPy array (N, `dim`), or with `on_device` a tensor on the device. Each
        batch's outputs are copied to the host while the next one computes. A model
        distributed over several devices (`devices.data_parallel`) runs through Keras's
        `predict_on_batch`, split over them; with several processes each runs its own
        images on its own first device, with its copy of the weights.
    """
    distributed = devices.replica_count(network) > 1 and processes.process_count() == 1
    weights = [[processes.local(v.value) for v in network.trainable_variables]]
    weights.append([processes.local(v.value) for v in network.non_trainable_variables])
    n = len(images)
    batch_size = _padded_batch_size(n, batch_size, devices.replica_count(network))
    features = None if on_device and not distributed else np.empty((n, dim), np.float32)
    on_host, pending = [], None
    padded = np.zeros((batch_size,) + tuple(images.shape[1:]), dtype)
    for start in range(0, n, batch_size):
        batch = images[start : start + batch_size].astype(dtype, copy=False)
        count = len(batch)
        if count < batch_size:
            padded[:count] = batch
            batch = padded
        if distributed:
            out = network.predict_on_batch(_distributed_input(network, batch))
            features[start : start + count] = np.reshape(out, (batch_size, -1))[:count]
        else:
            out = forward(*weights, keras.ops.convert_to_tensor(batch))
            if features is None:
                on_host.append(out[:count] if count < batch_size else out)
            else:  # copy the previous batch while this one computes
                if pending is not None:
                    _copy(features, *pending)
                pending = (start, count, out)
        if on_batch is not None:
            on_batch(start + count, n)
    if pending is not None:
        _copy(features, *pending)
    return keras.ops.concatenate(on_host) if features is None else features


def _copy(features: np.ndarray, start: int, count: int, out) -> None:
    features[start : start + count] = keras.ops.convert_to_numpy(out)[:count]


def _distributed_input(model, batch):
    """`batch` as a distributed model's `predict_on_batch` should get it.

    Keras's TensorFlow `predict_on_batch` would give every replica of a
    distributed model the whole batch, so it is split over them here (on JAX
    the distribution shards the batch itself).
    """
    strategy = getattr(model, "distribute_strategy", None)
    if strategy is None or strategy.num_replicas_in_sync == 1:
        return batch
    shards = np.split(batch, strategy.num_replicas_in_sync)
    return strategy.experimental_distribute_values_from_function(
        lambda context: shards[context.replica_id_in_sync_group]
    )


def _padded_batch_size(n: int, batch_size: int, replicas: int) -> int:
    """The batch the compiled pass sees: `batch_size`, or less for fewer images.

    For ``n < batch_size`` the next power of two, rounded up to a multiple of
    the replicas (each takes an equal share).
    """
    if n >= batch_size:
        return batch_size
    size = 1 << max(0, n - 1).bit_length()
    return min(batch_size, -(-size // replicas) * replicas)
