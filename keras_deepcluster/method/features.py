"""Feature extraction: a network's output on the fixed view of every image."""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np

from keras_deepcluster.method.pseudo_label_dataset import check_images
from keras_deepcluster.method.views import FixedView, ImageViews
from keras_deepcluster.platform import devices, model_routes, processes
from keras_deepcluster.platform.compilation import compiled


class FeatureExtractor:
    """A network's features on the fixed view of images, compiled once per image shape.

    The fixed view (`FixedView`) runs inside the network's compiled forward
    pass, so only the stored images (uint8 for the usual datasets) cross to
    the device and the host does no resampling. The network runs as one
    compiled stateless function (`compilation.compiled`) fed the current weights,
    batch after batch without waiting: each batch's features are copied to
    the host while the next one computes, into one preallocated float32
    array (N, D), or, with ``on_device=True``, stay on the device as one
    (N, D) tensor for the k-means there. The last batch is zero-padded to
    `batch_size`, so the compiled function sees one input shape; fewer images
    than a batch are padded only to the next power of two (a few shapes, at
    most twice the work, not a whole batch of 256 for 8 images). A model
    distributed over several devices (`devices.data_parallel`) runs through
    Keras's `predict_on_batch`, which splits each batch over them;
    `batch_size` must then be a multiple of their number. With several
    processes (`processes`) each process extracts the images it is given on
    its own first device, with its copy of the weights.

    Args:
        model: Any Keras model taking the views' images (a backbone).
        views: Gives the fixed view (resize, centre crop, normalise).
        flip: Flip the view horizontally (for flip-augmented probes).
        jit_compile: ``"auto"``: jit on JAX, a graph on TensorFlow (XLA only
            with a GPU), eager on PyTorch. True on PyTorch uses
            `torch.compile`: a long compile once per image shape, then a
            faster pass (docs/performance.md), worth it for long runs.
        direct_torch: On PyTorch (without ``jit_compile=True``), run the
            network as direct torch calls where it can (`model_routes.feature_pass`):
            the same features, a fraction of Keras's Python per layer. None:
            True unless ``KERAS_DEEPCLUSTER_DIRECT_TORCH=0``.

    Examples:
        >>> extractor = FeatureExtractor(backbone, ImageViews.for_dataset("mnist"))
        >>> extractor(np.zeros((10, 28, 28), "uint8")).shape
        (10, 84)
    """

    def __init__(
        self,
        model: keras.Model,
        views: ImageViews,
        flip: bool = False,
        jit_compile: bool | str = "auto",
        direct_torch: bool | None = None,
    ):
        self.model = model
        self.views = views
        self.flip = flip
        self.jit_compile = jit_compile
        self.direct_torch = model_routes.direct_torch(direct_torch)
        self.dim = int(np.prod(model.output.shape[1:]))
        self._networks: dict[tuple, tuple] = {}

    def __call__(
        self,
        images: np.ndarray,
        batch_size: int = 256,
        on_batch: Callable[[int, int], None] | None = None,
        on_device: bool = False,
    ):
        """The features (N, D) of `images`: uint8 (N, H, W[, C]) or float in [0, 1].

        Returns a float32 NumPy array, or with `on_device` a tensor on the
        device (a NumPy array when the model is distributed). `on_batch` is
        called as ``on_batch(images_done, images_total)`` after each batch
        (progress display).
        """
        images = check_images(images, self.views.channels)
        dtype = "uint8" if images.dtype == np.uint8 else "float32"
        network, forward = self._network(images.shape[1:], dtype)
        # With several processes each extracts its own images on its own device.
        distributed = devices.replica_count(network) > 1 and processes.process_count() == 1
        weights = [[processes.local(v.value) for v in network.trainable_variables]]
        weights.append([processes.local(v.value) for v in network.non_trainable_variables])
        n = len(images)
        batch_size = _padded_batch_size(n, batch_size, devices.replica_count(network))
        features = None if on_device and not distributed else np.empty((n, self.dim), np.float32)
        on_host, pending = [], None
        padded = np.zeros((batch_size,) + images.shape[1:], dtype)
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

    def _network(self, image_shape: tuple, dtype: str) -> tuple:
        """The view + model network for this input, and its compiled stateless forward pass."""
        key = (image_shape, dtype)
        if key not in self._networks:
            images = keras.Input(image_shape, dtype=dtype)
            view = FixedView(self.views, self.flip)
            network = keras.Model(images, self.model(view(images)), name="feature_extractor")
            outputs = model_routes.feature_pass(
                network, view, self.model, self.direct_torch, self.jit_compile
            )

            def forward(trainable, non_trainable, batch):
                # The batch dimension may be unknown (TensorFlow, traced for several sizes).
                return keras.ops.reshape(outputs(trainable, non_trainable, batch), (-1, self.dim))

            self._networks[key] = (network, compiled(forward, self.jit_compile))
        return self._networks[key]


def extract_features(
    model: keras.Model,
    images: np.ndarray,
    views: ImageViews,
    batch_size: int = 256,
    flip: bool = False,
    on_batch: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Runs `model` in inference mode over the fixed view of `images`, once.

    A one-off `FeatureExtractor` (which see); keep one to extract repeatedly
    without compiling again.

    Returns:
        float32 array (N, D), D the product of the model's output dimensions.
    """
    return FeatureExtractor(model, views, flip)(images, batch_size, on_batch)


def layer_model(backbone: keras.Model, layer: str) -> keras.Model:
    """`backbone` up to its layer `layer`, under the backbone's name.

    What a probe reads (`linear_probe`) and what `DeepCluster(feature_layer=...)`
    clusters.

    Raises:
        ValueError: `backbone` has no such layer (the message lists them).
    """
    names = [each.name for each in backbone.layers]
    if layer not in names:
        raise ValueError(
            f"Backbone {backbone.name!r} has no layer {layer!r}; its layers are: "
            f"{', '.join(names)}."
        )
    return keras.Model(backbone.input, backbone.get_layer(layer).output, name=backbone.name)


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
