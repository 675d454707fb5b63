"""The few array operations the method's formulas are written in, per array library.

The views' resampling (`keras_deepcluster.method.views.window_matrices` and `random_view`)
is written once over an operation set: `NUMPY` runs it on the host in float64 (the fixed
view's matrices), `KERAS` in `keras.ops` (the views inside a compiled network), and the
torch twin's `torch_network.torch_ops()` as direct torch calls. Each set holds only what
differs between the libraries; Python's arithmetic, comparison and indexing operators are
shared. `sum_of_squares` is the weight-decay penalty's sum, in the fewest calls per backend.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from keras import ops


class KerasOps:
    """The operations in `keras.ops`, float32: the interface every operation set provides.

    ``arange``, ``where``, ``maximum``, ``both``, ``relu``, ``abs`` and ``sum_last`` make
    the window matrices; ``unit_float``, ``float32``, ``einsum`` and ``normalise`` the view.
    """

    where = staticmethod(ops.where)
    relu = staticmethod(ops.relu)
    abs = staticmethod(ops.abs)
    einsum = staticmethod(ops.einsum)

    @staticmethod
    def arange(n: int, like):
        """``[0, 1, ..., n - 1]`` as floats, where `like` is (its device)."""
        return ops.arange(n, dtype="float32")

    @staticmethod
    def maximum(x, low: float):
        """`x`, raised to `low` where below it."""
        return ops.maximum(x, low)

    @staticmethod
    def both(a, b):
        """1.0 where the booleans `a` and `b` both hold, else 0.0."""
        return ops.cast(ops.logical_and(a, b), "float32")

    @staticmethod
    def sum_last(x):
        """`x` summed over its last axis, kept as an axis of 1."""
        return ops.sum(x, axis=-1, keepdims=True)

    @staticmethod
    def float32(x):
        return ops.cast(x, "float32")

    @staticmethod
    def unit_float(images):
        """uint8 in [0, 255] or float in [0, 1] -> float32 in [0, 1]."""
        uint8 = keras.backend.standardize_dtype(images.dtype) == "uint8"
        x = ops.cast(images, "float32")
        return x * (1 / 255) if uint8 else x

    @staticmethod
    def normalise(x, mean: tuple[float, ...], std: tuple[float, ...]):
        """``(x - mean) / std`` over the last (channel) axis."""
        mean = ops.convert_to_tensor(np.asarray(mean, np.float32))
        std = ops.convert_to_tensor(np.asarray(std, np.float32))
        return (x - mean) / std


class NumpyOps:
    """The window matrices' operations in NumPy, float64 (the fixed view's, on the host)."""

    where = staticmethod(np.where)
    abs = staticmethod(np.abs)
    both = staticmethod(np.logical_and)  # a boolean factor multiplies as 1.0 or 0.0

    @staticmethod
    def arange(n: int, like) -> np.ndarray:
        return np.arange(n, dtype=np.float64)

    @staticmethod
    def maximum(x: np.ndarray, low: float) -> np.ndarray:
        return np.maximum(x, low)

    @staticmethod
    def relu(x: np.ndarray) -> np.ndarray:
        return np.maximum(0, x)

    @staticmethod
    def sum_last(x: np.ndarray) -> np.ndarray:
        return x.sum(axis=-1, keepdims=True)


KERAS = KerasOps()
NUMPY = NumpyOps()


def sum_of_squares(values: Sequence):
    """``sum(sum(v ** 2) for v in values)`` over tensors (or variables, off PyTorch)."""
    if keras.backend.backend() == "torch":
        import torch

        # One fused norm call for every tensor (PyTorch's own `_foreach` kernels, which
        # have no public name), where keras.ops dispatches two calls per tensor.
        return torch.stack(torch._foreach_norm(values)).square().sum()
    return ops.sum(ops.stack([ops.sum(ops.square(v)) for v in values]))
