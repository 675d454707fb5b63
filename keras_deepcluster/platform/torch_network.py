"""`TorchNetwork`: a chain of Keras layers run as direct PyTorch calls.

On the PyTorch backend Keras runs every layer through `Layer.__call__`
(argument checks, dtype policy, name scopes, a NHWC <-> NCHW transpose around
each convolution and pooling) and every `keras.ops` function through its own
conversions. For DeepCluster's small networks that Python costs more than the
arithmetic of a step (docs/performance.md, "Host overhead of a training
step"). `TorchNetwork` walks the network once and maps each layer to the torch
function it computes, on the layer's own variables, so a training step's
forward pass is a few dozen torch calls; gradients reach the
Keras variables as usual, so the optimizer, the metrics, saving and resuming
are Keras's. Batch-norm statistics follow Keras's formulas (biased batch
variance, ``moving = momentum * moving + (1 - momentum) * batch``), dropout
is Keras's own (its seed generator, so runs stay reproducible and resumable).
`torch_ops` is the views' operation set (`array_ops`) as direct torch calls.

Only the layers of the package's backbones are mapped, each with the
configurations it has there; for any other network or configuration
`TorchNetwork.of` returns None and the model runs through Keras
(`keras_deepcluster.platform.model_routes` chooses).

Keras is read through its public API only: the chain through `Model.layers` and each
layer's `input` and `output`, the variables through `Variable.value`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import keras
import numpy as np

from keras_deepcluster.backbones.sobel import SOBEL_KERNELS, SobelFilter, is_sobel_front_end

# (layer, NCHW or (batch, features) tensor, training) -> tensor
LayerFunction = Callable[[keras.layers.Layer, "torch.Tensor", bool], "torch.Tensor"]  # noqa: F821


class TorchNetwork:
    """The layers of a single-input chain, each as a torch function.

    The layers see NCHW tensors, whose memory is laid out in one of two ways
    (`LAYOUTS`): ``"channels_last"``, PyTorch's ``torch.channels_last``
    throughout; or ``"channels_last_convolutions"``, plain NCHW memory with
    each convolution run channels-last (its input and output converted).
    `of` chooses by `preferred_layout`.

    Args:
        layers: The chain's layers in order (no input layer).
        functions: The torch function of each layer.
        layout: One of `LAYOUTS`, the one `functions` were made for.
    """

    def __init__(
        self,
        layers: Sequence[keras.layers.Layer],
        functions: Sequence[LayerFunction],
        layout: str,
    ):
        self.layers = tuple(layers)
        self.functions = tuple(functions)
        self.layout = layout
        import torch

        self._memory_format = (
            torch.channels_last if layout == "channels_last" else torch.contiguous_format
        )
        convolutions = [i for i, x in enumerate(self.layers) if isinstance(x, keras.layers.Conv2D)]
        # The layout is set at the first convolution: before it come the NHWC
        # input (channels-last memory) and the Sobel filter (plain memory).
        self._layout_at = convolutions[0] if convolutions else None

    @classmethod
    def of(cls, *models_or_layers, layout: str | None = None) -> TorchNetwork | None:
        """The chain of `models_or_layers` (functional models are expanded), or None.

        None when the backend is not PyTorch, or when any model is not a
        single-input chain or has a layer without a torch function here.

        Args:
            *models_or_layers: Models and layers, in the order they run.
            layout: One of `LAYOUTS`; None for `preferred_layout`'s.
        """
        if keras.backend.backend() != "torch":
            return None
        layers = []
        for item in models_or_layers:
            chain = _chain(item) if isinstance(item, keras.Model) else [item]
            if chain is None:
                return None
            layers += chain
        if layout is None:
            layout = preferred_layout(layers)
        elif layout not in LAYOUTS:
            raise ValueError(f"layout={layout!r} is not one of {', '.join(LAYOUTS)}.")
        functions = [_function(layer, layout) for layer in layers]
        if any(f is None for f in functions):
            return None
        return cls(layers, functions, layout)

    def __call__(self, images, training: bool = False):
        """Runs the chain on NHWC `images` (or flat inputs); returns its output (NHWC if 4-D)."""
        # NHWC memory seen as NCHW is PyTorch's channels_last: no copy.
        x = images.permute(0, 3, 1, 2) if images.ndim == 4 else images
        for i, (layer, function) in enumerate(zip(self.layers, self.functions)):
            if i == self._layout_at:
                x = x.contiguous(memory_format=self._memory_format)
            x = function(layer, x, training)
        return x.permute(0, 2, 3, 1) if x.ndim == 4 else x


LAYOUTS = ("channels_last", "channels_last_convolutions")


def preferred_layout(layers: Sequence[keras.layers.Layer]) -> str:
    """The faster of `LAYOUTS` for a chain of `layers`, by the convolutions' widths.

    At LeNet's widths (6 and 16 filters) plain memory with channels-last
    convolutions is the faster on a CPU, at the AlexNets' (48 filters and
    more) channels-last throughout (docs/performance.md, "Memory layout on
    PyTorch").
    """
    filters = [layer.filters for layer in layers if isinstance(layer, keras.layers.Conv2D)]
    return "channels_last" if filters and min(filters) >= 32 else "channels_last_convolutions"


def _chain(model: keras.Model) -> list[keras.layers.Layer] | None:
    """The layers from `model`'s one input to its one output, if each feeds the next.

    A layer's `input` and `output` are those of its first call, the one that built the
    model for the package's networks; a model built from layers called before elsewhere
    is not seen as a chain (and runs through Keras).
    """
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        return None
    # `layers` leaves out operations that are not layers: the chain check then fails.
    layers = [x for x in model.layers if not isinstance(x, keras.layers.InputLayer)]
    tensor = model.inputs[0]
    for layer in layers:
        if layer.input is not tensor:
            return None
        tensor = layer.output
    return layers if tensor is model.outputs[0] else None


def _linear(activation) -> bool:
    return activation in (None, keras.activations.linear)


def _conv2d(layer, x, training):
    import torch.nn.functional as F

    kernel = layer.kernel.value.permute(3, 2, 0, 1)  # (h, w, in, out) -> (out, in, h, w)
    bias = layer.bias.value if layer.use_bias else None
    return F.conv2d(x, kernel, bias, stride=layer.strides)


def _conv2d_channels_last(layer, x, training):
    import torch

    x = x.contiguous(memory_format=torch.channels_last)
    return _conv2d(layer, x, training).contiguous()


def _batch_norm(layer, x, training):
    import torch.nn.functional as F

    gamma = layer.gamma.value if layer.scale else None
    beta = layer.beta.value if layer.center else None
    moving_mean, moving_variance = layer.moving_mean.value, layer.moving_variance.value
    if not (training and layer.trainable):
        return F.batch_norm(x, moving_mean, moving_variance, gamma, beta, False, 0.0, layer.epsilon)
    count = x.numel() // x.shape[1]
    if count < 2:  # one value per channel, which PyTorch refuses: Keras's zero variance
        return _batch_norm_by_moments(layer, x, gamma, beta)
    # PyTorch's fused kernel (forward and backward, a fraction of the separate
    # reductions' time at small channel counts); with momentum 1 its running
    # statistics are the batch's, the variance unbiased where Keras's is not.
    mean, variance = moving_mean.new_zeros(2, x.shape[1])
    y = F.batch_norm(x, mean, variance, gamma, beta, True, 1.0, layer.epsilon)
    variance = variance * ((count - 1) / count)
    _update_moving_statistics(layer, mean, variance)
    return y


def _batch_norm_by_moments(layer, x, gamma, beta):
    import torch

    variance, mean = torch.var_mean(x, dim=[0] + list(range(2, x.ndim)), correction=0)
    _update_moving_statistics(layer, mean.detach(), variance.detach())
    shape = (1, -1) + (1,) * (x.ndim - 2)
    scale = torch.rsqrt(variance + layer.epsilon)
    if gamma is not None:
        scale = scale * gamma
    shift = -mean * scale
    if beta is not None:
        shift = shift + beta
    return torch.addcmul(shift.reshape(shape), x, scale.reshape(shape))


def _update_moving_statistics(layer, mean, variance):
    """Keras's ``moving = momentum * moving + (1 - momentum) * batch``."""
    for moving, batch in ((layer.moving_mean, mean), (layer.moving_variance, variance)):
        moving.assign(moving.value * layer.momentum + batch * (1 - layer.momentum))


def _relu(layer, x, training):
    import torch.nn.functional as F

    return F.relu(x)


def _max_pool2d(layer, x, training):
    import torch.nn.functional as F

    return F.max_pool2d(x, layer.pool_size, layer.strides)


def _zero_padding2d(layer, x, training):
    import torch.nn.functional as F

    (top, bottom), (left, right) = layer.padding
    return F.pad(x, (left, right, top, bottom))


def _flatten(layer, x, training):
    # Keras flattens NHWC: (row, column, channel) order, which the next Dense expects.
    return x.permute(0, 2, 3, 1).flatten(1) if x.ndim == 4 else x.flatten(1)


def _dense(layer, x, training):
    import torch

    if x.ndim == 2 and layer.use_bias:
        return torch.addmm(layer.bias.value, x, layer.kernel.value)
    if x.ndim == 4:  # on the channels, as Keras's NHWC Dense
        return _dense(layer, x.permute(0, 2, 3, 1), training).permute(0, 3, 1, 2)
    y = x @ layer.kernel.value
    return y + layer.bias.value if layer.use_bias else y


def _dropout(layer, x, training):
    # Keras's own, for its seed generator; on NHWC, so that its masks are Keras's.
    if x.ndim == 4:
        return layer.call(x.permute(0, 2, 3, 1), training=training).permute(0, 3, 1, 2)
    return layer.call(x, training=training)


_SOBEL_KERNELS = {}


def _sobel(layer, x, training):
    """The Sobel front end (or the older `SobelFilter`) as one convolution of the channel mean."""
    import torch
    import torch.nn.functional as F

    key = (x.device, x.dtype)
    if key not in _SOBEL_KERNELS:
        kernel = np.ascontiguousarray(np.transpose(SOBEL_KERNELS, (3, 2, 0, 1)))
        _SOBEL_KERNELS[key] = torch.as_tensor(kernel, dtype=x.dtype, device=x.device)
    return F.conv2d(x.mean(1, keepdim=True), _SOBEL_KERNELS[key], padding=1)


def _function(layer: keras.layers.Layer, layout: str) -> LayerFunction | None:
    """The torch function of `layer` in the configuration it has, or None."""
    if layer.dtype_policy.name != "float32":
        return None
    channels_last = getattr(layer, "data_format", "channels_last") == "channels_last"
    if isinstance(layer, keras.layers.Conv2D):
        simple = layer.padding == "valid" and layer.groups == 1
        plain = tuple(layer.dilation_rate) == (1, 1) and _linear(layer.activation)
        if not (channels_last and simple and plain):
            return None
        return _conv2d if layout == "channels_last" else _conv2d_channels_last
    if isinstance(layer, keras.layers.BatchNormalization):
        channels_axis = layer.axis in (-1, layer.input_spec.ndim - 1)
        return _batch_norm if channels_axis and not layer.renorm else None
    if isinstance(layer, keras.layers.ReLU):
        standard = layer.max_value is None and layer.negative_slope == 0 and layer.threshold == 0
        return _relu if standard else None
    if isinstance(layer, keras.layers.MaxPooling2D):
        return _max_pool2d if channels_last and layer.padding == "valid" else None
    if isinstance(layer, keras.layers.ZeroPadding2D):
        return _zero_padding2d if channels_last else None
    if isinstance(layer, keras.layers.Flatten):
        return _flatten if channels_last else None
    if isinstance(layer, keras.layers.Dense):
        return _dense if _linear(layer.activation) else None
    if isinstance(layer, keras.layers.Dropout):
        return _dropout if layer.noise_shape is None else None
    if is_sobel_front_end(layer) or isinstance(layer, SobelFilter):
        return _sobel
    return None


@functools.cache
def torch_ops() -> TorchOps:
    """The views' operation set as direct torch calls (one, made at the first use)."""
    return TorchOps()


class TorchOps:
    """`array_ops.KerasOps`'s operations as direct torch calls, float32.

    The random view's two dozen small operations without `keras.ops`'s conversions
    around each, which cost more than they compute at small batches.
    """

    def __init__(self):
        import torch

        self._torch = torch
        self.where, self.relu, self.abs, self.einsum = (
            torch.where,
            torch.relu,
            torch.abs,
            torch.einsum,
        )
        self._normalisations = {}  # (mean, std, device) -> tensor (2, channels)

    def arange(self, n: int, like):
        return self._torch.arange(n, dtype=self._torch.float32, device=like.device)

    def maximum(self, x, low: float):
        return self._torch.clamp(x, min=low)

    def both(self, a, b):
        return (a & b).to(self._torch.float32)

    def sum_last(self, x):
        return x.sum(-1, keepdim=True)

    def float32(self, x):
        return x.to(self._torch.float32)

    def unit_float(self, images):
        x = images.to(self._torch.float32)
        return x * (1 / 255) if images.dtype == self._torch.uint8 else x

    def normalise(self, x, mean: tuple[float, ...], std: tuple[float, ...]):
        key = (mean, std, x.device)
        if key not in self._normalisations:  # a copy to the device per step would wait for it
            values = self._torch.tensor(key[:2], dtype=self._torch.float32, device=x.device)
            self._normalisations[key] = values
        mean, std = self._normalisations[key]
        return (x - mean) / std
