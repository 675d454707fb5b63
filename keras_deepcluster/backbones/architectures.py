"""The networks of the Deep Dive paper and of the original DeepCluster.

Layers are named as in the authors' code (``conv_i``, ``batch_norm_i``,
``relu_i``, ``max_pool_i``, ``drop_out_i``, ``linear_i``, one counter per
type) so a linear probe can tap them by name. Each network's output is its
clustering feature: the last dense layer, before any ReLU. PyTorch padding is
reproduced with explicit `ZeroPadding2D` and "valid" convolutions/pools.
Every layer is Keras's own, so a saved backbone loads in plain Keras; the
package's faster formulas for some of them are put in at run time
(`platform.layer_acceleration.accelerate`).
"""

from __future__ import annotations

import collections

import keras

from keras_deepcluster.backbones.initialization import (
    conv_initializer,
    dense_initializer,
    initialize_weights,
)
from keras_deepcluster.backbones.sobel import sobel_convolutions
from keras_deepcluster.platform import devices


class _Stack:
    """Appends named layers to a functional graph, one counter per layer type."""

    def __init__(self, inputs, batch_norm: bool):
        self.x = inputs
        self.batch_norm = batch_norm
        self._counts = collections.Counter()

    def _name(self, kind):
        self._counts[kind] += 1
        return f"{kind}_{self._counts[kind]}"

    def add(self, kind, layer_fn):
        self.x = layer_fn(self._name(kind))(self.x)

    def conv(self, filters, kernel, stride=1, padding=0):
        if padding:
            self.add("zero_pad", lambda n: keras.layers.ZeroPadding2D(padding, name=n))
        self.add(
            "conv",
            lambda n: keras.layers.Conv2D(
                filters, kernel, stride, kernel_initializer=conv_initializer(), name=n
            ),
        )
        if self.batch_norm:
            # PyTorch BatchNorm2d: momentum 0.1 (Keras 0.9), eps 1e-5.
            self.add(
                "batch_norm",
                # Statistics of the whole batch under a TensorFlow strategy too,
                # as on one device and on JAX.
                lambda n: keras.layers.BatchNormalization(
                    momentum=0.9,
                    epsilon=1e-5,
                    synchronized=devices.strategy_replicas() > 1,
                    name=n,
                ),
            )
        self.add("relu", lambda n: keras.layers.ReLU(name=n))

    def max_pool(self, size, stride):
        self.add("max_pool", lambda n: keras.layers.MaxPooling2D(size, stride, name=n))

    def dropout(self, rate):
        self.add("drop_out", lambda n: keras.layers.Dropout(rate, name=n))

    def linear(self, units, relu):
        if len(self.x.shape) > 2:
            self.x = keras.layers.Flatten(name="flatten")(self.x)
        self.add(
            "linear",
            lambda n: keras.layers.Dense(units, kernel_initializer=dense_initializer(), name=n),
        )
        if relu:
            self.add("relu", lambda n: keras.layers.ReLU(name=n))


def _model(stack, inputs, name, seed):
    model = keras.Model(inputs, stack.x, name=name)
    return model if seed is None else initialize_weights(model, seed)


def lenet(input_shape=(32, 32, 1), batch_norm: bool = True, seed: int | None = None) -> keras.Model:
    """LeNet-5 with batch norm, the MNIST / Fashion-MNIST network (84-d features).

    Probe tap of the paper: ``conv_2`` (16x10x10 = 1600, before batch norm).

    Args:
        input_shape: (H, W, C) of the input, 32x32x1 in the paper.
        batch_norm: Batch norm after each convolution.
        seed: Seed of the weights (see `initialize_weights`); None keeps Keras's
            own draws from the same distributions.
    """
    inputs = keras.Input(input_shape, name="image")
    s = _Stack(inputs, batch_norm)
    s.conv(6, 5)
    s.max_pool(2, 2)
    s.conv(16, 5)
    s.max_pool(2, 2)
    s.linear(120, relu=True)
    s.linear(84, relu=False)
    return _model(s, inputs, "lenet", seed)


def alexnet_micro(
    input_shape=(32, 32, 3),
    sobel: bool = True,
    batch_norm: bool = True,
    seed: int | None = None,
) -> keras.Model:
    """The small AlexNet of the Deep Dive paper (SVHN, CIFAR-10), 1024-d features.

    Probe tap of the paper: ``relu_5`` (128x2x2 = 512).
    """
    inputs = keras.Input(input_shape, name="image")
    s = _Stack(inputs, batch_norm)
    if sobel:
        s.x = sobel_convolutions(input_shape, name="sobel")(s.x)
    s.conv(48, 8, stride=3)
    s.max_pool(2, 1)
    s.conv(126, 2)
    s.max_pool(2, 1)
    s.conv(192, 3)
    s.conv(192, 2)
    s.conv(128, 2)
    s.max_pool(2, 1)
    s.dropout(0.5)
    s.linear(1024, relu=True)
    s.dropout(0.5)
    s.linear(1024, relu=False)
    return _model(s, inputs, "alexnet_micro", seed)


def alexnet(
    input_shape=(224, 224, 3),
    sobel: bool = True,
    batch_norm: bool = True,
    seed: int | None = None,
) -> keras.Model:
    """The ImageNet AlexNet of DeepCluster (Caron et al., 2018), 4096-d features."""
    inputs = keras.Input(input_shape, name="image")
    s = _Stack(inputs, batch_norm)
    if sobel:
        s.x = sobel_convolutions(input_shape, name="sobel")(s.x)
    s.conv(96, 11, stride=4, padding=2)
    s.max_pool(3, 2)
    s.conv(256, 5, padding=2)
    s.max_pool(3, 2)
    s.conv(384, 3, padding=1)
    s.conv(384, 3, padding=1)
    s.conv(256, 3, padding=1)
    s.max_pool(3, 2)
    s.dropout(0.5)
    s.linear(4096, relu=True)
    s.dropout(0.5)
    s.linear(4096, relu=False)
    return _model(s, inputs, "alexnet", seed)
