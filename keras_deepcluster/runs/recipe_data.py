"""A recipe's images and the views the network sees of them: loaded from the recipe's
source or image cache, or the images a run recorded that it trained on; and the check
labels that stand in for the labels of unlabelled images.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from keras_deepcluster import data as data_sources
from keras_deepcluster.data.disk_images import take_rows
from keras_deepcluster.data.image_cache import ImageCache
from keras_deepcluster.data.image_data import ImageData
from keras_deepcluster.method.views import ImageViews
from keras_deepcluster.runs import check_labels
from keras_deepcluster.runs.check_labels import CheckLabels, CheckLabelsError
from keras_deepcluster.runs.recipe import Recipe, RecipeError
from keras_deepcluster.runs.run_directory import RunDirectory


def load_data(
    recipe: Recipe,
    on_progress: Callable[[int, int], None] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> ImageData:
    """The recipe's images (the first `limit` training images if set).

    Folders, IDX, ``.npz`` and TFDS sources come from their image cache
    (`keras_deepcluster.data.prepare`), built on first use and rebuilt when the source
    changed; their images stay on disk. `on_progress` and `on_note` are
    passed to `keras_deepcluster.data.prepare` (images cached of the total, one-line notes);
    `on_note` also gets the cache's `describe` lines.
    """
    views = image_views(recipe)
    if recipe.source not in data_sources.CACHED_SOURCES:
        data = data_sources.load(recipe.source, recipe.dataset, recipe.data_dir, recipe.download)
        if recipe.limit is not None:
            data.x_train = take_rows(data.x_train, np.arange(min(recipe.limit, len(data.x_train))))
            data.y_train = None if data.y_train is None else data.y_train[: recipe.limit]
        return data
    size = recipe.image_size or (views.resize if recipe.source == "folder" else None)
    if size is not None and size < views.size:
        raise RecipeError(
            f"{recipe.origin}: [data] image_size={size} is smaller than the {views.size}-pixel "
            f"views of recipe {recipe.name!r}; cache the images at {views.size} pixels or more."
        )
    cache = data_sources.prepare(
        recipe.source,
        recipe.dataset,
        recipe.data_dir,
        size=size,
        channels=views.channels,
        limit=recipe.limit,
        on_progress=on_progress,
        on_note=on_note,
        download=recipe.download,
        labels=recipe.labels,
    )
    for line in cache.describe() if on_note is not None else ():
        on_note(line)
    return cache.data()


def recorded_data(
    run: RunDirectory,
    recipe: Recipe,
    data_dir: str | Path | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> ImageData:
    """The images `run` trained on: the image cache its ``data.json`` names, if unchanged.

    Otherwise the recipe's source (with `data_dir` instead of the recipe's,
    if given), through `load_data`; it must hold the images the run trained on.

    Raises:
        ValueError: the source changed since training (the message says how
            to point at the training data).
    """
    recorded = run.read_json(RunDirectory.DATA) if (run.path / RunDirectory.DATA).is_file() else {}
    if data_dir is None and recorded.get("cache"):
        try:
            cache = data_sources.ImageCache(recorded["cache"])
        except ValueError:  # moved or removed: rebuilt from the source below
            cache = None
        if cache is not None and cache.identity() == recorded:
            return cache.data()
    if data_dir is not None:
        recipe = recipe.replace(data_dir=str(Path(data_dir).expanduser().resolve()))
    try:
        data = load_data(recipe, on_progress, on_note)
    except ValueError as error:
        if data_dir is not None:
            raise
        raise ValueError(
            f"The images {run.path} trained on are not where they were ({error}); point at "
            "them with `data_dir`."
        ) from None
    digest = (data.origin or {}).get("source_digest")
    if recorded.get("source_digest") and digest != recorded["source_digest"]:
        raise ValueError(
            f"The data of {run.path} changed since training: {recorded.get('path')} holds other "
            "files than it trained on. Point at the images it trained on with `data_dir`."
        )
    return data


def image_views(recipe: Recipe) -> ImageViews:
    """The recipe's `ImageViews` (its ``views`` preset, else its dataset's)."""
    return ImageViews.for_dataset(recipe.views or recipe.dataset)


def check_channels(recipe: Recipe, views: ImageViews, channels: int) -> None:
    """Raises ValueError when the images' channels do not fit the recipe's views."""
    if channels == views.channels:
        return
    kind = {1: "grayscale", 3: "RGB"}
    fitting = "mnist, fashion_mnist or digits" if channels == 1 else "svhn or cifar10"
    raise ValueError(
        f"The {recipe.dataset} images have {channels} channel(s) "
        f"({kind.get(channels, 'other')}) but recipe {recipe.name!r} shows the network "
        f"{views.channels}-channel views ({kind.get(views.channels, 'other')}); use a recipe "
        f"for such images ({fitting}) or convert the images."
    )


def read_check_labels(recipe: Recipe, data: ImageData) -> CheckLabels | None:
    """The recipe's check labels for `data`'s training images, or None without any.

    Raises:
        CheckLabelsError: a file that cannot be used, or data that has labels of
            its own (a labelled run scores against those).
    """
    if recipe.check_labels is None:
        return None
    if data.y_train is not None:
        raise CheckLabelsError(
            f"{recipe.check_labels}: check labels are for unlabelled images, but "
            f"{data.name} has a label for every training image and the run scores against "
            "those; drop the check labels."
        )
    cache = (data.origin or {}).get("cache")
    files = ImageCache(cache).files("train") if cache else None
    return check_labels.read_check_labels(recipe.check_labels, len(data.x_train), files)
