"""The frozen grayscale + Sobel front end of DeepCluster's AlexNets."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

# Sobel kernels of the original DeepCluster (x and y derivatives), (3, 3, 1, 2).
SOBEL_KERNELS = np.stack(
    [
        np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], np.float32),
        np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], np.float32),
    ],
    axis=-1,
)[:, :, None, :]


def sobel_convolutions(input_shape: tuple, name: str = "sobel") -> keras.Sequential:
    """The Sobel front end as two frozen built-in convolutions.

    A 1x1 convolution averaging the channels (grayscale), then a 3x3 one
    with the two Sobel kernels and zero padding: layers that plain Keras
    loads and that ONNX and LiteRT converters know. Input (B, H, W, 1 or 3),
    output (B, H, W, 2). The kernels are frozen, and `initialize_weights`
    leaves them alone, so nothing trains or re-draws them. (The Deep Dive
    code's Sobel layers were overwritten by its random initialisation; this
    computes real Sobel, as the original DeepCluster did.) The package runs
    it as `sobel_by_slices` (`platform.layer_acceleration.accelerate`).

    Args:
        input_shape: ``(height, width, channels)`` of the images it takes;
            height and width may be None.
        name: The name of the returned `keras.Sequential`.

    Examples:
        >>> sobel_convolutions((8, 8, 3))(np.zeros((1, 8, 8, 3), "float32")).shape
        (1, 8, 8, 2)
    """
    # Zeros, not Keras's random default: a random initializer would draw a seed from Python's
    # global generator and so change the dropout seeds of the layers built after it.
    gray = keras.layers.Conv2D(
        1, 1, use_bias=False, kernel_initializer="zeros", trainable=False, name=f"{name}_gray"
    )
    sobel = keras.layers.Conv2D(
        2,
        3,
        padding="same",
        use_bias=False,
        kernel_initializer="zeros",
        trainable=False,
        name=f"{name}_kernels",
    )
    network = keras.Sequential([keras.Input(tuple(input_shape)), gray, sobel], name=name)
    for layer, kernel in zip((gray, sobel), _front_end_kernels(input_shape[-1])):
        layer.set_weights([kernel])
    return network


def is_sobel_front_end(layer: keras.layers.Layer) -> bool:
    """Whether `layer` computes what `sobel_convolutions` makes, with its kernels."""
    if not isinstance(layer, keras.Sequential) or len(layer.layers) != 2:
        return False
    gray, sobel = layer.layers
    if not all(isinstance(conv, keras.layers.Conv2D) and _plain(conv) for conv in (gray, sobel)):
        return False
    if (gray.padding, sobel.padding) != ("valid", "same"):
        return False
    expected = _front_end_kernels(gray.kernel.shape[2])
    kernels = [ops.convert_to_numpy(conv.kernel) for conv in (gray, sobel)]
    return all(k.shape == e.shape and np.array_equal(k, e) for k, e in zip(kernels, expected))


def sobel_by_slices(inputs):
    """Grayscale (channel mean) and the two Sobel filters of NHWC `inputs`, in `keras.ops`.

    Each Sobel kernel is a [1, 2, 1] smoothing times a [1, 0, -1] difference,
    so the filters are sums of shifted slices, which XLA fuses (its CPU
    convolution of a single channel is slow). The package's own Sobel numbers
    are these, on every backend. Output (B, H, W, 2), zero padding of one pixel.
    """
    gray = ops.pad(ops.mean(inputs, axis=-1), ((0, 0), (1, 1), (1, 1)))
    up, middle, down = gray[:, :-2], gray[:, 1:-1], gray[:, 2:]
    smoothed, differenced = up + 2 * middle + down, up - down
    sobel_x = smoothed[:, :, :-2] - smoothed[:, :, 2:]
    sobel_y = differenced[:, :, :-2] + 2 * differenced[:, :, 1:-1] + differenced[:, :, 2:]
    return ops.stack([sobel_x, sobel_y], axis=-1)


@keras.saving.register_keras_serializable(package="keras_deepcluster")
class SobelFilter(keras.layers.Layer):
    """The Sobel front end as one weightless layer, kept so that older files load.

    Backbones saved by earlier versions of the package hold it; new ones hold
    `sobel_convolutions` instead, which plain Keras loads. It computes
    `sobel_by_slices`. Input (B, H, W, 1 or 3), output (B, H, W, 2).

    Examples:
        >>> SobelFilter()(np.zeros((1, 8, 8, 3), "float32")).shape
        (1, 8, 8, 2)
    """

    def call(self, inputs):
        return sobel_by_slices(inputs)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (2,)


def _front_end_kernels(channels: int) -> list[np.ndarray]:
    """The kernels of `sobel_convolutions`: channel mean, then the Sobel filters."""
    return [np.full((1, 1, channels, 1), 1 / channels, np.float32), SOBEL_KERNELS]


def _plain(conv: keras.layers.Conv2D) -> bool:
    """A stride-1, undilated, ungrouped, bias-free, linear NHWC convolution."""
    return (
        tuple(conv.strides) == (1, 1)
        and tuple(conv.dilation_rate) == (1, 1)
        and conv.groups == 1
        and not conv.use_bias
        and conv.activation in (None, keras.activations.linear)
        and conv.data_format == "channels_last"
        and conv.built
    )
