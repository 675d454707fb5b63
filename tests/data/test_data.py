import gzip
import importlib.util
import os
import sys
import time

import numpy as np
import pytest
from PIL import Image

from keras_deepcluster import data

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"

# The loaders are NumPy, Pillow and tensorflow-datasets: on one backend.
pytestmark = pytest.mark.backend_independent


def write_idx(path, array, compress=True, truncate=0):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    raw = (header + array.astype(np.uint8).tobytes())[: len(header) + array.size - truncate]
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(raw)


@pytest.mark.parametrize("compress", [True, False])
def test_idx_directory_round_trip(tmp_path, compress):
    rng = np.random.default_rng(0)
    x, y = (
        rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, 12, dtype=np.uint8),
    )
    suffix = ".gz" if compress else ""
    write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", x, compress)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", y, compress)
    loaded = data.load("idx", path=tmp_path)
    np.testing.assert_array_equal(loaded.x_train[..., 0], x)
    np.testing.assert_array_equal(loaded.y_train, y)
    assert loaded.x_test is None and loaded.y_train.dtype == np.int64


def test_idx_errors(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((4, 5, 5)), truncate=3)
    with pytest.raises(
        ValueError, match=r"truncated or corrupt: its header promises 100 bytes .* holds 97"
    ):
        data.load("idx", path=tmp_path)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="Cannot read IDX file"):
        data.load("idx", path=tmp_path)
    (tmp_path / "train-images-idx3-ubyte.gz").unlink()
    with pytest.raises(ValueError, match="No train-images-idx3-ubyte"):
        data.load("idx", path=tmp_path)
    with pytest.raises(ValueError, match="does not exist or is not a directory"):
        data.load("idx", path=tmp_path / "missing")


def test_npz_both_layouts_and_float_images(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (6, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", x_train=x, y_train=np.arange(6), x_test=x[:2], y_test=np.arange(2))
    np.savez(tmp_path / "b.npz", x=x / 255.0)
    a, b = data.load("npz", path=tmp_path / "a.npz"), data.load("npz", path=tmp_path / "b.npz")
    assert a.x_train.shape == (6, 8, 8, 1) and a.x_test.shape == (2, 8, 8, 1)
    np.testing.assert_array_equal(b.x_train[..., 0], x)
    assert b.y_train is None


def test_npz_errors(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="Cannot read .*bad.npz as a .npz file"):
        data.load("npz", path=tmp_path / "bad.npz")
    np.savez(tmp_path / "keys.npz", images=np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match=r"holds \['images'\]; expected x_train"):
        data.load("npz", path=tmp_path / "keys.npz")
    np.savez(tmp_path / "len.npz", x=np.zeros((3, 4, 4), np.uint8), y=np.zeros(2))
    with pytest.raises(ValueError, match="train split has 3 images but 2 labels"):
        data.load("npz", path=tmp_path / "len.npz")
    # float64 holding 0..255: out of range, said with the values found.
    np.savez(tmp_path / "range.npz", x=np.linspace(0, 255, 48).reshape(3, 4, 4))
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]; these hold values from 0 to 255 "):
        data.load("npz", path=tmp_path / "range.npz")
    with_nan = np.zeros((3, 4, 4), np.float32)
    with_nan[2, 1, 3] = np.nan
    np.savez(tmp_path / "nan.npz", x=with_nan)
    with pytest.raises(ValueError, match=r"1 pixel values are NaN or inf \(the first at index "):
        data.load("npz", path=tmp_path / "nan.npz")
    np.savez(tmp_path / "int.npz", x=np.zeros((3, 4, 4), np.int64))
    with pytest.raises(ValueError, match=r"uint8, or float in \[0, 1\]; got int64"):
        data.load("npz", path=tmp_path / "int.npz")


def test_image_folder_labelled_and_unlabelled(tmp_path):
    for cls, value in (("cat", 10), ("dog", 200)):
        (tmp_path / "labelled" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((9, 7), value + i, np.uint8)).save(
                tmp_path / "labelled" / cls / f"{i}.png"
            )
    labelled = data.load("folder", path=tmp_path / "labelled")
    assert labelled.x_train.shape == (6, 9, 7, 1)
    np.testing.assert_array_equal(labelled.y_train, [0, 0, 0, 1, 1, 1])
    assert labelled.x_train[4, 0, 0, 0] == 201
    (tmp_path / "flat").mkdir()
    for i in range(2):
        Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(tmp_path / "flat" / f"{i}.png")
    flat = data.load("folder", path=tmp_path / "flat")
    assert flat.x_train.shape == (2, 5, 5, 3) and flat.y_train is None


def test_image_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="No images"):
        data.load("folder", path=tmp_path / "empty")
    (tmp_path / "mixed").mkdir()
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "mixed" / "a.png")
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(tmp_path / "mixed" / "b.png")
    with pytest.raises(
        ValueError, match=r"differ in size or mode: a.png is \(5, 5\), b.png is \(5, 5, 3\)"
    ):
        data.load("folder", path=tmp_path / "mixed")
    # Loose images beside a class folder: read whole, unlabelled (labels "auto"), or the
    # class folder's alone with labels "inferred" (loaded or cached alike).
    (tmp_path / "loose" / "cat").mkdir(parents=True)
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "loose" / "cat" / "0.png")
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "loose" / "stray.png")
    whole = data.load("folder", path=tmp_path / "loose")
    assert len(whole.x_train) == 2 and whole.y_train is None
    cached = data.prepare("folder", path=tmp_path / "loose", size=5, out=tmp_path / "cache")
    assert len(cached.data().x_train) == 2
    labelled = data.load("folder", path=tmp_path / "loose", labels="inferred")
    assert labelled.y_train.tolist() == [0] and labelled.class_names == ["cat"]


