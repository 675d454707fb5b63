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

Each key's rule is a `keras_deepcluster.settings.Setting`, the one the library objects
check the same setting with. This module does not import Keras: the command line checks its
options and recipe before it imports Keras.

Examples:
    >>> recipe = load_recipe("fashion_mnist").replace(clusters=10, epochs=3)
    >>> recipe.lr, recipe.clusters
    (0.1, 10)
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
from pathlib import Path
from typing import Any

import tomllib

from keras_deepcluster import settings
from keras_deepcluster.data import SOURCES
from keras_deepcluster.data.file_names import escape, unescape
from keras_deepcluster.data.source_splits import LABEL_MODES
from keras_deepcluster.settings import SETTINGS, Setting, SettingError

SECTIONS = ("data", "model", "training", "clustering", "probe")
# The settings that are paths (escaped in TOML).
_PATHS = {"data_dir", "check_labels", "tensorboard"}

# The settings with a fixed set of values, checked when a recipe loads (before any data
# is read); the registries of the modules that use them.
CHOICES = {
    "source": SOURCES,
    "kmeans": settings.KMEANS_BACKENDS,
    "backbone": tuple(sorted(settings.BACKBONE_LAYERS)),
    "views": tuple(sorted(settings.VIEW_PRESETS)),
    "labels": LABEL_MODES,
}


class RecipeError(ValueError):
    """A recipe that cannot be used, with a message naming the file and key."""


def _field(section: str | None, kind: type, bound: str = "", default: Any = None, required=False):
    """A setting of the recipe alone: off when None, unless it has a default or is required."""
    optional = default is None and not required
    return _setting(section, Setting(kind, bound, optional=optional), default, required)


def _choice(section: str, key: str, default: Any = None):
    """A setting with a fixed set of values (`CHOICES`)."""
    return _setting(section, Setting(str, choices=CHOICES[key], optional=default is None), default)


def _shared(section: str, keyword: str, default: Any = None):
    """A setting the library objects take too, as `keyword`: checked by the same rule."""
    return _setting(section, SETTINGS[keyword], default)


