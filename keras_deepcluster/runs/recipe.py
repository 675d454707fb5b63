"""Recipes: the complete, validated settings of a DeepCluster run, read from TOML.

A recipe is a TOML file with a ``description`` (and optionally a ``name``;
by default the file's stem) and the sections ``[data]``,
``[model]``, ``[training]``, ``[clustering]`` and ``[probe]``. The bundled ones
live in the repository's top-level ``recipes/`` folder, installed as the
package ``keras_deepcluster.recipes``; a path to any ``.toml`` file works too,
e.g. the ``config.toml`` of an earlier run.
Every key is checked on load: an unknown key, a wrong type or a value out of
range is an error naming the key and the file. TOML has no null, so an
optional setting (``pca``, ``halt_after``, ...) is off when its key is absent.

This module itself does not import keras: the registries its `CHOICES` name
do, and tests/test_recipe.py checks the two agree.

Examples:
    >>> recipe = load_recipe("fashion_mnist").replace(clusters=10, epochs=3)
    >>> recipe.lr, recipe.clusters
    (0.1, 10)
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import math
from pathlib import Path
from typing import Any

import tomllib

from keras_deepcluster.data.file_names import escape, unescape

SECTIONS = ("data", "model", "training", "clustering", "probe")
# The settings that are paths (escaped in TOML).
_PATHS = {"data_dir", "check_labels", "tensorboard"}

# The settings with a fixed set of values, checked when a recipe loads (before
# any data is read). The registries they name (data.SOURCES,
# clustering.KMEANS_BACKENDS, backbones.names(), ImageViews.presets() and the
# backbones' layers) import keras, so they are listed here; tests/test_recipe.py
# checks that each list equals its registry.
CHOICES = {
    "source": ("tfds", "idx", "npz", "folder", "digits", "cache"),
    "kmeans": ("auto", "faiss", "sklearn", "keras"),
    "backbone": ("alexnet", "alexnet_micro", "lenet"),
    "views": ("cifar10", "fashion_mnist", "imagenet", "mnist", "svhn"),
    "labels": ("auto", "inferred", "none"),  # data.source_splits.LABEL_MODES
}
# Each backbone's layers with batch norm and Sobel on (the probe taps one of them).
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
    "alexnet": _ALEXNET_MICRO[:1]
    + tuple(
        layer for name in _ALEXNET_MICRO[1:] for layer in
        ((f"zero_pad_{name[-1]}", name) if name.startswith("conv_") else (name,))
    ),
}  # fmt: skip
# The backbones that have a Sobel layer (on by default).
SOBEL_BACKBONES = ("alexnet", "alexnet_micro")


def backbone_layers(backbone: str, batch_norm: bool = True, sobel: bool | None = None) -> list[str]:
    """The layer names of a backbone built with these settings (input layer left out)."""
    layers = BACKBONE_LAYERS[backbone]
    if not batch_norm:
        layers = [name for name in layers if not name.startswith("batch_norm_")]
    if sobel is False:
        layers = [name for name in layers if name != "sobel"]
    return list(layers)


class RecipeError(ValueError):
    """A recipe that cannot be used, with a message naming the file and key."""


def _field(section: str | None, kind: type, rule: str = "", default: Any = None, required=False):
    metadata = {"section": section, "kind": kind, "rule": rule}
    if required:
        return dataclasses.field(metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Recipe:
    """Every setting of a run. Optional settings are None when off."""

    name: str = _field(None, str, required=True)
    origin: str = _field(None, str, required=True)  # the file it came from, for messages
    description: str = _field(None, str, default="")
    # [data]
    dataset: str = _field("data", str, required=True)  # TFDS name / name of the data
    source: str = _field("data", str, default="tfds")  # keras_deepcluster.data.SOURCES
    data_dir: str | None = _field("data", str)
    # tfds: download and prepare a dataset that is not prepared (data/tfds.py).
    download: bool = _field("data", bool, default=True)
    views: str | None = _field("data", str)  # ImageViews preset; default: `dataset`
    limit: int | None = _field("data", int, ">= 1")  # first N training images
    # How a folder's images get labels (data/source_splits.py): the top-level
    # sub-folders as classes, none, or chosen by what the folder holds.
    labels: str = _field("data", str, default="auto")
    # A CSV of a few images' labels for unlabelled data (check_labels.py): the run
    # scores its clusterings on them and keeps its best epoch.
    check_labels: str | None = _field("data", str)
    # Side S of the image cache (shorter side to S, centre crop). Default: the
    # source's own size; for folders, the views' resize side.
    image_size: int | None = _field("data", int, ">= 1")
    # [model]
    backbone: str = _field("model", str, default="lenet")
    batch_norm: bool = _field("model", bool, default=True)
    sobel: bool | None = _field("model", bool)  # alexnet backbones only
    clusters: int = _field("model", int, ">= 2", default=10)
    # [training]
    epochs: int = _field("training", int, ">= 1", default=10)
    batch_size: int = _field("training", int, ">= 1", default=128)
    lr: float = _field("training", float, "> 0", default=0.1)
    momentum: float = _field("training", float, "in [0, 1)", default=0.9)
    weight_decay: float = _field("training", float, ">= 0", default=0.0)
    epoch_multiplier: int = _field("training", int, ">= 1", default=1)  # images per epoch / N
    # The fewest training steps per clustering: small data trains longer on each
    # (pseudo_label_dataset.epoch_length); no change where N * epoch_multiplier is enough.
    min_steps: int | None = _field("training", int, ">= 1")
    seed: int = _field("training", int, ">= 0", default=0)
    deterministic: bool = _field("training", bool, default=False)  # determinism.py
    # Training steps per compiled call (Keras's compile); PyTorch runs 1.
    steps_per_execution: int = _field("training", int, ">= 1", default=8)
    # A folder for TensorBoard: each run writes its clustering diagnostics (diagnostics.py)
    # into a sub-folder named after its run directory.
    tensorboard: str | None = _field("training", str)
    # [clustering]
    pca: int | None = _field("clustering", int, ">= 1")
    kmeans: str = _field("clustering", str, default="auto")  # auto, faiss, sklearn or keras
    kmeans_iterations: int = _field("clustering", int, ">= 1", default=20)
    halt_after: int | None = _field("clustering", int, ">= 1")
    halt_when_stable: float | None = _field("clustering", float, "in (0, 1]")  # NMI(t, t-1)
    halt_patience: int = _field("clustering", int, ">= 1", default=3)
    # [probe]
    probe_layer: str | None = _field("probe", str)
    probe_epochs: int = _field("probe", int, ">= 1", default=20)
    probe_flip: bool = _field("probe", bool, default=False)

    def __post_init__(self):
        for field in dataclasses.fields(self):
            try:
                check_value(field.name, getattr(self, field.name))
            except RecipeError as error:
                section = field.metadata["section"]
                where = f"[{section}] {_toml_key(field.name)}" if section else field.name
                raise RecipeError(f"{self.origin}: {where} {error}") from None
            if field.metadata["kind"] is float and getattr(self, field.name) is not None:
                object.__setattr__(self, field.name, float(getattr(self, field.name)))
        if self.halt_after is not None and self.halt_after > self.epochs:
            raise RecipeError(
                f"{self.origin}: halt_after={self.halt_after} is larger than epochs={self.epochs}; "
                "halting needs halt_after <= epochs (leave it out to never halt)."
            )
        self._check_choices()

    def _check_choices(self) -> None:
        """The settings with a fixed set of values (`CHOICES`), and what depends on them."""

        def refuse(key: str, value, allowed) -> None:
            section = _FIELDS[key].metadata["section"]
            raise RecipeError(
                f"{self.origin}: [{section}] {_toml_key(key)} = {value!r} is not one of "
                f"{', '.join(allowed)}."
            )

        for key, allowed in CHOICES.items():
            value = getattr(self, key)
            if value is not None and value not in allowed:
                refuse(key, value, allowed)
        if self.views is None and self.dataset not in CHOICES["views"]:
            raise RecipeError(
                f"{self.origin}: [data] dataset = {self.dataset!r} has no image views of its "
                f"own; set [data] views to one of {', '.join(CHOICES['views'])} (the views of "
                "the dataset most like these images)."
            )
        if self.sobel is not None and self.backbone not in SOBEL_BACKBONES:
            raise RecipeError(
                f"{self.origin}: [model] sobel is set, but backbone {self.backbone!r} has no "
                f"Sobel layer (only {', '.join(SOBEL_BACKBONES)} have one); leave sobel out."
            )
        layers = backbone_layers(self.backbone, self.batch_norm, self.sobel)
        if self.probe_layer is not None and self.probe_layer not in layers:
            refuse("probe_layer", self.probe_layer, layers)

    def replace(self, **overrides) -> Recipe:
        """A copy with some settings changed, validated again.

        Its description gains a sentence naming the settings that changed, so that a
        run's ``config.toml`` does not describe settings it no longer has.
        """
        changed = ", ".join(f"{key}={value!r}" for key, value in overrides.items())
        overrides.setdefault("origin", f"{self.origin} with {changed}")
        differ = {
            _toml_key(key): escape(value) if key in _PATHS and isinstance(value, str) else value
            for key, value in overrides.items()
            if key not in ("name", "origin", "description") and value != getattr(self, key, value)
        }
        if differ and "description" not in overrides:
            settings = ", ".join(
                f"{key} = {toml_value(v) if v is not None else 'none'}" for key, v in differ.items()
            )
            overrides["description"] = (
                f"{self.description} Changed from {self.name}: {settings}.".lstrip()
            )
        return dataclasses.replace(self, **overrides)

    def sections(self) -> dict[str, dict[str, Any]]:
        """The settings by TOML section and key (optional settings that are off left out)."""
        result = {section: {} for section in SECTIONS}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.metadata["section"] and value is not None:
                result[field.metadata["section"]][_toml_key(field.name)] = value
        return result

    def to_toml(self) -> str:
        """The recipe as TOML; `load_recipe` reads it back to an equal recipe."""
        lines = [
            f"name = {toml_value(self.name)}",
            f"description = {toml_value(self.description)}",
        ]
        for section, settings in self.sections().items():
            for key in _PATHS & settings.keys():  # any bytes, which TOML's UTF-8 cannot hold
                settings[key] = escape(settings[key])
            lines += ["", f"[{section}]"]
            lines += [f"{key} = {toml_value(value)}" for key, value in settings.items()]
        return "\n".join(lines) + "\n"


def _toml_key(name: str) -> str:
    return name.removeprefix("probe_") if name.startswith("probe_") else name


def toml_value(value) -> str:
    """`value` (bool, str, int or float) written as TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        # JSON's string escapes are TOML's (\n, \", \\, \uXXXX); TOML refuses a raw DEL.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    return repr(value)


