"""tensorflow-datasets: mnist, fashion_mnist, svhn_cropped, cifar10, ...

A dataset that is not prepared in the data_dir is downloaded and prepared on
first use, as `keras.datasets` and torchvision do, unless downloading is
forbidden (``download=False``, the recipe's ``[data] download = false``, or
``KERAS_DEEPCLUSTER_NO_DOWNLOAD=1``). When the network does not answer, the
error comes within `NETWORK_TIMEOUT` seconds, not after TFDS's minutes of
retries, and names the local alternatives.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable

import numpy as np

from keras_deepcluster.data.image_data import ImageData
from keras_deepcluster.platform.tensorflow_import import import_tensorflow_quietly

NO_DOWNLOAD_ENV = "KERAS_DEEPCLUSTER_NO_DOWNLOAD"
# TFDS fetches prepared datasets from its Cloud Storage bucket before the original hosts.
DOWNLOAD_HOST = ("storage.googleapis.com", 443)
NETWORK_TIMEOUT = 10.0
_ALTERNATIVES = (
    "point data_dir at a prepared TFDS folder, or use local files: the 'idx' source "
    "(MNIST-format files, e.g. /usr/share/datasets/fashion-mnist), 'npz' or an image 'folder'"
)


def load_tfds(
    name: str,
    data_dir: str | None = None,
    download: bool = True,
    on_note: Callable[[str], None] | None = None,
) -> ImageData:
    """Loads the train and test splits of a TFDS image dataset into memory.

    Args:
        name: TFDS name, e.g. ``"fashion_mnist"``.
        data_dir: TFDS data directory (default: TFDS's, ``~/tensorflow_datasets``).
        download: Download and prepare the dataset if it is not prepared
            (see the module docstring).
        on_note: Gets a line when a download starts; default: a log warning.
    """
    tfds = import_tfds()
    builder, datasets = prepared_splits(name, data_dir, download, on_note)
    arrays = {}
    for split in ("train", "test"):
        images, labels = _to_numpy(tfds, datasets[split]) if split in datasets else (None, None)
        arrays[f"x_{split}"], arrays[f"y_{split}"] = images, labels
    return ImageData(name, **arrays)


def prepared_splits(
    name: str,
    data_dir: str | None = None,
    download: bool = True,
    on_note: Callable[[str], None] | None = None,
) -> tuple[object, dict]:
    """The TFDS builder of `name` and its train and test `tf.data` splits (as_supervised).

    Downloads and prepares the dataset first if it cannot be read and
    downloading is allowed.

    Raises:
        ValueError: unknown name, not prepared and downloading forbidden or
            failing, or no network (within `NETWORK_TIMEOUT` seconds).
    """
    tfds = import_tfds()
    where = data_dir or "TFDS's default data_dir"
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # unknown name, unreadable directory, ...
        raise ValueError(f"TFDS has no dataset {name!r} ({_first_line(error)}).") from None
    try:
        return builder, _as_datasets(builder)
    except Exception as error:  # TFDS raises AssertionError, DatasetNotFoundError, ...
        if not download_allowed(download):
            raise ValueError(
                f"TFDS {name!r} is not prepared in {where} ({_first_line(error)}) and "
                f"downloading is off (download=False or {NO_DOWNLOAD_ENV}); allow it, or "
                f"{_ALTERNATIVES}."
            ) from None
    _check_network(name, where)
    (on_note or logging.getLogger(__name__).warning)(
        f"downloading and preparing TFDS {name!r} into {where} (once; download=False or "
        f"{NO_DOWNLOAD_ENV}=1 forbids it)"
    )
    try:
        builder.download_and_prepare()
        return builder, _as_datasets(builder)
    except Exception as error:
        raise ValueError(
            f"Downloading TFDS {name!r} into {where} failed ({_first_line(error)}); try again, "
            f"or {_ALTERNATIVES}."
        ) from None


def download_allowed(download: bool) -> bool:
    """Whether a missing dataset may be downloaded: `download`, unless the env forbids it."""
    return bool(download) and os.environ.get(NO_DOWNLOAD_ENV, "") in ("", "0")


def _check_network(name: str, where: str) -> None:
    host, port = DOWNLOAD_HOST
    try:
        socket.create_connection((host, port), timeout=NETWORK_TIMEOUT).close()
    except OSError as error:
        raise ValueError(
            f"TFDS {name!r} is not prepared in {where}, and it cannot be downloaded: "
            f"{host} does not answer ({error.strerror or error}). Connect to the network, or "
            f"{_ALTERNATIVES}."
        ) from None


def _as_datasets(builder) -> dict:
    splits = builder.info.splits
    return {
        split: builder.as_dataset(split=split, as_supervised=True)
        for split in ("train", "test")
        if split in splits or not splits  # no split metadata: TFDS's mock data
    }


def _first_line(error: Exception) -> str:
    return f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"


def _to_numpy(tfds, split):
    # Batched iteration; `batch_size=-1` in tfds.load crashes TF on generator-backed data.
    batches = list(tfds.as_numpy(split.batch(4096)))
    images = np.concatenate([x for x, _ in batches]).astype(np.uint8)
    return images, np.concatenate([y for _, y in batches]).astype(np.int64)


def tfds_unavailable_reason(name: str | None, data_dir: str | None = None) -> str | None:
    """Why `load_tfds(name, data_dir)` would not read prepared data here; None if it would."""
    if not name:
        return "needs a TFDS dataset name"
    try:
        tfds = import_tfds()
    except ValueError as error:
        return str(error)
    try:
        prepared = tfds.builder(name, data_dir=data_dir).is_prepared()
    except Exception as error:  # unknown name, unreadable directory, ...
        return _first_line(error)[:160]
    where = data_dir or "TFDS's default data_dir"
    if prepared:
        return None
    if download_allowed(True):
        return f"not prepared in {where}; downloaded on first use (needs the network)"
    return f"not prepared in {where}, and {NO_DOWNLOAD_ENV} forbids downloading"


def import_tfds():
    try:
        import_tensorflow_quietly()  # tensorflow_datasets imports it
        import tensorflow_datasets as tfds
    except ImportError as error:  # no TensorFlow here (e.g. a GPU machine for JAX or PyTorch)
        raise ValueError(
            f"tensorflow-datasets cannot be imported ({error}); install tensorflow-datasets and "
            "tensorflow-cpu, or use the 'idx', 'npz' or 'folder' source."
        ) from None
    return tfds
