"""Arrays already in memory or on disk: ``.npz`` files and scikit-learn's digits."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from keras_deepcluster.data.image_data import ImageData


def as_uint8(x: np.ndarray, where: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim not in (3, 4):
        raise ValueError(f"{where}: images must be (N, H, W) or (N, H, W, C); got shape {x.shape}.")
    if x.dtype == np.uint8:
        return x
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{where}: images must be uint8, or float in [0, 1]; got {x.dtype}.")
    finite = np.isfinite(x)
    if not finite.all():
        first = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise ValueError(
            f"{where}: {np.count_nonzero(~finite)} pixel values are NaN or inf (the first at "
            f"index {first}, image {first[0]}); images must be uint8, or float in [0, 1]."
        )
    low, high = float(x.min()), float(x.max())
    if low < 0 or high > 1:
        hint = " (uint8 values stored as float? divide by 255)" if high <= 255 and low >= 0 else ""
        raise ValueError(
            f"{where}: float images must lie in [0, 1]; these hold values from {low:g} to "
            f"{high:g}{hint}."
        )
    return np.round(x * 255).astype(np.uint8)


def load_npz(path: str | Path, name: str = "npz") -> ImageData:
    """Loads ``x_train``/``y_train``/``x_test``/``y_test`` (as `keras.datasets`
    returns them) or a single ``x``/``y`` pair from a ``.npz`` file. Labels are
    optional; images are uint8 or float in [0, 1], HW or HWC.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise ValueError(f"Cannot read {path} as a .npz file: {error}.") from None
    if "x_train" not in arrays and "x" in arrays:
        arrays["x_train"] = arrays.pop("x")
        if "y" in arrays:
            arrays["y_train"] = arrays.pop("y")
    if "x_train" not in arrays:
        raise ValueError(
            f"{path} holds {sorted(arrays)}; expected x_train (with optional y_train, x_test, "
            "y_test) or x (with optional y)."
        )
    data = {}
    for split in ("train", "test"):
        if f"x_{split}" in arrays:
            data[f"x_{split}"] = as_uint8(arrays[f"x_{split}"], f"{path}: x_{split}")
        if f"y_{split}" in arrays:
            data[f"y_{split}"] = np.asarray(arrays[f"y_{split}"]).reshape(-1).astype(np.int64)
    return ImageData(name, **data)


def load_digits() -> ImageData:
    """scikit-learn's bundled handwritten digits: 1,797 8x8 images, 10 classes, offline.

    Values 0..16 are scaled to 0..255 (truncated); there is no test split.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    images = (digits.images * (255 / 16)).astype(np.uint8)
    return ImageData("digits", images, digits.target.astype(np.int64))