_RULES = {
    ">= 0": lambda v: v >= 0,
    ">= 1": lambda v: v >= 1,
    ">= 2": lambda v: v >= 2,
    "> 0": lambda v: v > 0,
    "in [0, 1)": lambda v: 0 <= v < 1,
    "in (0, 1]": lambda v: 0 < v <= 1,
}


def check_value(name: str, value) -> None:
    """Raises RecipeError unless `value` has the type and range of setting `name`.

    The message completes "<setting> ...", e.g. "must be >= 2; got 1."
    """
    field = _FIELDS[name]
    kind, rule = field.metadata["kind"], field.metadata["rule"]
    if value is None:
        if field.default is None:
            return  # an optional setting, off
        raise RecipeError("is required.")
    if kind is float:
        ok_type = (
            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        )
    else:
        ok_type = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
    if not ok_type:
        article = {
            "int": "an integer",
            "float": "a finite number",
            "str": "a string",
            "bool": "true or false",
        }[kind.__name__]
        raise RecipeError(f"must be {article}; got {value!r}.")
    if rule and not _RULES[rule](value):
        raise RecipeError(f"must be {rule}; got {value!r}.")


_FIELDS = {field.name: field for field in dataclasses.fields(Recipe)}


def _bundled() -> Path:
    return Path(str(importlib.resources.files("keras_deepcluster.recipes")))


