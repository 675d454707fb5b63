"""The IDX format of MNIST and Fashion-MNIST (gzipped or not)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from keras_deepcluster.data.image_data import ImageData

_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def read_idx(path: str | Path) -> np.ndarray:
    """Reads one uint8 IDX file (``.gz`` or raw) into an array.

    Raises:
        ValueError: the file is not uint8 IDX, or is truncated.
    """
    path = Path(path)
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as error:
        raise ValueError(f"Cannot read IDX file {path}: {error}.") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or not 1 <= raw[3] <= 4:
        raise ValueError(f"{path} is not a uint8 IDX file (bad magic number {raw[:4].hex()}).")
    dims = raw[3]
    header = 4 + 4 * dims
    if len(raw) < header:
        raise ValueError(
            f"{path} is truncated: its header needs {header} bytes, the file has {len(raw)}."
        )
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    size = int(np.prod(shape))
    if len(raw) - header != size:
        raise ValueError(
            f"{path} is truncated or corrupt: its header promises {size} bytes of data for "
            f"shape {tuple(shape)}, the file holds {len(raw) - header}."
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def idx_files(directory: Path) -> dict[str, Path]:
    """The IDX files present in `directory`, by array name (``x_train``, ...).

    Empty unless the training images are there.
    """
    found = {}
    for key, stem in _FILES.items():
        for candidate in (directory / f"{stem}.gz", directory / stem):
            if candidate.is_file():
                found[key] = candidate
                break
    return found if "x_train" in found else {}


def load_idx(directory: str | Path, name: str = "idx") -> ImageData:
    """Loads ``train-images-idx3-ubyte[.gz]`` and its siblings from `directory`.

    The training images are required; the labels and the test split are used
    when present. Example: the Debian package ``dataset-fashion-mnist`` puts
    them in ``/usr/share/datasets/fashion-mnist``.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"IDX data directory {directory} does not exist or is not a directory.")
    arrays = {key: read_idx(path) for key, path in idx_files(directory).items()}
    if "x_train" not in arrays:
        raise ValueError(
            f"No {_FILES['x_train']}[.gz] in {directory}; an IDX directory holds the four "
            "MNIST-format files (train-/t10k-images-idx3-ubyte, train-/t10k-labels-idx1-ubyte)."
        )
    for key in ("y_train", "y_test"):
        if key in arrays:
            arrays[key] = arrays[key].astype(np.int64)
    return ImageData(name, **arrays)
