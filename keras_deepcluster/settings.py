"""The settings of DeepCluster: each one's rule and shared default, checked in one place.

A `Setting` is a setting's type, range and fixed set of values; `Setting.check` is its one
check, whose message completes the setting's name ("must be >= 2; got 1.", "= 'x' is not one
of a, b."). The recipe (`keras_deepcluster.runs.recipe.Recipe`) checks each of its keys with
it, and the library objects check their keywords with `check_setting`, so a value breaks the same
rule with the same words wherever it is given. `SETTINGS` holds the settings that the recipe
and the library objects both take, under the library's keyword; `RECIPE_KEYS` names those the
recipe (its TOML key and the command line's option) calls otherwise. The defaults they share
are the constants below: the recipe is where the front ends take every default from, and a
library keyword that has a default has this one.

Keras-free, so that the command line checks its options before Keras is imported; so are the
fixed sets of values the Keras modules use (k-means and PCA back ends, the backbones and their
layers, the views' presets), which live here for both.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import warnings
from collections.abc import Callable
from typing import Any

KMEANS_BACKENDS = ("auto", "faiss", "sklearn", "keras")
PCA_BACKENDS = ("faiss", "sklearn")

# The shared defaults. Both DeepCluster codes run 20 Lloyd iterations per clustering.
KMEANS_ITERATIONS = 20
KMEANS_BACKEND = "auto"
PCA_BACKEND = "faiss"
HALT_PATIENCE = 3
# Images per device in each feature-extraction batch.
FEATURE_BATCH_SIZE = 256

# Per-dataset normalisation of the authors' code (reference digest, section 3), the
# `ImageViews` presets. CIFAR-10 deliberately reuses the SVHN constants, as every
# paper-era job did.
VIEW_PRESETS = {
    "mnist": dict(resize=44, mean=(0.1307,), std=(0.3081,)),
    "fashion_mnist": dict(resize=44, mean=(0.2860,), std=(0.3205,)),
    "svhn": dict(resize=45, mean=(0.437, 0.443, 0.472), std=(0.198, 0.201, 0.197)),
    "cifar10": dict(resize=45, mean=(0.437, 0.443, 0.472), std=(0.198, 0.201, 0.197)),
    # FB's DeepCluster trains on ImageNet with RandomResizedCrop(224) + RandomHorizontalFlip.
    "imagenet": dict(
        size=224, resize=256, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), flip=True
    ),
}

# Each backbone's layers, as `keras_deepcluster.backbones` builds them with batch norm and
# Sobel on (a linear probe taps one of them by name); the backbones are the keys.
_ALEXNET_MICRO = (
    "sobel", "conv_1", "batch_norm_1", "relu_1", "max_pool_1", "conv_2", "batch_norm_2",
    "relu_2", "max_pool_2", "conv_3", "batch_norm_3", "relu_3", "conv_4", "batch_norm_4",
    "relu_4", "conv_5", "batch_norm_5", "relu_5", "max_pool_3", "drop_out_1", "flatten",
    "linear_1", "relu_6", "drop_out_2", "linear_2",
)  # fmt: skip
BACKBONE_LAYERS = {
    "lenet": (
        "conv_1", "batch_norm_1", "relu_1", "max_pool_1", "conv_2", "batch_norm_2", "relu_2",
        "max_pool_2", "flatten", "linear_1", "relu_3", "linear_2",
    ),
    "alexnet_micro": _ALEXNET_MICRO,
    # The ImageNet AlexNet pads before each convolution, as PyTorch's padding does.
    "alexnet": _ALEXNET_MICRO[:1]
    + tuple(
        layer for name in _ALEXNET_MICRO[1:] for layer in
        ((f"zero_pad_{name[-1]}", name) if name.startswith("conv_") else (name,))
    ),
}  # fmt: skip
# The backbones that have a Sobel layer (on by default).
SOBEL_BACKBONES = tuple(name for name, layers in BACKBONE_LAYERS.items() if "sobel" in layers)


def backbone_layers(backbone: str, batch_norm: bool = True, sobel: bool | None = None) -> list[str]:
    """The layer names of a backbone built with these settings (input layer left out)."""
    layers = BACKBONE_LAYERS[backbone]
    if not batch_norm:
        layers = [name for name in layers if not name.startswith("batch_norm_")]
    if sobel is False:
        layers = [name for name in layers if name != "sobel"]
    return list(layers)


class SettingError(ValueError):
    """A value a setting does not allow; the message completes the setting's name."""


_BOUNDS = {
    ">= 0": lambda v: v >= 0,
    ">= 1": lambda v: v >= 1,
    ">= 2": lambda v: v >= 2,
    "> 0": lambda v: v > 0,
    "in [0, 1)": lambda v: 0 <= v < 1,
    "in (0, 1]": lambda v: 0 < v <= 1,
}
_ARTICLES = {int: "an integer", float: "a finite number", str: "a string", bool: "true or false"}


