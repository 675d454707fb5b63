"""Max pooling as the maximum of shifted slices where XLA:CPU pools slowly."""

from __future__ import annotations

import keras
from keras import ops

from keras_deepcluster.platform import devices


@keras.saving.register_keras_serializable(package="keras_deepcluster")
class MaxPooling2D(keras.layers.MaxPooling2D):
    """`keras.layers.MaxPooling2D` that pools by slices on JAX's CPU backend.

    Keras pools with a window reduction, whose gradient XLA:CPU computes with
    select-and-scatter on one core. The same maximum taken over the pool's
    shifted, strided slices (`max_pool_by_slices`) has an element-wise gradient
    that XLA fuses (docs/performance.md, "JAX on the CPU"). Other backends and
    devices, and "same" padding, keep Keras's pooling. Output
    and gradient are Keras's: of several equal maxima in a window, the first
    (in row-major order) gets the gradient.
    """

    def call(self, inputs):
        if (
            self.padding == "valid"
            and self.data_format == "channels_last"
            and keras.backend.backend() == "jax"
            and not devices.accelerator_available()
        ):
            return max_pool_by_slices(inputs, self.pool_size, self.strides)
        return super().call(inputs)


def max_pool_by_slices(inputs, pool_size: tuple[int, int], strides: tuple[int, int]):
    """Max pooling of NHWC `inputs`, "valid" padding, in `keras.ops`.

    The maximum over the ``pool_size[0] * pool_size[1]`` slices
    ``inputs[:, i::strides[0], j::strides[1]]`` cut to the output's size.
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
