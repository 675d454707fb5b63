"""How images are shown to the network: a fixed view and a random training view.

Both views are bilinear resamplings written as two small matrix products per
image (rows, then columns), so a batch costs a few batched matmuls in NumPy on
any backend, and cropping, resizing and flipping are all just choices of the
interpolation matrices.  Resampling follows torchvision's half-pixel convention
(``align_corners=False``) without antialiasing, which matches PIL bilinear for
the upsampling these views do on 28-32 px images.
"""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np
from keras import ops

# Per-dataset normalisation of the authors' code (reference digest, section 3).
# CIFAR-10 deliberately reuses the SVHN constants, as every paper-era job did.
_PRESETS = {
    "mnist": dict(resize=44, mean=(0.1307,), std=(0.3081,)),
    "fashion_mnist": dict(resize=44, mean=(0.2860,), std=(0.3205,)),
    "svhn": dict(resize=45, mean=(0.437, 0.443, 0.472), std=(0.198, 0.201, 0.197)),
    "cifar10": dict(resize=45, mean=(0.437, 0.443, 0.472), std=(0.198, 0.201, 0.197)),
    "imagenet": dict(size=224, resize=256, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
}


@dataclasses.dataclass(frozen=True)
class ImageViews:
    """The two views of an image that DeepCluster uses.

    * ``fixed``: resize the short side to ``resize``, take the centre
      ``size`` x ``size`` crop, normalise. Used for feature extraction and probes.
    * ``random``: torchvision's ``RandomResizedCrop(size, scale, ratio)``,
      optionally a horizontal flip, normalise. Used for training.

    Args:
        size: Output side in pixels.
        resize: Side the fixed view resizes to before its centre crop.
        mean: Per-channel mean of images scaled to [0, 1].
        std: Per-channel standard deviation of images scaled to [0, 1].
        scale: Range of the crop area as a fraction of the image area.
        ratio: Range of the crop aspect ratio (width / height).
        flip: Whether the random view also flips half the images.

    Example:
    >>> views = ImageViews.for_dataset("fashion_mnist")
    >>> views.fixed(np.zeros((2, 28, 28, 1), np.uint8)).shape
    (2, 32, 32, 1)
    """

    size: int = 32
    resize: int = 44
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = False

    def __post_init__(self):
        if self.size < 1 or self.resize < self.size:
            raise ValueError(
                f"ImageViews needs 1 <= size <= resize; got size={self.size}, resize={self.resize}."
            )
        if len(self.mean) != len(self.std) or min(self.std) <= 0:
            raise ValueError(
                f"ImageViews needs one positive std per mean; got mean={self.mean}, std={self.std}."
            )

    @classmethod
    def for_dataset(cls, name: str, **overrides) -> "ImageViews":
        """The authors' views for `name` (one of `ImageViews.presets()`)."""
        if name not in _PRESETS:
            raise ValueError(
                f"No image views for dataset {name!r}; known: {', '.join(sorted(_PRESETS))}."
            )
        return cls(**{**_PRESETS[name], **overrides})

    @staticmethod
    def presets() -> list[str]:
        return sorted(_PRESETS)

    @property
    def channels(self) -> int:
        return len(self.mean)

    def fixed(self, images: np.ndarray) -> np.ndarray:
        """Deterministic view: resize, centre crop, normalise. NHWC float32."""
        images = _as_nhwc(images)
        rows, cols = self.fixed_matrices(*images.shape[1:3])
        return self._normalise(_resample(images, rows[None], cols[None]))

    def fixed_matrices(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """The fixed view's resampling: ``view = rows @ image @ cols.T`` per channel.

        Returns:
            float32 ``rows`` (size, height) and ``cols`` (size, width).
        """
        # Resize so the short side is `resize` (as torchvision's Resize(int)).
        short = min(height, width)
        out_h = max(self.size, round(height * self.resize / short))
        out_w = max(self.size, round(width * self.resize / short))
        top, left = (out_h - self.size) // 2, (out_w - self.size) // 2
        rows = _interpolation(height, out_h)[top : top + self.size]
        cols = _interpolation(width, out_w)[left : left + self.size]
        return rows, cols

    def random(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Training view: random resized crop (+ flip), normalise. NHWC float32."""
        images = _as_nhwc(images)
        n, h, w, _ = images.shape
        top, left, ch, cw = _sample_crops(n, h, w, self.scale, self.ratio, rng)
        rows = _window_interpolation(top, ch, h, self.size)
        cols = _window_interpolation(left, cw, w, self.size)
        if self.flip:
            flipped = rng.random(n) < 0.5
            cols[flipped] = cols[flipped, ::-1]
        return self._normalise(_resample(images, rows, cols))

    def _normalise(self, x: np.ndarray) -> np.ndarray:
        if x.shape[-1] != self.channels:
            raise ValueError(
                f"These views normalise {self.channels}-channel images; got "
                f"images with {x.shape[-1]} channels."
            )
        mean = np.asarray(self.mean, np.float32)
        std = np.asarray(self.std, np.float32)
        return (x - mean) / std


@keras.saving.register_keras_serializable(package="keras_deepcluster")
class FixedView(keras.layers.Layer):
    """`ImageViews.fixed` as a layer, so the view is computed where the network runs.

    Takes NHWC images, uint8 in [0, 255] or float in [0, 1], and gives what
    ``views.fixed`` gives (up to float rounding). Feature extraction puts it in
    front of the network: only uint8 images cross to the device, and the
    resampling runs inside the compiled forward pass.

    Args:
        views: The `ImageViews` whose fixed view to compute.
        flip: Flip the view horizontally.
    """

    def __init__(self, views: ImageViews, flip: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.views = views
        self.flip = flip

    def build(self, input_shape):
        rows, cols = self.views.fixed_matrices(input_shape[1], input_shape[2])
        self._rows, self._cols = rows, cols[::-1] if self.flip else cols

    def call(self, images):
        uint8 = keras.backend.standardize_dtype(images.dtype) == "uint8"
        x = ops.cast(images, "float32")
        if uint8:
            x = x * (1 / 255)
        x = ops.einsum("sh,nhwc->nswc", ops.convert_to_tensor(self._rows), x)
        x = ops.einsum("tw,nswc->nstc", ops.convert_to_tensor(self._cols), x)
        mean = ops.convert_to_tensor(np.asarray(self.views.mean, np.float32))
        std = ops.convert_to_tensor(np.asarray(self.views.std, np.float32))
        return (x - mean) / std

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.views.size, self.views.size, input_shape[3])

    def get_config(self):
        return {
            **super().get_config(),
            "views": dataclasses.asdict(self.views),
            "flip": self.flip,
        }

    @classmethod
    def from_config(cls, config):
        views = {k: tuple(v) if isinstance(v, list) else v for k, v in config.pop("views").items()}
        return cls(ImageViews(**views), **config)


def _as_nhwc(images: np.ndarray) -> np.ndarray:
    """uint8 in [0, 255] or float in [0, 1], NHW or NHWC -> float32 NHWC in [0, 1]."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.dtype == np.uint8:
        return images.astype(np.float32) * np.float32(1 / 255)
    return images.astype(np.float32, copy=False)


def _interpolation(n_in: int, n_out: int) -> np.ndarray:
    """Bilinear resampling matrix (n_out, n_in), half-pixel centres."""
    return _window_interpolation(np.zeros(1, np.int64), np.full(1, n_in), n_in, n_out)[0]


def _window_interpolation(start, length, n_in: int, n_out: int) -> np.ndarray:
    """Matrices (B, n_out, n_in) resampling window [start, start+length) to n_out."""
    start = np.asarray(start, np.float64)[:, None]
    length = np.asarray(length, np.float64)[:, None]
    src = (np.arange(n_out)[None] + 0.5) * length / n_out - 0.5
    src = np.clip(src, 0.0, length - 1)
    lo = np.floor(src)
    frac = src - lo
    hi = np.minimum(lo + 1, length - 1)
    b = len(start)
    matrix = np.zeros((b, n_out, n_in), np.float32)
    batch = np.arange(b)[:, None]
    out = np.arange(n_out)[None]
    np.add.at(matrix, (batch, out, (start + lo).astype(np.int64)), 1 - frac)
    np.add.at(matrix, (batch, out, (start + hi).astype(np.int64)), frac)
    return matrix


def _resample(images: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """out[b] = rows[b] @ images[b] @ cols[b].T, per channel."""
    n, h, w, c = images.shape
    tmp = np.matmul(rows, images.reshape(n, h, w * c))  # (n, S, w*c)
    tmp = tmp.reshape(n, -1, w, c)
    return np.matmul(cols[:, None], tmp)  # (b, 1, T, w) @ (n, S, w, c)


def _sample_crops(n, h, w, scale, ratio, rng):
    """torchvision RandomResizedCrop.get_params, vectorised over a batch."""
    area = h * w
    attempts = 10
    target = area * rng.uniform(scale[0], scale[1], (attempts, n))
    log_ratio = rng.uniform(math.log(ratio[0]), math.log(ratio[1]), (attempts, n))
    aspect = np.exp(log_ratio)
    cw = np.round(np.sqrt(target * aspect)).astype(np.int64)
    ch = np.round(np.sqrt(target / aspect)).astype(np.int64)
    ok = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = np.argmax(ok, axis=0)
    found = ok[first, np.arange(n)]
    cw, ch = cw[first, np.arange(n)], ch[first, np.arange(n)]
    # Fallback as torchvision: the whole image, clamped to the ratio range.
    in_ratio = w / h
    if in_ratio < ratio[0]:
        fw, fh = w, int(round(w / ratio[0]))
    elif in_ratio > ratio[1]:
        fw, fh = int(round(h * ratio[1])), h
    else:
        fw, fh = w, h
    cw = np.where(found, cw, fw)
    ch = np.where(found, ch, fh)
    top = np.where(found, (rng.random(n) * (h - ch + 1)).astype(np.int64), (h - ch) // 2)
    left = np.where(found, (rng.random(n) * (w - cw + 1)).astype(np.int64), (w - cw) // 2)
    return top, left, ch, cw
