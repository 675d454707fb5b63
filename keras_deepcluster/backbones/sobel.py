"""A frozen grayscale + Sobel front end (the input of DeepCluster's AlexNets)."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

# Sobel kernels of the original DeepCluster (x and y derivatives).
_SOBEL = np.stack(
    [
        np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], np.float32),
        np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], np.float32),
    ],
    axis=-1,
)[:, :, None, :]  # (3, 3, 1, 2)


@keras.saving.register_keras_serializable(package="keras_deepcluster")
class SobelFilter(keras.layers.Layer):
    """Grayscale (channel mean) followed by the two 3x3 Sobel filters.

    It has no weights: the kernels are constants, so nothing can train or
    re-initialise them. (The Deep Dive code's Sobel layers were overwritten by
    its random weight initialisation; this layer computes real Sobel, as the
    original DeepCluster did.) Input (B, H, W, 1 or 3), output (B, H, W, 2),
    zero padding of one pixel.

    Examples:
        >>> SobelFilter()(np.zeros((1, 8, 8, 3), "float32")).shape
        (1, 8, 8, 2)
    """

    def call(self, inputs):
        # Each Sobel kernel is a [1, 2, 1] smoothing times a [1, 0, -1] difference, so the
        # filters are sums of shifted slices, which XLA fuses; its CPU convolution of a single
        # channel is slow (numbers in docs/performance.md).
        gray = ops.pad(ops.mean(inputs, axis=-1), ((0, 0), (1, 1), (1, 1)))
        up, middle, down = gray[:, :-2], gray[:, 1:-1], gray[:, 2:]
        smoothed, differenced = up + 2 * middle + down, up - down
        sobel_x = smoothed[:, :, :-2] - smoothed[:, :, 2:]
        sobel_y = differenced[:, :, :-2] + 2 * differenced[:, :, 1:-1] + differenced[:, :, 2:]
        return ops.stack([sobel_x, sobel_y], axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (2,)


def sobel_convolutions(channels: int, name: str = "sobel") -> keras.Sequential:
    """`SobelFilter` as two frozen built-in convolutions, for a model without this package.

    A 1x1 convolution averaging the `channels` channels (grayscale), then a
    3x3 one with the two Sobel kernels and zero padding: what `SobelFilter`
    computes (up to float rounding), in layers that plain Keras loads and
    that ONNX and LiteRT converters know.

    Args:
        channels: The channels of the images it takes (1 or 3).
        name: The name of the returned `keras.Sequential`.
    """
    gray = keras.layers.Conv2D(1, 1, use_bias=False, trainable=False, name=f"{name}_gray")
    sobel = keras.layers.Conv2D(
        2, 3, padding="same", use_bias=False, trainable=False, name=f"{name}_kernels"
    )
    network = keras.Sequential([keras.Input((None, None, channels)), gray, sobel], name=name)
    gray.set_weights([np.full((1, 1, channels, 1), 1 / channels, np.float32)])
    sobel.set_weights([_SOBEL])
    return network