def test_tfds_with_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")  # absent where TensorFlow is (GPU check)

    with tfds.testing.mock_data(num_examples=7):
        loaded = data.load("tfds", "mnist")
    assert loaded.x_train.shape == (7, 28, 28, 1) and loaded.x_train.dtype == np.uint8
    assert loaded.y_train.shape == (7,) and loaded.x_test.shape[1:] == (28, 28, 1)


def test_without_tensorflow_datasets_tfds_is_refused_with_alternatives(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import fails
    with pytest.raises(ValueError, match="tensorflow-datasets cannot be imported.*'idx'"):
        data.load("tfds", "mnist")
    assert "tensorflow-datasets cannot be imported" in data.unavailable_reason("tfds", "mnist")


def test_tfds_without_data_fails_fast_with_alternatives(tmp_path, monkeypatch):
    pytest.importorskip("tensorflow_datasets")
    # Downloading forbidden (test_tfds_download.py has the download and the offline cases).
    monkeypatch.setenv("KERAS_DEEPCLUSTER_NO_DOWNLOAD", "1")
    start = time.perf_counter()
    with pytest.raises(ValueError, match="not prepared in .* downloading is off .* 'idx' source"):
        data.load("tfds", "mnist", path=tmp_path)
    assert time.perf_counter() - start < 30


def test_unavailable_reason_looks_without_loading(tmp_path):
    assert data.unavailable_reason("digits") is None
    assert "no train-images-idx3-ubyte" in data.unavailable_reason("idx", path=tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((2, 4, 4)))
    assert data.unavailable_reason("idx", path=tmp_path) is None
    assert data.unavailable_reason("folder", path=tmp_path).startswith("no images in")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "a.png")
    assert data.unavailable_reason("folder", path=tmp_path) is None
    assert (
        data.unavailable_reason("npz", path=tmp_path / "x.npz") == f"no file {tmp_path / 'x.npz'}"
    )
    if importlib.util.find_spec("tensorflow_datasets"):  # not where TensorFlow is missing
        assert "not prepared" in data.unavailable_reason("tfds", "mnist", tmp_path)
    assert "unknown source" in data.unavailable_reason("web")


def test_digits_and_bad_sources():
    digits = data.load("digits")
    assert digits.x_train.shape == (1797, 8, 8, 1) and digits.x_train.max() == 255
    assert sorted(set(digits.y_train)) == list(range(10))
    with pytest.raises(ValueError, match="Unknown data source 'web'; known sources: tfds, idx"):
        data.load("web")
    with pytest.raises(ValueError, match="needs a path"):
        data.load("npz")


@pytest.mark.skipif(
    not os.path.isdir(FASHION_MNIST), reason="needs apt-get install dataset-fashion-mnist"
)
def test_real_fashion_mnist_from_the_debian_package():
    fm = data.load("idx", "fashion_mnist", FASHION_MNIST)
    assert fm.x_train.shape == (60000, 28, 28, 1) and fm.x_test.shape == (10000, 28, 28, 1)
    assert np.bincount(fm.y_train).tolist() == [6000] * 10
