"""A folder of image files: flat (unlabelled) or one sub-folder per class."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from keras_deepcluster.data.image_data import ImageData

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def folder_images(directory: Path) -> Iterator[Path]:
    """Image files directly in `directory` or one level down."""
    for path in sorted(directory.iterdir()):
        if path.is_dir():
            yield from (f for f in sorted(path.iterdir()) if f.suffix.lower() in EXTENSIONS)
        elif path.suffix.lower() in EXTENSIONS:
            yield path


def load_image_folder(directory: str | Path, name: str = "folder") -> ImageData:
    """Loads every image under `directory` into one uint8 array.

    Images directly in `directory` are unlabelled; with one sub-folder per
    class, the sorted sub-folder names give the labels 0, 1, ... All images
    must have the same size and the same mode (grayscale or RGB).
    """
    from PIL import Image

    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"Image folder {directory} does not exist or is not a directory.")
    classes = sorted(p.name for p in directory.iterdir() if p.is_dir())
    files = [(f, None) for f in sorted(directory.iterdir()) if f.suffix.lower() in EXTENSIONS]
    for label, cls in enumerate(classes):
        files += [
            (f, label)
            for f in sorted((directory / cls).iterdir())
            if f.suffix.lower() in EXTENSIONS
        ]
    if not files:
        raise ValueError(f"No images ({', '.join(EXTENSIONS)}) in {directory} or its sub-folders.")
    if classes and any(label is None for _, label in files):
        raise ValueError(
            f"{directory} mixes loose images with class sub-folders; put every image in a "
            "class folder (labelled) or all of them directly in the folder (unlabelled)."
        )
    images, first = [], None
    for path, _ in files:
        try:
            with Image.open(path) as image:
                mode = "L" if image.mode in ("L", "1", "I;16", "I", "F") else "RGB"
                array = np.asarray(image.convert(mode))
        except OSError as error:
            raise ValueError(f"Cannot read image {path}: {error}.") from None
        if first is None:
            first = (path, array.shape)
        elif array.shape != first[1]:
            raise ValueError(
                f"Images differ in size or mode: {first[0].name} is {first[1]}, "
                f"{path.name} is {array.shape} (H, W[, C]). Resize or convert them to one shape."
            )
        images.append(array)
    labels = None if not classes else np.array([label for _, label in files], np.int64)
    return ImageData(name, np.stack(images), labels)