def _setting(section: str | None, setting: Setting, default: Any, required: bool = False):
    metadata = {"section": section, "setting": setting}
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
    source: str = _choice("data", "source", default="tfds")  # keras_deepcluster.data.SOURCES
    data_dir: str | None = _field("data", str)
    # tfds: download and prepare a dataset that is not prepared (data/tfds.py).
    download: bool = _field("data", bool, default=True)
    views: str | None = _choice("data", "views")  # ImageViews preset; default: `dataset`
    limit: int | None = _field("data", int, ">= 1")  # first N training images
    # How a folder's images get labels (data/source_splits.py): the top-level
    # sub-folders as classes, none, or chosen by what the folder holds.
    labels: str = _choice("data", "labels", default="auto")
    # A CSV of a few images' labels for unlabelled data (check_labels.py): the run
    # scores its clusterings on them and keeps its best epoch.
    check_labels: str | None = _field("data", str)
    # Side S of the image cache (shorter side to S, centre crop). Default: the
    # source's own size; for folders, the views' resize side.
    image_size: int | None = _field("data", int, ">= 1")
    # [model]
    backbone: str = _choice("model", "backbone", default="lenet")
    batch_norm: bool = _field("model", bool, default=True)
    sobel: bool | None = _field("model", bool)  # alexnet backbones only
    clusters: int = _shared("model", "num_clusters", default=10)
    # [training]
    epochs: int = _field("training", int, ">= 1", default=10)
    batch_size: int = _field("training", int, ">= 1", default=128)
    lr: float = _field("training", float, "> 0", default=0.1)
    momentum: float = _field("training", float, "in [0, 1)", default=0.9)
    weight_decay: float = _shared("training", "weight_decay", default=0.0)
    epoch_multiplier: int = _field("training", int, ">= 1", default=1)  # images per epoch / N
    # The fewest training steps per clustering: small data trains longer on each
    # (pseudo_label_dataset.epoch_length); no change where N * epoch_multiplier is enough.
    min_steps: int | None = _field("training", int, ">= 1")
    seed: int = _shared("training", "seed", default=0)
    deterministic: bool = _field("training", bool, default=False)  # determinism.py
    # Training steps per compiled call (Keras's compile); PyTorch runs 1.
    steps_per_execution: int = _field("training", int, ">= 1", default=8)
    # A folder for TensorBoard: each run writes its clustering diagnostics (diagnostics.py)
    # into a sub-folder named after its run directory.
    tensorboard: str | None = _field("training", str)
    # [clustering]
    pca: int | None = _shared("clustering", "pca_dim")
    kmeans: str = _shared("clustering", "kmeans_backend", default=settings.KMEANS_BACKEND)
    kmeans_iterations: int = _shared(
        "clustering", "kmeans_iterations", default=settings.KMEANS_ITERATIONS
    )
    halt_after: int | None = _shared("clustering", "halt_after")
    halt_when_stable: float | None = _shared("clustering", "halt_when_stable")  # NMI(t, t-1)
    halt_patience: int = _shared("clustering", "halt_patience", default=settings.HALT_PATIENCE)
    # [probe]
    probe_layer: str | None = _field("probe", str)
    probe_epochs: int = _field("probe", int, ">= 1", default=20)
    probe_flip: bool = _field("probe", bool, default=False)

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            try:
                check_value(field.name, value)
            except RecipeError as error:
                raise RecipeError(f"{self.origin}: {_where(field.name)} {error}") from None
            kind = field.metadata["setting"].kind
            if kind in (int, float) and value is not None:  # NumPy numbers too, as TOML's
                object.__setattr__(self, field.name, kind(value))
        if self.halt_after is not None and self.halt_after > self.epochs:
            raise RecipeError(
                f"{self.origin}: halt_after={self.halt_after} is larger than epochs={self.epochs}; "
                "halting needs halt_after <= epochs (leave it out to never halt)."
            )
        self._check_combinations()

    def _check_combinations(self) -> None:
        """The settings whose values depend on others: views, Sobel and the probe layer."""
        if self.views is None and self.dataset not in CHOICES["views"]:
            raise RecipeError(
                f"{self.origin}: [data] dataset = {self.dataset!r} has no image views of its "
                f"own; set [data] views to one of {', '.join(CHOICES['views'])} (the views of "
                "the dataset most like these images)."
            )
        if self.sobel is not None and self.backbone not in settings.SOBEL_BACKBONES:
            raise RecipeError(
                f"{self.origin}: [model] sobel is set, but backbone {self.backbone!r} has no "
                f"Sobel layer (only {', '.join(settings.SOBEL_BACKBONES)} have one); leave "
                "sobel out."
            )
        layers = settings.backbone_layers(self.backbone, self.batch_norm, self.sobel)
        try:
            Setting(str, choices=tuple(layers), optional=True).check(self.probe_layer)
        except SettingError as error:
            raise RecipeError(f"{self.origin}: {_where('probe_layer')} {error}") from None

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
        for section, keys in self.sections().items():
            for key in _PATHS & keys.keys():  # any bytes, which TOML's UTF-8 cannot hold
                keys[key] = escape(keys[key])
            lines += ["", f"[{section}]"]
            lines += [f"{key} = {toml_value(value)}" for key, value in keys.items()]
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


def check_value(name: str, value, choices: bool = True) -> None:
    """Raises RecipeError unless `value` is allowed for setting `name`.

    The message completes "<setting> ...", e.g. "must be >= 2; got 1." Without
    `choices`, only its type and range are checked (a command-line option, whose
    value the recipe then checks in full, naming the key).
    """
    try:
        _FIELDS[name].metadata["setting"].check(value, choices=choices)
    except SettingError as error:
        raise RecipeError(str(error)) from None


def _where(name: str) -> str:
    """How a message names setting `name`: its section and TOML key."""
    section = _FIELDS[name].metadata["section"]
    return f"[{section}] {_toml_key(name)}" if section else name


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
