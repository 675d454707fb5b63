"""How fast the image cache is built: 256-pixel JPEGs, and a folder of every size, mode and format.

1. --jpegs N photo-like 256 x 256 RGB JPEGs (quality 90) are decoded alone on
   one core (`decode_file`, no writing), then cached at S = 256 (no resize)
   and S = 224 (an antialiased resize), with 1 worker process and with one
   per CPU; images per second, per core.
2. --mixed N images of random sizes (48-512 px), modes (L, RGB, RGBA, P)
   and formats (JPEG, PNG, WebP) with 20 corrupt files
   (`keras_deepcluster.data.write_image_folder`) are cached at S = 45 (the
   cifar10 recipe's default for folders) with one worker per CPU.

Each build starts from an empty cache folder; the image files were written
before (and are in the page cache, as on a second run over a dataset).

    python benchmarks/image_cache.py --out docs/benchmarks/image_cache.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np


def write_jpegs(folder: Path, n: int) -> None:
    """Smooth gradients, a few ellipses and mild noise: JPEGs of photo-like size (~20 KB)."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:256, :256]
    for i in range(n):
        a, b, c = rng.uniform(0.2, 2.0, 3)
        base = np.stack([x * a, y * b, (x + y) * c / 2], axis=-1) % 256
        image = Image.fromarray(base.astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(3):
            x0, y0 = rng.integers(0, 200, 2)
            draw.ellipse(
                (x0, y0, x0 + 56, y0 + 56), fill=tuple(int(v) for v in rng.integers(0, 256, 3))
            )
        pixels = np.asarray(image, np.int16) + rng.integers(-8, 8, (256, 256, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
            folder / f"{i:06d}.jpg", "JPEG", quality=90
        )


def decode_only(folder: Path, size: int, count: int = 2000) -> dict:
    """`decode_file` alone on one core (files read once before): no writing, no checksums."""
    from keras_deepcluster.data.decoding import decode_file

    files = sorted(folder.glob("*.jpg"))[:count]
    for file in files:
        file.read_bytes()
    start = time.perf_counter()
    for file in files:
        decode_file(file, size, 3)
    seconds = time.perf_counter() - start
    return {
        "size": size,
        "files": len(files),
        "seconds": seconds,
        "per_second": len(files) / seconds,
    }


def build(folder: Path, out: Path, size: int, workers: int) -> dict:
    from keras_deepcluster import data

    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    cache = data.prepare("folder", path=folder, size=size, out=out, workers=workers)
    seconds = time.perf_counter() - start
    images = cache.manifest["splits"]["train"]["shape"][0]
    return {
        "size": size,
        "workers": workers,
        "files": images,
        "skipped": len(cache.manifest["skipped"]),
        "seconds": seconds,
        "images_per_second": images / seconds,
        "images_per_second_per_worker": images / seconds / workers,
        # Until the last image was written: without listing the files and flushing them to disk.
        "seconds_decoding": cache.manifest["seconds_decoding"],
        "decoded_per_second_per_worker": images / cache.manifest["seconds_decoding"] / workers,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jpegs", type=int, default=8000)
    parser.add_argument("--mixed", type=int, default=20000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/kdc_image_cache_benchmark"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from keras_deepcluster import data

    cpus = len(os.sched_getaffinity(0))
    jpegs, mixed = args.work / "jpegs", args.work / "mixed"
    if len(list(jpegs.glob("*.jpg"))) != args.jpegs:
        shutil.rmtree(jpegs, ignore_errors=True)
        write_jpegs(jpegs, args.jpegs)
    rows = []
    decoding = [decode_only(jpegs, size) for size in (256, 224)]
    print(decoding, flush=True)
    for size in (256, 224):
        for workers in sorted({1, cpus}):
            rows.append(
                {"folder": "jpegs_256px", **build(jpegs, args.work / "cache", size, workers)}
            )
            print(rows[-1], flush=True)
    if args.mixed:
        written = args.work / f"mixed-{args.mixed}.written"
        if not written.exists():
            shutil.rmtree(mixed, ignore_errors=True)
            data.write_image_folder(mixed, args.mixed, classes=10, corrupt=20)
            written.write_text("")
        rows.append({"folder": "mixed", **build(mixed, args.work / "cache", 45, cpus)})
        print(rows[-1], flush=True)
    if args.out:
        sizes = [p.stat().st_size for p in sorted(jpegs.glob("*.jpg"))[:500]]
        args.out.write_text(
            json.dumps(
                {
                    "cpus": cpus,
                    "machine": platform.processor() or platform.machine(),
                    "jpeg_mean_bytes": float(np.mean(sizes)),
                    "decode_only_one_core": decoding,
                    "rows": rows,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
