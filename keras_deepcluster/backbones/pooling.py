"""Max pooling by shifted slices, and the pooling layer that older saved files name."""

from __future__ import annotations

import keras
from keras import ops


def max_pool_by_slices(inputs, pool_size: tuple[int, int], strides: tuple[int, int]):
    """Max pooling of NHWC `inputs`, "valid" padding, in `keras.ops`.

    The maximum over the ``pool_size[0] * pool_size[1]`` slices
    ``inputs[:, i::strides[0], j::strides[1]]`` cut to the output's size.
    Output and gradient are `keras.layers.MaxPooling2D`'s: of several equal
    maxima in a window, the first (in row-major order) gets the gradient.
    Its gradient is element-wise, which XLA fuses, where that of Keras's
    window reduction is a select-and-scatter that XLA:CPU runs on one core
    (`platform.layer_acceleration.accelerate` uses it there).
    """
    (pool_h, pool_w), (stride_h, stride_w) = pool_size, strides
    out_h = (inputs.shape[1] - pool_h) // stride_h + 1
    out_w = (inputs.shape[2] - pool_w) // stride_w + 1
    pooled = None
    for i in range(pool_h):
        for j in range(pool_w):
            window = inputs[
                :,
                i : i + stride_h * (out_h - 1) + 1 : stride_h,
                j : j + stride_w * (out_w - 1) + 1 : stride_w,
                :,
            ]
            # Strictly greater: of equal maxima the first keeps the gradient, as Keras's.
            pooled = window if pooled is None else ops.where(window > pooled, window, pooled)
    return pooled


@keras.saving.register_keras_serializable(package="keras_deepcluster")
class MaxPooling2D(keras.layers.MaxPooling2D):
    """`keras.layers.MaxPooling2D` under the package's name, kept so that older files load.

    Backbones saved by earlier versions of the package hold it; new ones hold
    Keras's own layer. It is Keras's layer in every way.
    """
