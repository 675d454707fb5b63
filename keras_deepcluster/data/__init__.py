"""Data sources: where the images come from.

Every loader returns an `ImageData` of uint8 NHWC images (labels optional):
NumPy arrays in memory from `load`, or `DiskImages` read from disk a batch at
a time from an image cache (`prepare`), which takes collections of any size
and folders of mixed images.

Examples:
    >>> data = load("digits")
    >>> data.x_train.shape
    (1797, 8, 8, 1)
    >>> data = prepare("folder", path="photos/", size=64).data()
"""

from __future__ import annotations

from pathlib import Path

from keras_deepcluster.data.arrays import load_digits, load_npz
from keras_deepcluster.data.disk_images import DiskImages
from keras_deepcluster.data.idx import idx_files, load_idx, read_idx
from keras_deepcluster.data.image_cache import (
    CACHED_SOURCES,
    ImageCache,
    default_cache_root,
    prepare,
)
from keras_deepcluster.data.image_data import ImageData
from keras_deepcluster.data.image_folder import load_image_folder
from keras_deepcluster.data.source_splits import folder_splits
from keras_deepcluster.data.synthetic import write_image_folder
from keras_deepcluster.data.tfds import load_tfds, tfds_unavailable_reason

SOURCES = ("tfds", "idx", "npz", "folder", "digits", "cache")


def load(
    source: str,
    name: str | None = None,
    path: str | Path | None = None,
    download: bool = True,
    labels: str = "auto",
) -> ImageData:
    """Loads a dataset from one of `SOURCES`.

    Args:
        source: ``"tfds"`` (`name` is the TFDS name, `path` its data_dir),
            ``"idx"`` (`path` a directory of MNIST-format files), ``"npz"``
            (`path` the file), ``"folder"`` (`path` a folder of images) or
            ``"digits"`` (scikit-learn's bundled digits; no path) or
            ``"cache"`` (`path` an image cache folder made by `prepare`; its
            images stay on disk).
        name: Dataset name (TFDS name for ``"tfds"``).
        path: Directory or file, as above.
        download: For ``"tfds"``: download and prepare a dataset that is not
            prepared (see `keras_deepcluster.data.tfds`).
        labels: For ``"folder"``: ``"inferred"`` (the top-level sub-folders are
            the classes), ``"none"`` (the whole tree, unlabelled) or ``"auto"``
            (inferred for one flat folder per class, else none).
    """
    if source not in SOURCES:
        raise ValueError(f"Unknown data source {source!r}; known sources: {', '.join(SOURCES)}.")
    path = None if path is None else Path(path).expanduser()
    if source == "digits":
        return load_digits()
    if source == "tfds":
        if not name:
            raise ValueError("The 'tfds' source needs a dataset name, e.g. 'fashion_mnist'.")
        return load_tfds(name, None if path is None else str(path), download)
    if path is None:
        raise ValueError(f"The {source!r} source needs a path (data directory or file).")
    if source == "cache":
        cache = ImageCache(path)
        damaged = cache.damaged()
        if damaged:
            raise ValueError(
                f"The image cache in {path} is damaged: {'; '.join(damaged)}. Rebuild it from "
                "its source (`deepcluster prepare`, or keras_deepcluster.data.prepare)."
            )
        return cache.data()
    if source == "folder":
        return load_image_folder(path, name or source, labels)
    return {"idx": load_idx, "npz": load_npz}[source](path, name or source)


def unavailable_reason(
    source: str, name: str | None = None, path: str | Path | None = None
) -> str | None:
    """Why `load(source, name, path)` cannot find its data here; None if it can.

    Cheap: looks for the files (and, for TFDS, whether the dataset is
    prepared) without reading the images.
    """
    if source not in SOURCES:
        return f"unknown source; known sources: {', '.join(SOURCES)}"
    if source == "digits":
        return None
    if source == "tfds":
        return tfds_unavailable_reason(name, None if path is None else str(path))
    if path is None:
        return f"needs a path ({'a .npz file' if source == 'npz' else 'a directory'})"
    path = Path(path)
    if source == "npz":
        return None if path.is_file() else f"no file {path}"
    if source == "cache":
        return None if (path / "manifest.json").is_file() else f"no image cache in {path}"
    if not path.is_dir():
        return f"no directory {path}"
    if source == "idx":
        return None if idx_files(path) else f"no train-images-idx3-ubyte[.gz] in {path}"
    try:
        splits = folder_splits(path)
    except ValueError as error:
        return str(error)
    from PIL import Image

    images = Image.registered_extensions()
    if not any(f.suffix.lower() in images for split in splits for f in split.files):
        return f"no images in {path} or its sub-folders"
    return None


__all__ = [
    "CACHED_SOURCES",
    "DiskImages",
    "ImageCache",
    "ImageData",
    "default_cache_root",
    "prepare",
    "write_image_folder",
    "SOURCES",
    "load",
    "unavailable_reason",
    "load_digits",
    "load_idx",
    "load_image_folder",
    "load_npz",
    "load_tfds",
    "read_idx",
]
