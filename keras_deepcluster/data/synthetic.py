"""A folder of synthetic photos of every size, mode and format, to try the image cache on.

Examples:
    >>> write_image_folder("/tmp/shapes", 1000, classes=4, corrupt=3)
    >>> # deepcluster train cifar10 --source folder --data-dir /tmp/shapes --epochs 1
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MODES = ("RGB", "L", "RGBA", "P")
FORMATS = ("JPEG", "PNG", "WEBP")
_SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}


def write_image_folder(
    folder: str | Path,
    n: int,
    classes: int = 4,
    sizes: tuple[int, int] = (48, 512),
    corrupt: int = 0,
    seed: int = 0,
) -> list[Path]:
    """Writes `n` images into ``folder/class_<c>/`` and returns the corrupt files' paths.

    Each image has a random width and height in `sizes`, a random mode
    (`MODES`) and format (`FORMATS`; palette and transparent images go to PNG
    or WebP, which keep them). Class c is a filled ellipse of a colour and
    size of its own on a noisy background, at a random place. `corrupt`
    more files are written: truncated JPEGs and text files named ``.png``.
    """
    from PIL import Image, ImageDraw

    folder = Path(folder)
    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 256, (classes, 3))
    for c in range(classes):
        (folder / f"class_{c}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        c = i % classes
        width, height = (int(v) for v in rng.integers(sizes[0], sizes[1] + 1, 2))
        noise = rng.integers(0, 64, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
        image = Image.fromarray(noise).resize((width, height), Image.Resampling.NEAREST)
        radius = min(width, height) * (0.15 + 0.6 * c / max(classes - 1, 1)) / 2
        x, y = rng.uniform(radius, width - radius), rng.uniform(radius, height - radius)
        ImageDraw.Draw(image).ellipse(
            (x - radius, y - radius, x + radius, y + radius), fill=tuple(int(v) for v in palette[c])
        )
        mode = MODES[rng.integers(len(MODES))]
        image = image.convert(mode) if mode != "P" else image.quantize(16)
        if mode == "RGBA":
            image.putalpha(Image.fromarray(rng.integers(128, 256, (height, width), np.uint8)))
        formats = FORMATS if mode in ("RGB", "L") else FORMATS[1:]
        kind = formats[rng.integers(len(formats))]
        image.save(folder / f"class_{c}" / f"{i:06d}{_SUFFIX[kind]}", kind)
    bad = []
    for j in range(corrupt):
        path = folder / f"class_{j % classes}" / f"corrupt_{j:03d}"
        if j % 2:
            path = path.with_suffix(".png")
            path.write_text("not an image")
        else:
            path = path.with_suffix(".jpg")
            Image.new("RGB", (300, 200), (200, 30, 30)).save(path, "JPEG")
            path.write_bytes(path.read_bytes()[:400])
        bad.append(path)
    return bad