@dataclasses.dataclass(frozen=True)
class Setting:
    """The rule of one setting.

    Attributes:
        kind: ``int``, ``float``, ``str`` or ``bool`` (a float setting takes integers too);
            None for a setting that only its `choices` decide.
        bound: The range of a number, one of ``">= 0"``, ``">= 1"``, ``">= 2"``, ``"> 0"``,
            ``"in [0, 1)"`` or ``"in (0, 1]"``; empty for none.
        choices: The values allowed; empty for any of the kind.
        optional: Whether None (off) is allowed.
    """

    kind: type | None
    bound: str = ""
    choices: tuple = ()
    optional: bool = False

    def check(self, value: Any, none: str = "", choices: bool = True) -> None:
        """Raises SettingError unless `value` is allowed.

        Args:
            value: The value.
            none: How the message names None, where it is allowed (``"None"`` for a
                keyword); empty leaves it unnamed (a recipe leaves the key out).
            choices: Whether to check the `choices` too, not only the type and range.
        """
        if value is None and self.optional:
            return
        if not _has_kind(value, self.kind):
            raise SettingError(
                f"must be {self._or_none(_ARTICLES[self.kind], none)}; got {value!r}."
            )
        if self.bound and not _BOUNDS[self.bound](value):
            raise SettingError(f"must be {self._or_none(self.bound, none)}; got {value!r}.")
        # Booleans apart: 1 == True, and some choices mix strings and booleans.
        if (
            choices
            and self.choices
            and not any(
                isinstance(value, bool) == isinstance(choice, bool) and value == choice
                for choice in self.choices
            )
        ):
            allowed = ", ".join(map(str, self.choices))
            raise SettingError(f"= {value!r} is not one of {self._or_none(allowed, none)}.")

    def _or_none(self, allowed: str, none: str) -> str:
        return f"{allowed} or {none}" if none and self.optional else allowed


def _has_kind(value: Any, kind: type | None) -> bool:
    if kind is None:
        return True
    if isinstance(value, bool):
        return kind is bool
    if kind is int:
        return isinstance(value, numbers.Integral)
    if kind is float:
        return isinstance(value, numbers.Real) and math.isfinite(value)
    return isinstance(value, kind)


# The settings of the library objects, by keyword; those the recipe also takes are checked
# there with the same `Setting`.
SETTINGS = {
    "num_clusters": Setting(int, ">= 2"),
    "weight_decay": Setting(float, ">= 0"),
    "pca_dim": Setting(int, ">= 1", optional=True),
    "pca_backend": Setting(str, choices=PCA_BACKENDS),
    "kmeans_backend": Setting(str, choices=KMEANS_BACKENDS),
    "kmeans_iterations": Setting(int, ">= 1"),
    "halt_after": Setting(int, ">= 1", optional=True),
    "halt_when_stable": Setting(float, "in (0, 1]", optional=True),
    "halt_patience": Setting(int, ">= 1"),
    "seed": Setting(int, ">= 0"),
    "feature_batch_size": Setting(int, ">= 1"),
    "feature_jit_compile": Setting(None, choices=("auto", True, False)),
}
# The recipe's names (TOML key, command-line option) for the library keywords it names
# otherwise: short, as a user writes them.
RECIPE_KEYS = {"num_clusters": "clusters", "pca_dim": "pca", "kmeans_backend": "kmeans"}


def check_setting(keyword: str, value: Any) -> None:
    """Raises ValueError, naming `keyword`, unless `value` is allowed for that setting.

    Args:
        keyword: A key of `SETTINGS`, the library's name of the setting.
        value: The value given.

    Examples:
        >>> check_setting("kmeans_iterations", 0)
        Traceback (most recent call last):
        ValueError: kmeans_iterations must be >= 1; got 0.
    """
    try:
        SETTINGS[keyword].check(value, none="None")
    except SettingError as error:
        raise ValueError(f"{keyword} {error}") from None


def renamed_keywords(**new_names: str) -> Callable[[Callable], Callable]:
    """Lets a function's renamed keywords (``old=new``) still be passed by their old names.

    The old name gives a `DeprecationWarning` and the value goes to the new one, so a
    setting keeps one name from the recipe to the functions that take it.

    Examples:
        >>> @renamed_keywords(k="num_clusters")
        ... def f(num_clusters):
        ...     return num_clusters
        >>> f(k=3)  # warns: k is now num_clusters
        3
    """

    def rename(function: Callable) -> Callable:
        @functools.wraps(function)
        def with_old_names(*args, **kwargs):
            for old, new in new_names.items():
                if old not in kwargs:
                    continue
                if new in kwargs:
                    raise TypeError(f"{function.__name__}() got both {old}= and {new}=.")
                warnings.warn(
                    f"{function.__name__}({old}=...) is now {function.__name__}({new}=...); "
                    "the old name will be removed in a future version.",
                    DeprecationWarning,
                    stacklevel=2,
                )
                kwargs[new] = kwargs.pop(old)
            return function(*args, **kwargs)

        return with_old_names

    return rename
