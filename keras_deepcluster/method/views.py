"""How images are shown to the network: a fixed view and a random training view.

Both views are bilinear resamplings written as two small matrix products per
image (rows, then columns), so cropping, resizing and flipping are all just
choices of the interpolation matrices, and the views run on the device inside
the compiled network: `FixedView` for feature extraction, `RandomView` for
training. Only uint8 images and, for training, five numbers per image (the
crop box and the flip, drawn with NumPy on the host so that every backend
gets the same crops) cross to the device. Resampling is bilinear with
torchvision's half-pixel convention (``align_corners=False``), antialiased
when it shrinks (a crop larger than the view, as ImageNet's are), which is
what torchvision's transforms do on PIL images. The resampling matrices are
written once (`window_matrices`), over the array operations of
`keras_deepcluster.platform.array_ops`: NumPy for the fixed view's, `keras.ops`
(or direct torch calls, on the PyTorch route) for the random view's.
"""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np
from keras import ops

from keras_deepcluster.platform import array_ops
from keras_deepcluster.settings import VIEW_PRESETS as _PRESETS


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

    Examples:
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

    def random_boxes(self, n: int, height: int, width: int, rng: np.random.Generator):
        """The random view's draws for `n` images: what `RandomView` crops and flips.

        Returns:
            float32 (n, 5): top, left, height and width of each crop (torchvision's
            ``RandomResizedCrop`` parameters) and 1 where the view is flipped.
        """
        top, left, ch, cw = _sample_crops(n, height, width, self.scale, self.ratio, rng)
        flipped = rng.random(n) < 0.5 if self.flip else np.zeros(n, bool)
        return np.stack([top, left, ch, cw, flipped], axis=1).astype(np.float32)

    def whole_image_boxes(self, n: int, height: int, width: int) -> np.ndarray:
        """Boxes (n, 5) that view each whole image, unflipped."""
        return np.tile(np.array([[0, 0, height, width, 0]], np.float32), (n, 1))

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
        x = array_ops.KERAS.unit_float(images)
        x = ops.einsum("sh,nhwc->nswc", ops.convert_to_tensor(self._rows), x)
        x = ops.einsum("tw,nswc->nstc", ops.convert_to_tensor(self._cols), x)
        return array_ops.KERAS.normalise(x, self.views.mean, self.views.std)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.views.size, self.views.size, input_shape[3])

    def get_config(self):
        return {**super().get_config(), "views": views_config(self.views), "flip": self.flip}

    @classmethod
    def from_config(cls, config):
        return cls(views_from_config(config.pop("views")), **config)


def fixed_view_layers(
    views: ImageViews, height: int, width: int, uint8: bool
) -> list[keras.layers.Layer]:
    """`FixedView` as built-in Keras layers, applied in order, for a model without this package.

    Scaling to [0, 1] (`Rescaling`), the fixed view's resampling of rows then
    columns (two frozen `EinsumDense` layers holding `ImageViews.fixed_matrices`)
    and the normalisation (`Rescaling` by 1 / std, offset -mean / std): what `FixedView` gives for
    `height` x `width` images, up to float rounding, in layers that plain
    Keras loads and that ONNX and LiteRT converters know.

    Args:
        views: The `ImageViews` whose fixed view to compute.
        height: The images' height.
        width: The images' width.
        uint8: Whether the images are uint8 in [0, 255] (else float in [0, 1]).
    """
    rows, cols = views.fixed_matrices(height, width)
    size, channels = views.size, views.channels
    resample_rows = keras.layers.EinsumDense(
        "nhwc,hs->nswc", (size, width, channels), trainable=False, name="view_rows"
    )
    resample_cols = keras.layers.EinsumDense(
        "nswc,wt->nstc", (size, size, channels), trainable=False, name="view_cols"
    )
    resample_rows.build((None, height, width, channels))
    resample_cols.build((None, size, width, channels))
    resample_rows.set_weights([rows.T])
    resample_cols.set_weights([cols.T])
    return [
        keras.layers.Rescaling(1 / 255 if uint8 else 1.0, name="view_scale"),
        resample_rows,
        resample_cols,
        # (x - mean) / std as x * scale + offset: constants, where `Normalization`'s
        # tensors would become inputs of a model converted to ONNX from TensorFlow.
        keras.layers.Rescaling(
            [1 / s for s in views.std],
            [-m / s for m, s in zip(views.mean, views.std)],
            name="view_normalise",
        ),
    ]


