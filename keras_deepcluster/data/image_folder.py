"""A folder of same-size image files, loaded into memory (any folder: `image_cache`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from keras_deepcluster.data.decoding import to_channels
from keras_deepcluster.data.image_data import ImageData
from keras_deepcluster.data.source_splits import folder_splits


def load_image_folder(
    directory: str | Path, name: str = "folder", labels: str = "auto"
) -> ImageData:
    """Loads every image of a folder into memory, as uint8 arrays.

    The folder's layout is that of the image cache (`source_splits.folder_splits`):
    ``train/`` (and ``val/`` or ``test/``), or the images directly; in each,
    one sub-folder per class (labelled) or the whole tree (unlabelled), as
    `labels` says ("auto", "inferred" or "none"; see `folder_splits`). Every
    image must have the same size, and be grayscale or colour throughout: a
    folder of mixed images goes through the image cache
    (`keras_deepcluster.data.prepare`, ``deepcluster prepare``), which
    resizes them and keeps them on disk.
    """
    from PIL import Image

    arrays, first = {}, None
    splits = folder_splits(Path(directory), labels=labels)
    for split in splits:
        images = []
        for path in split.files:
            try:
                with Image.open(path) as image:
                    gray = image.mode in ("L", "1", "I;16", "I", "F")
                    array = np.asarray(to_channels(image, 1 if gray else 3))
            except (OSError, ValueError, SyntaxError) as error:
                raise ValueError(f"Cannot read image {path}: {error}.") from None
            if first is None:
                first = (path, array.shape)
            elif array.shape != first[1]:
                raise ValueError(
                    f"Images differ in size or mode: {first[0].name} is {first[1]}, "
                    f"{path.name} is {array.shape} (H, W[, C]). Use the image cache, which "
                    "resizes them: keras_deepcluster.data.prepare('folder', path=DIR, size=S)."
                )
            images.append(array)
        arrays[f"x_{split.name}"], arrays[f"y_{split.name}"] = np.stack(images), split.labels
    return ImageData(name, **arrays, class_names=splits[0].classes)
