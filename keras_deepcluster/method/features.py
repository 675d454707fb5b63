"""Feature extraction: a network's output on the fixed view of every image."""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np

from keras_deepcluster.method.pseudo_label_dataset import check_images
from keras_deepcluster.method.views import FixedView, ImageViews
from keras_deepcluster.platform import batched_inference, model_routes
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
    (N, D) tensor for the k-means there. Batching, padding, several devices and
    several processes are `platform.batched_inference.run`'s.

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
        return batched_inference.run(
            network, forward, images, dtype, self.dim, batch_size, on_batch, on_device
        )

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