def recipe_names() -> list[str]:
    """Names of the bundled recipes."""
    return sorted(path.stem for path in _bundled().glob("*.toml"))


def load_recipe(name_or_path: str | Path) -> Recipe:
    """Reads and validates a bundled recipe (by name) or a TOML file (by path)."""
    text = str(name_or_path)
    if text.endswith(".toml") or "/" in text or "\\" in text:
        path = Path(text)
        if not path.is_file():
            raise RecipeError(f"No recipe file {path}.")
    else:
        path = _bundled() / f"{text}.toml"
        if not path.is_file():
            raise RecipeError(
                f"Unknown recipe {text!r}; known recipes: {', '.join(recipe_names())} "
                "(or give the path of a .toml file)."
            )
    try:
        document = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise RecipeError(f"{path}: not valid TOML ({error}).") from None
    settings = _flatten(document, path)
    if "dataset" not in settings:
        raise RecipeError(f"{path}: [data] dataset is required (the name of the data).")
    settings.setdefault("name", path.stem)
    return Recipe(origin=str(path), **settings)


def _flatten(document: dict, path: Path) -> dict:
    """TOML sections -> Recipe keyword arguments, refusing unknown keys."""
    keys = {}
    for key, value in document.items():
        if key in ("name", "description"):  # a run's config.toml names its recipe
            keys[key] = value
        elif key in SECTIONS and isinstance(value, dict):
            for inner, inner_value in value.items():
                name = f"probe_{inner}" if key == "probe" else inner
                field = _FIELDS.get(name)
                if field is None or field.metadata["section"] != key:
                    known = [
                        _toml_key(f.name) for f in _FIELDS.values() if f.metadata["section"] == key
                    ]
                    raise RecipeError(
                        f"{path}: unknown key {inner!r} in [{key}]; known keys: {', '.join(known)}."
                    )
                is_path = name in _PATHS and isinstance(inner_value, str)
                keys[name] = unescape(inner_value) if is_path else inner_value
        else:
            raise RecipeError(
                f"{path}: unknown key {key!r}; a recipe has name, description and the sections "
                f"{', '.join(f'[{s}]' for s in SECTIONS)}."
            )
    return keys
