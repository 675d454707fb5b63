"""The weight initialisation of DeepCluster, drawn with NumPy from one seed."""

from __future__ import annotations

import keras
import numpy as np

from keras_deepcluster.backbones.sobel import is_sobel_front_end


def conv_initializer() -> keras.initializers.Initializer:
    """N(0, sqrt(2 / (kh * kw * out_channels))): He normal over fan-out."""
    return keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal")


def dense_initializer() -> keras.initializers.Initializer:
    return keras.initializers.RandomNormal(stddev=0.01)


def initialize_weights(model: keras.Model, seed: int) -> keras.Model:
    """Re-draws every conv and dense layer of `model` as DeepCluster does.

    Conv kernels ~ N(0, sqrt(2 / (kh kw out))), dense kernels ~ N(0, 0.01), biases
    0, batch-norm scale 1 and offset 0 with fresh moving statistics; the frozen
    Sobel front end (`sobel_convolutions`) keeps its kernels. The draws
    come from NumPy, so one seed gives the same filters on every Keras backend:
    the seed alone fixes the "random filter quality" that the Deep Dive paper
    studies.

    Examples:
        >>> a = initialize_weights(lenet(), seed=3).get_weights()
        >>> b = initialize_weights(lenet(), seed=3).get_weights()
        >>> all((x == y).all() for x, y in zip(a, b))
        True
    """
    rng = np.random.default_rng(seed)
    for layer in _leaf_layers(model):
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw, _, out = layer.kernel.shape
            std = np.sqrt(2.0 / (kh * kw * out))
            layer.kernel.assign(rng.normal(0, std, layer.kernel.shape).astype("float32"))
        elif isinstance(layer, keras.layers.Dense):
            layer.kernel.assign(rng.normal(0, 0.01, layer.kernel.shape).astype("float32"))
        elif isinstance(layer, keras.layers.BatchNormalization):
            for name, value in (
                ("gamma", 1.0),
                ("beta", 0.0),
                ("moving_mean", 0.0),
                ("moving_variance", 1.0),
            ):
                variable = getattr(layer, name, None)
                if variable is not None:
                    variable.assign(np.full(variable.shape, value, "float32"))
            continue
        else:
            continue
        if layer.use_bias:
            layer.bias.assign(np.zeros(layer.bias.shape, "float32"))
    return model


def _leaf_layers(model):
    """The layers of `model` and its nested models, but the frozen Sobel front end's."""
    for layer in model.layers:
        if is_sobel_front_end(layer):
            continue
        if isinstance(layer, keras.Model):
            yield from _leaf_layers(layer)
        else:
            yield layer
