"""Any image to one shape: decoding, colour conversion and the resize rule of the image cache.

The rule (that of the usual ImageNet preprocessing, ``Resize(S)`` then
``CenterCrop(S)``): the image is resized so that its shorter side is S and
the centre S x S square is kept. It is computed as one resampling of the
centre square of side min(H, W) to S x S (Pillow, bilinear, antialiased when
shrinking), which is that rule up to sub-pixel rounding of the crop offset.

Colours: EXIF orientation is applied; transparent images (RGBA, LA, palette
with transparency) are composited on `BACKGROUND` (white); CMYK, YCbCr,
palette and the other Pillow modes are converted to RGB; 16-bit and 32-bit
integer images are scaled from [0, 65535] to [0, 255]. Then the image becomes
grayscale (ITU-R 601-2 luma) or RGB (gray replicated), as asked.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

# What transparent pixels are composited on.
BACKGROUND = (255, 255, 255)
RESIZE_RULE = (
    "shorter side resized to S and centre S x S crop (one bilinear, antialiased resampling of "
    f"the centre square); EXIF orientation applied; transparency composited on RGB {BACKGROUND}; "
    "16-bit scaled to 8-bit"
)


def decode_file(path: str | Path, size: int, channels: int) -> np.ndarray:
    """The image file at `path` as uint8 (size, size, channels), by the module's rule.

    Raises:
        ValueError: the file is not an image Pillow can read, or is truncated.
    """
    from PIL import Image, ImageOps

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                # JPEG: decode at the smallest 1/2^k scale that keeps both sides >= size.
                image.draft("RGB" if channels == 3 else "L", (size, size))
                image = ImageOps.exif_transpose(image)
                return resize_square(to_channels(image, channels), size)
    except (
        OSError,
        ValueError,
        SyntaxError,
        EOFError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as error:
        raise ValueError(f"{type(error).__name__}: {error}") from None


def decode_array(image: np.ndarray, size: int | None, channels: int) -> np.ndarray:
    """A uint8 (H, W[, C]) array as (size, size, channels); `size` None keeps H and W."""
    image = image if image.ndim == 3 else image[..., None]
    if image.shape[-1] == channels and (size is None or image.shape[:2] == (size, size)):
        return image
    if size is None and image.shape[-1] == 1 and channels == 3:
        return np.repeat(image, 3, axis=-1)
    from PIL import Image

    mode = {1: "L", 3: "RGB", 4: "RGBA"}.get(image.shape[-1])
    if mode is None:
        raise ValueError(f"Images with {image.shape[-1]} channels cannot be converted.")
    pil = to_channels(Image.fromarray(image[..., 0] if mode == "L" else image, mode), channels)
    if size is None:
        return _as_hwc(np.asarray(pil))
    return resize_square(pil, size)


def to_channels(image, channels: int):
    """A Pillow image in mode ``"L"`` (`channels` 1) or ``"RGB"`` (3)."""
    from PIL import Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image, np.float64)
        if image.mode != "F" or values.max(initial=0) > 255:
            values = values / 257
        image = Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8), "L")
    if image.mode == "P" and "transparency" in image.info or image.mode in ("PA", "LA", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = Image.new("RGBA", image.size, BACKGROUND + (255,))
        image = Image.alpha_composite(background, image)
    target = "L" if channels == 1 else "RGB"
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    return image if image.mode == target else image.convert(target)


def resize_square(image, size: int) -> np.ndarray:
    """The centre square of a Pillow image resized to (size, size), as uint8 HWC."""
    from PIL import Image

    width, height = image.size
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    if (width, height) != (size, size):
        image = image.resize(
            (size, size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side)
        )
    return _as_hwc(np.asarray(image))


def _as_hwc(array: np.ndarray) -> np.ndarray:
    return array[..., None] if array.ndim == 2 else array
