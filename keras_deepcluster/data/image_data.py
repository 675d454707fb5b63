"""`ImageData`: the arrays every data source returns."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class ImageData:
    """Train (and optional test) images, labels optional.

    Images are uint8 (N, H, W, C); labels int64 (N,) or None for unlabelled data.
    `origin` says where they come from, for an image cache its folder and
    identity (`ImageCache.data`); a run records it in its ``data.json``.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray | None = None
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    origin: dict | None = None
    class_names: list[str] | None = None  # label i is class_names[i] (class folders)

    def __post_init__(self):
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x is None:
                continue
            if x.ndim not in (3, 4) or 0 in x.shape or (x.ndim == 4 and x.shape[-1] > 4):
                raise ValueError(
                    f"{self.name}: the {split} images must be an array (N, H, W) or (N, H, W, C) "
                    f"with at least one image of at least 1x1 pixels and 1-4 channels; got shape "
                    f"{x.shape}."
                )
            if x.ndim == 3:
                x = x[..., None]
                setattr(self, f"x_{split}", x)
            if y is not None and len(y) != len(x):
                raise ValueError(
                    f"{self.name}: the {split} split has {len(x)} images but {len(y)} labels."
                )
