"""The seam between the method and the backend: each model's route, chosen once.

`DeepCluster` and `FeatureExtractor` ask their route for what may run other than through
Keras's own calls: the operations the random view is computed with, the training forward
pass, the training step, and the forward pass of feature extraction. `KerasRoute` is
Keras's calls on every backend. `TorchRoute`, on PyTorch where the network is a chain of
layers `TorchNetwork` knows, runs them as direct torch calls on the same variables
(`torch_network`, `torch_step`): the same numbers within float rounding, a fraction of
Keras's Python per step (docs/design.md, "PyTorch: the forward pass as direct torch calls").
``direct_torch=False``, or the environment variable ``KERAS_DEEPCLUSTER_DIRECT_TORCH=0``
where `direct_torch` is left None (the command line), keeps Keras's route.

Keras is reached through its public API only (the chain through `Model.layers` and each
layer's `input`/`output`, the loss tracker among `Model.metrics`, a `Mean`'s ``total`` and
``count`` variables). Private names that remain, for want of a public equivalent:
``torch._foreach_add_`` (`torch_step`) and ``torch._foreach_norm``
(`array_ops.sum_of_squares`), PyTorch's fused kernels over a list of tensors, whose public
form is a Python loop of one call per tensor, the cost these routes exist to remove.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import keras

from keras_deepcluster.platform import array_ops, torch_step
from keras_deepcluster.platform.torch_network import TorchNetwork, torch_ops

DIRECT_TORCH_ENV = "KERAS_DEEPCLUSTER_DIRECT_TORCH"


def direct_torch(value: bool | None = None) -> bool:
    """`value`, or where None the default: True unless ``KERAS_DEEPCLUSTER_DIRECT_TORCH``
    is 0, false or no."""
    if value is not None:
        return bool(value)
    return os.environ.get(DIRECT_TORCH_ENV, "1").strip().lower() not in ("0", "false", "no")


class KerasRoute:
    """Keras's own calls: views in `keras.ops`, the layers' calls, Keras's training step.

    Args:
        layers: The layers (or models) of the forward pass, in order.
    """

    xp = array_ops.KERAS  # the array operations the random view is computed with

    def __init__(self, layers: Sequence[keras.layers.Layer]):
        self.layers = tuple(layers)

    def for_inputs(self, inputs) -> KerasRoute:
        """The route for a call on `inputs`."""
        return self

    def forward(self, inputs, training: bool = False):
        """The layers' calls on `inputs`, in order."""
        for layer in self.layers:
            inputs = layer(inputs, training=training)
        return inputs

    def train_step(self, keras_step: Callable[..., dict], *args) -> dict:
        """One training step: `keras_step` (the model's Keras `train_step`) on `args`."""
        return keras_step(*args)


class TorchRoute(KerasRoute):
    """On PyTorch: the random view and the training forward pass as direct torch calls and,
    with the default loss, Keras's PyTorch step in fewer calls (`torch_step`).

    Inference stays Keras's calls, and so does a call on symbolic tensors (Keras
    building the model).

    Args:
        model: The compiled (or not yet compiled) `DeepCluster` whose route this is.
        layers: The layers (or models) of its forward pass, in order.
        network: Their `TorchNetwork`.
    """

    def __init__(self, model: keras.Model, layers: Sequence[keras.layers.Layer], network):
        super().__init__(layers)
        self.model = model
        self.network = network
        self.xp = torch_ops()
        self.keras = KerasRoute(layers)
        # Where None, Keras's step (a loss of the user's, layer losses, loss scaling).
        self.loss_tracker = torch_step.loss_tracker(model)

    def for_inputs(self, inputs) -> KerasRoute:
        return self.keras if isinstance(inputs, keras.KerasTensor) else self

    def forward(self, inputs, training: bool = False):
        return self.network(inputs, training=True) if training else super().forward(inputs)

    def train_step(self, keras_step: Callable[..., dict], data) -> dict:
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if self.loss_tracker is None or sample_weight is not None or y is None:
            return keras_step(data)
        return torch_step.train_step(self.model, x, y, self.loss_tracker)


def training_route(
    model: keras.Model, layers: Sequence[keras.layers.Layer], direct_torch: bool
) -> KerasRoute:
    """The route of `model`, whose forward pass runs `layers` in order.

    `TorchRoute` on PyTorch with `direct_torch` where the layers make a chain that
    `TorchNetwork` knows; else `KerasRoute`. Choose again after `compile` (the
    training step depends on the loss and the optimizer).
    """
    network = TorchNetwork.of(*layers) if direct_torch else None
    return KerasRoute(layers) if network is None else TorchRoute(model, layers, network)


def feature_pass(
    network: keras.Model,
    view: keras.layers.Layer,
    model: keras.Model,
    direct_torch: bool,
    jit_compile: bool | str,
) -> Callable:
    """`network` (`view` then `model`) in inference, as ``f(trainable, non_trainable, x)``.

    Keras's `stateless_call` on the given weights, which `compilation.compiled` compiles
    by `jit_compile`; on PyTorch with `direct_torch` (and without ``jit_compile=True``,
    `torch.compile`, which needs Keras's calls), where `model` is a chain `TorchNetwork`
    knows, `view`'s Keras call then `model`'s direct torch calls, which read the variables
    themselves (their values are the weights given).
    """
    direct = TorchNetwork.of(model) if direct_torch and jit_compile is not True else None

    def keras_calls(trainable, non_trainable, x):
        return network.stateless_call(trainable, non_trainable, x)[0]

    def direct_calls(trainable, non_trainable, x):
        return direct(view(x))

    return keras_calls if direct is None else direct_calls
