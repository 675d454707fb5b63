"""Feature extraction: a network's output on the fixed view of every image."""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np

from keras_deepcluster.views import ImageViews


def extract_features(
    model: keras.Model,
    images: np.ndarray,
    views: ImageViews,
    batch_size: int = 256,
    flip: bool = False,
    on_batch: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Runs `model` in inference mode over the fixed view of `images`.

    Outputs are flattened and written batch by batch into one preallocated
    float32 array (N, D). The last batch is zero-padded to `batch_size`, so the
    compiled predict function sees a single input shape. A model distributed
    over several devices (`devices.data_parallel`) splits each batch over
    them; `batch_size` must then be a multiple of their number.

    Args:
        model: Any Keras model taking the views' images.
        images: uint8 (N, H, W[, C]) or float in [0, 1].
        views: Gives the fixed view (resize, centre crop, normalise).
        batch_size: Images per forward pass.
        flip: Flip the view horizontally (for flip-augmented probes).
        on_batch: Called as ``on_batch(images_done, images_total)`` after each
            batch (progress display).

    Returns:
        float32 array (N, D), D the product of the model's output dimensions.
    """
    n = len(images)
    dim = int(np.prod(model.output.shape[1:]))
    features = np.empty((n, dim), np.float32)
    for start in range(0, n, batch_size):
        batch = views.fixed(images[start : start + batch_size])
        if flip:
            batch = batch[:, :, ::-1]
        count = len(batch)
        if count < batch_size:
            batch = np.concatenate(
                [batch, np.zeros((batch_size - count,) + batch.shape[1:], batch.dtype)]
            )
        out = keras.ops.convert_to_numpy(model.predict_on_batch(_per_replica(model, batch)))
        features[start : start + count] = out.reshape(batch_size, dim)[:count]
        if on_batch is not None:
            on_batch(start + count, n)
    return features


def _per_replica(model, batch):
    """Splits `batch` over a TensorFlow model's replicas.

    Keras's TensorFlow `predict_on_batch` would give every replica the whole
    batch; on JAX the distribution shards the batch itself.
    """
    strategy = getattr(model, "distribute_strategy", None)
    if strategy is None or strategy.num_replicas_in_sync == 1:
        return batch
    shards = np.split(batch, strategy.num_replicas_in_sync)
    return strategy.experimental_distribute_values_from_function(
        lambda context: shards[context.replica_id_in_sync_group]
    )
