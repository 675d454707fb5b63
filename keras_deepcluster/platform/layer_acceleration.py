"""The package's own formulas put into a live model's layers at run time, never saved.

A backbone holds only Keras's layers, so its saved file loads in plain Keras.
`DeepCluster` (built, or loaded from a file) and `runs.build.build_backbone` have it
replace, on the layer instances of their backbone, the `call` of two kinds of layer by the
package's own formula of the same function:

* the Sobel front end (`backbones.sobel.sobel_convolutions`) by
  `sobel_by_slices`, on every backend: the package's Sobel numbers are these
  (XLA:CPU's convolution of one channel is slow), and the PyTorch twin
  (`torch_network`) computes them as one convolution of the channel mean;
* on JAX's CPU backend, "valid" channels-last `MaxPooling2D` by
  `max_pool_by_slices`, whose gradient XLA fuses where Keras's window
  reduction's select-and-scatter runs on one core. Elsewhere pooling stays
  Keras's.

The replacement lives in the instance only: `get_config`, saving and cloning
see Keras's layers (docs/design.md, "The backbones").
"""

from __future__ import annotations

from collections.abc import Iterator

import keras

from keras_deepcluster.backbones.pooling import max_pool_by_slices
from keras_deepcluster.backbones.sobel import is_sobel_front_end, sobel_by_slices
from keras_deepcluster.platform import devices


def accelerate(model: keras.Model) -> keras.Model:
    """Gives `model`'s layers (nested models included) the package's formulas; returns it.

    Outputs are the same function of the inputs and weights; the Sobel front
    end's differ from its convolutions by float rounding. Calling it again
    changes nothing.

    Args:
        model: A built Keras model, a backbone or a model holding one.

    Returns:
        `model` itself.

    Examples:
        >>> backbone = accelerate(backbones.alexnet_micro(seed=0))
        >>> backbone.save("backbone.keras")  # Keras's layers only
    """
    pool_by_slices = keras.backend.backend() == "jax" and not devices.accelerator_available()
    for layer in _layers(model):
        if is_sobel_front_end(layer):
            layer.call = _sobel_call
        elif pool_by_slices and _slices_pool(layer):
            layer.call = _pooling_call(layer.pool_size, layer.strides)
    return model


def _layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    """`model`'s layers, those of its nested models too, a Sobel front end as one."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model) and not is_sobel_front_end(layer):
            yield from _layers(layer)


def _slices_pool(layer: keras.layers.Layer) -> bool:
    return (
        isinstance(layer, keras.layers.MaxPooling2D)
        and layer.padding == "valid"
        and layer.data_format == "channels_last"
    )


def _sobel_call(inputs, training=None, mask=None):
    """The front end's `keras.Sequential.call`, as `sobel_by_slices`."""
    return sobel_by_slices(inputs)


def _pooling_call(pool_size: tuple[int, int], strides: tuple[int, int]):
    def call(inputs):
        return max_pool_by_slices(inputs, pool_size, strides)

    return call
