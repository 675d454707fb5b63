"""tensorflow-datasets: mnist, fashion_mnist, svhn_cropped, cifar10, ..."""

from __future__ import annotations

import numpy as np

from keras_deepcluster.data.image_data import ImageData


def load_tfds(name: str, data_dir: str | None = None, download: bool = False) -> ImageData:
    """Loads the train and test splits of a TFDS image dataset into memory.

    Args:
        name: TFDS name, e.g. ``"fashion_mnist"``.
        data_dir: TFDS data directory (default: TFDS's, ``~/tensorflow_datasets``).
        download: Let TFDS download and prepare the data. Off by default so
            that a machine without the data fails in a second, not after
            minutes of network retries.
    """
    tfds = import_tfds()
    try:
        train, test = tfds.load(
            name,
            split=["train", "test"],
            data_dir=data_dir,
            download=download,
            as_supervised=True,
        )
    except Exception as error:  # TFDS raises AssertionError, DatasetNotFoundError, ...
        where = data_dir or "TFDS's default data_dir"
        raise ValueError(
            f"TFDS cannot load {name!r} from {where} without downloading "
            f"({type(error).__name__}: {str(error).splitlines()[0][:200]}). Prepare it with "
            "network access (download=True), point data_dir at a prepared TFDS folder, or use "
            "local files: the 'idx' source (MNIST-format files, e.g. "
            "/usr/share/datasets/fashion-mnist), 'npz' or an image 'folder'."
        ) from None
    (x_train, y_train), (x_test, y_test) = _to_numpy(tfds, train), _to_numpy(tfds, test)
    return ImageData(name, x_train, y_train, x_test, y_test)


def _to_numpy(tfds, split):
    # Batched iteration; `batch_size=-1` in tfds.load crashes TF on generator-backed data.
    batches = list(tfds.as_numpy(split.batch(4096)))
    images = np.concatenate([x for x, _ in batches]).astype(np.uint8)
    return images, np.concatenate([y for _, y in batches]).astype(np.int64)


def tfds_unavailable_reason(name: str | None, data_dir: str | None = None) -> str | None:
    """Why `load_tfds(name, data_dir)` would fail here; None if it is prepared."""
    if not name:
        return "needs a TFDS dataset name"
    try:
        tfds = import_tfds()
    except ValueError as error:
        return str(error)
    try:
        prepared = tfds.builder(name, data_dir=data_dir).is_prepared()
    except Exception as error:  # unknown name, unreadable directory, ...
        return f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"
    where = data_dir or "TFDS's default data_dir"
    return None if prepared else f"not prepared in {where} (downloading is off)"


def import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:  # no TensorFlow here (e.g. a GPU machine for JAX or PyTorch)
        raise ValueError(
            f"tensorflow-datasets cannot be imported ({error}); install tensorflow-datasets and "
            "tensorflow-cpu, or use the 'idx', 'npz' or 'folder' source."
        ) from None
    return tfds
