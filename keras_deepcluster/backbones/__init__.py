"""Backbones: the networks DeepCluster trains, and how to look them up by name."""

from __future__ import annotations

import inspect

import keras

from keras_deepcluster.backbones import architectures
from keras_deepcluster.backbones.architectures import alexnet, alexnet_micro, lenet
from keras_deepcluster.backbones.initialization import initialize_weights

# MaxPooling2D and SobelFilter are kept for the files that earlier versions saved: imported
# here, they are registered with Keras whenever the backbones are.
from keras_deepcluster.backbones.pooling import MaxPooling2D
from keras_deepcluster.backbones.sobel import SobelFilter, sobel_convolutions
from keras_deepcluster.settings import BACKBONE_LAYERS

# The networks whose layers the Keras-free settings describe, which the recipe checks.
_BUILDERS = {name: getattr(architectures, name) for name in BACKBONE_LAYERS}


def names() -> list[str]:
    """Names accepted by `get`."""
    return sorted(_BUILDERS)


def get(name: str, **kwargs) -> keras.Model:
    """Builds the backbone called `name` (one of `names()`).

    Examples:
        >>> get("lenet", seed=0).output.shape
        (None, 84)
    """
    if name not in _BUILDERS:
        raise ValueError(f"Unknown backbone {name!r}; known backbones: {', '.join(names())}.")
    accepted = inspect.signature(_BUILDERS[name]).parameters
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(
            f"Backbone {name!r} has no option {', '.join(map(repr, unknown))}; "
            f"its options: {', '.join(accepted)}."
        )
    return _BUILDERS[name](**kwargs)


__all__ = [
    "MaxPooling2D",
    "SobelFilter",
    "alexnet",
    "alexnet_micro",
    "get",
    "initialize_weights",
    "lenet",
    "names",
    "sobel_convolutions",
]
