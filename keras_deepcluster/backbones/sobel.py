"""A frozen grayscale + Sobel front end (the input of DeepCluster's AlexNets)."""

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
        gray = ops.mean(inputs, axis=-1, keepdims=True)
        kernel = ops.convert_to_tensor(_SOBEL, dtype=inputs.dtype)
        return ops.conv(gray, kernel, strides=1, padding="same")

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (2,)