@keras.saving.register_keras_serializable(package="keras_deepcluster")
class RandomView(keras.layers.Layer):
    """The random training view, computed where the network runs.

    Takes NHWC images (uint8 in [0, 255] or float in [0, 1]) and their boxes
    from `ImageViews.random_boxes` (drawn on the host), and gives each image's
    crop resized to ``views.size`` (bilinear, antialiased when shrinking), flipped where
    its box says so, normalised. `DeepCluster` applies it to the batches of a
    `PseudoLabelDataset`.

    Args:
        views: The `ImageViews` (output size, normalisation).

    Examples:
        >>> views = ImageViews.for_dataset("mnist")
        >>> images = np.zeros((4, 28, 28, 1), "uint8")
        >>> boxes = views.random_boxes(4, 28, 28, np.random.default_rng(0))
        >>> RandomView(views)(images, boxes).shape
        (4, 32, 32, 1)
    """

    def __init__(self, views: ImageViews, **kwargs):
        super().__init__(**kwargs)
        self.views = views

    def call(self, images, boxes):
        return random_view(images, boxes, self.views)

    def compute_output_shape(self, images_shape, boxes_shape):
        return (images_shape[0], self.views.size, self.views.size, images_shape[3])

    def get_config(self):
        return {**super().get_config(), "views": views_config(self.views)}

    @classmethod
    def from_config(cls, config):
        return cls(views_from_config(config.pop("views")), **config)


def random_view(images, boxes, views: ImageViews, xp=array_ops.KERAS):
    """`RandomView`'s computation (see there), with the array operations `xp`."""
    x = xp.unit_float(images)
    boxes = xp.float32(boxes)
    rows = window_matrices(boxes[:, 0], boxes[:, 2], x.shape[1], views.size, xp=xp)
    cols = window_matrices(boxes[:, 1], boxes[:, 3], x.shape[2], views.size, boxes[:, 4], xp)
    x = xp.einsum("bsh,bhwc->bswc", rows, x)
    x = xp.einsum("btw,bswc->bstc", cols, x)
    return xp.normalise(x, views.mean, views.std)


def window_matrices(start, length, n_in: int, n_out: int, flip=None, xp=array_ops.KERAS):
    """Matrices (B, n_out, n_in) resampling each window [start, start + length) to n_out.

    Bilinear with half-pixel centres; when shrinking, the triangle filter is
    widened by the scale factor (antialiasing, as Pillow's and torchvision's
    ``antialias=True`` resize). Near the window's edges the weights of the
    pixels inside are renormalised, which is edge clamping when enlarging.

    Args:
        start: (B,) float first pixel of each window.
        length: (B,) float length of each window, in pixels.
        n_in: Pixels of the image along this axis.
        n_out: Pixels of the view along this axis.
        flip: (B,) 1 where the output order is reversed, 0 where not; None: never.
        xp: The array operations (`array_ops.KERAS`, `NUMPY`, or the torch twin's).
    """
    out = xp.arange(n_out, start)[None, :]
    if flip is not None:
        out = xp.where(flip[:, None] > 0.5, (n_out - 1) - out, out)
    length = length[:, None]
    scale = length / n_out
    centre = (out + 0.5) * scale - 0.5  # in pixels of the window
    support = xp.maximum(scale, 1.0)[..., None]
    pixels = xp.arange(n_in, start)[None, None, :] - start[:, None, None]
    inside = xp.both(pixels >= 0, pixels < length[..., None])
    weights = xp.relu(1 - xp.abs(pixels - centre[..., None]) / support) * inside
    return weights / xp.sum_last(weights)


def views_config(views: ImageViews) -> dict:
    """`views` as a JSON-able dict, for `get_config`."""
    return dataclasses.asdict(views)


def views_from_config(config: dict) -> ImageViews:
    """The `ImageViews` that `views_config` described."""
    return ImageViews(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})


def _as_nhwc(images: np.ndarray) -> np.ndarray:
    """uint8 in [0, 255] or float in [0, 1], NHW or NHWC -> float32 NHWC in [0, 1]."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.dtype == np.uint8:
        return images.astype(np.float32) * np.float32(1 / 255)
    return images.astype(np.float32, copy=False)


def _interpolation(n_in: int, n_out: int) -> np.ndarray:
    """Bilinear resampling matrix (n_out, n_in), half-pixel centres, float32 of float64 maths."""
    whole = window_matrices(np.zeros(1), np.full(1, float(n_in)), n_in, n_out, xp=array_ops.NUMPY)
    return whole[0].astype(np.float32)


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
