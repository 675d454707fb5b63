"""The image cache: DiskImages, decoding any image, building, reusing, resuming, bad input."""

import errno
import json
import os
import pickle
import zlib

import numpy as np
import pytest
from conftest import invoke
from PIL import Image
from test_data import write_idx

from keras_deepcluster import data
from keras_deepcluster.data import decoding, image_cache
from keras_deepcluster.data.disk_images import DiskImages

# Decoding and caching are NumPy and Pillow: on one backend. The tests that train or
# probe on a cache run on every backend.
independent = pytest.mark.backend_independent


@pytest.fixture
def on_disk(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (50, 5, 4, 3), dtype=np.uint8)
    np.save(tmp_path / "images.npy", array)
    return array, DiskImages(tmp_path / "images.npy")


@independent
def test_disk_images_index_as_numpy(on_disk):
    array, images = on_disk
    assert images.shape == array.shape and len(images) == 50 and images.dtype == np.uint8
    picks = np.array([7, 3, 3, 49, -1, 0])
    for key in (4, -2, slice(None), slice(10, 20), slice(3, 40, 7), slice(None, None, -5), picks):
        np.testing.assert_array_equal(images[key], array[key])
    mask = np.arange(50) % 3 == 0
    np.testing.assert_array_equal(images[mask], array[mask])
    np.testing.assert_array_equal(images[..., None], array[..., None])
    subset = images.take(np.array([9, 2, 40]))  # reads nothing
    assert subset.shape == (3, 5, 4, 3)
    np.testing.assert_array_equal(subset[[2, 0]], array[[40, 9]])
    np.testing.assert_array_equal(subset.take([1])[0], array[2])
    np.testing.assert_array_equal(np.asarray(subset), array[[9, 2, 40]])
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(subset))[:], array[[9, 2, 40]])
    with pytest.raises(IndexError, match="out of range for 50 images"):
        images[np.array([50])]


@independent
def test_disk_images_refuse_other_arrays(tmp_path):
    np.save(tmp_path / "float.npy", np.zeros((2, 3, 3, 1), np.float32))
    with pytest.raises(ValueError, match=r"holds a float32 array .* uint8 \(N, H, W, C\)"):
        DiskImages(tmp_path / "float.npy")
    np.save(tmp_path / "cut.npy", np.zeros((10, 8, 8, 1), np.uint8))
    (tmp_path / "cut.npy").write_bytes((tmp_path / "cut.npy").read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated"):
        DiskImages(tmp_path / "cut.npy")
    (tmp_path / "text.npy").write_text("hello")
    with pytest.raises(ValueError, match="Cannot read .* as a .npy file"):
        DiskImages(tmp_path / "text.npy")


def _saved(tmp_path, image, name="x.png", **kwargs):
    path = tmp_path / name
    image.save(path, **kwargs)
    return path


@independent
def test_decoding_modes_to_gray_or_rgb(tmp_path):
    rgba = Image.new("RGBA", (6, 6), (10, 20, 30, 0))  # fully transparent -> the background
    assert (decoding.decode_file(_saved(tmp_path, rgba), 6, 3) == 255).all()
    half = Image.new("RGBA", (6, 6), (0, 0, 0, 128))
    assert abs(int(decoding.decode_file(_saved(tmp_path, half), 6, 1)[0, 0, 0]) - 127) <= 1
    palette = Image.new("P", (6, 6), 1)
    palette.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    np.testing.assert_array_equal(
        decoding.decode_file(_saved(tmp_path, palette), 6, 3)[0, 0], [200, 100, 50]
    )
    cmyk = Image.new("CMYK", (6, 6), (0, 255, 255, 0))  # red
    assert tuple(decoding.decode_file(_saved(tmp_path, cmyk, "c.jpg"), 6, 3)[0, 0])[0] > 200
    deep = Image.fromarray(np.full((6, 6), 257 * 100, np.uint16))
    assert (decoding.decode_file(_saved(tmp_path, deep), 6, 1) == 100).all()
    gray = Image.new("L", (6, 6), 77)
    assert decoding.decode_file(_saved(tmp_path, gray), 6, 3).shape == (6, 6, 3)
    assert (decoding.decode_file(_saved(tmp_path, gray), 6, 3) == 77).all()


@independent
def test_decoding_resize_rule_and_exif_orientation(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (40, 100, 3), dtype=np.uint8)
    out = decoding.decode_file(_saved(tmp_path, Image.fromarray(array)), 20, 3)
    # Shorter side to 20 (100 x 40 -> 50 x 20), then the centre 20 x 20.
    resized = np.asarray(Image.fromarray(array).resize((50, 20), Image.BILINEAR))
    expected = resized[:, 15:35]
    assert out.shape == (20, 20, 3)
    assert np.abs(out.astype(int) - expected).max() <= 1
    # EXIF orientation 3 (rotated 180 degrees): the decoded image is turned back.
    left_dark = np.zeros((30, 30), np.uint8)
    left_dark[:, 15:] = 255
    exif = Image.Exif()
    exif[0x0112] = 3
    path = _saved(tmp_path, Image.fromarray(left_dark), "o.png", exif=exif)
    out = decoding.decode_file(path, 30, 1)[..., 0]
    assert out[:, :10].min() == 255 and out[:, 20:].max() == 0


@independent
def test_decoding_refuses_what_is_not_an_image(tmp_path):
    (tmp_path / "a.png").write_text("no")
    with pytest.raises(ValueError, match="UnidentifiedImageError"):
        decoding.decode_file(tmp_path / "a.png", 8, 3)


@independent
def test_folder_of_mixed_images_is_cached(tmp_path):
    bad = data.write_image_folder(tmp_path / "photos", 40, classes=4, sizes=(20, 90), corrupt=2)
    notes = []
    cache = data.prepare(
        "folder", path=tmp_path / "photos", size=16, out=tmp_path / "c", on_note=notes.append
    )
    assert cache.built and not notes
    cached = cache.data()
    assert cached.x_train.shape == (40, 16, 16, 3) and isinstance(cached.x_train, DiskImages)
    assert np.bincount(cached.y_train).tolist() == [10] * 4
    manifest = cache.manifest
    assert sorted(s["file"] for s in manifest["skipped"]) == sorted(str(p) for p in bad)
    assert all(s["reason"] for s in manifest["skipped"])
    assert manifest["image_shape"] == [16, 16, 3] and "pillow" in manifest["versions"]
    entry = manifest["splits"]["train"]
    raw = DiskImages(tmp_path / "c" / entry["images"])[: image_cache.CHUNK]
    assert entry["crc32"][0] == zlib.crc32(raw) and len(entry["crc32"]) == 1
    assert len((tmp_path / "c" / "files.tsv").read_text().splitlines()) == 42
    assert not (tmp_path / "c" / image_cache.BUILDING).exists()
    # The same settings: reused, not rebuilt.
    again = data.prepare("folder", path=tmp_path / "photos", size=16, out=tmp_path / "c")
    assert not again.built
    # A changed source: rebuilt, with a note.
    Image.new("RGB", (30, 30)).save(tmp_path / "photos" / "class_0" / "new.png")
    rebuilt = data.prepare(
        "folder", path=tmp_path / "photos", size=16, out=tmp_path / "c", on_note=notes.append
    )
    assert rebuilt.built and "changed since its cache" in notes[0]
    assert len(rebuilt.data().x_train) == 41
    # Other settings in an explicit folder: refused.
    with pytest.raises(ValueError, match=r"other settings: image_shape \[16, 16, 3\]"):
        data.prepare("folder", path=tmp_path / "photos", size=24, out=tmp_path / "c")
    # Reading the cache back: load("cache", ...) and its train/val layout.
    np.testing.assert_array_equal(
        data.load("cache", path=tmp_path / "c").x_train[:5], rebuilt.data().x_train[:5]
    )


@independent
def test_train_and_val_folders_give_two_splits(tmp_path):
    data.write_image_folder(tmp_path / "tree" / "train", 12, classes=3, sizes=(20, 40))
    data.write_image_folder(tmp_path / "tree" / "val", 6, classes=3, sizes=(20, 40), seed=1)
    cached = data.prepare("folder", path=tmp_path / "tree", size=8, channels=1, limit=9).data()
    assert cached.x_train.shape == (9, 8, 8, 1) and cached.x_test.shape == (6, 8, 8, 1)
    assert cached.y_test.tolist() == [0, 0, 1, 1, 2, 2]
    assert str(image_cache.default_cache_root()) in str(cached.x_train.path)


@independent
def test_bad_folders_and_cache_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="No images in .*empty"):
        data.prepare("folder", path=tmp_path / "empty", size=8)
    (tmp_path / "junk").mkdir()
    for i in range(3):
        (tmp_path / "junk" / f"{i}.jpg").write_text("not a jpeg")
    with pytest.raises(ValueError, match=r"None of the 3 files of the train split could be read"):
        data.prepare("folder", path=tmp_path / "junk", size=8)
    data.write_image_folder(tmp_path / "ok", 4, sizes=(20, 30))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="holds files that are not an image cache"):
        data.prepare("folder", path=tmp_path / "ok", size=8, out=tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="do not all have one size; give the side S"):
        data.prepare("folder", path=tmp_path / "ok")
    with pytest.raises(ValueError, match="channels must be 1 .* or None; got 2"):
        data.prepare("folder", path=tmp_path / "ok", size=8, channels=2)
    with pytest.raises(ValueError, match="is not an image cache"):
        data.load("cache", path=tmp_path / "mine")


@independent
def test_interrupted_build_resumes_where_it_stopped(tmp_path, monkeypatch):
    monkeypatch.setattr(image_cache, "CHUNK", 4)
    data.write_image_folder(tmp_path / "p", 18, sizes=(20, 40), corrupt=1)
    clean = data.prepare("folder", path=tmp_path / "p", size=8, out=tmp_path / "clean").data()
    decoded = []
    real_decode = image_cache.decode_file
    monkeypatch.setattr(
        image_cache, "decode_file", lambda *a: decoded.append(a[0]) or real_decode(*a)
    )

    def stop_after_two_chunks(done, total):
        if done >= 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        data.prepare(
            "folder",
            path=tmp_path / "p",
            size=8,
            out=tmp_path / "c",
            on_progress=stop_after_two_chunks,
        )
    assert not (tmp_path / "c" / image_cache.MANIFEST).exists()
    with pytest.raises(ValueError, match="not an image cache"):
        image_cache.ImageCache(tmp_path / "c")  # a half-built cache is never used
    decoded.clear()
    resumed = data.prepare("folder", path=tmp_path / "p", size=8, out=tmp_path / "c").data()
    assert len(decoded) == 19 - 8
    np.testing.assert_array_equal(resumed.x_train[:], clean.x_train[:])
    np.testing.assert_array_equal(resumed.y_train, clean.y_train)


@independent
def test_full_disk_leaves_no_cache(tmp_path, monkeypatch):
    data.write_image_folder(tmp_path / "p", 4, sizes=(20, 30))

    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    with pytest.raises(OSError, match=r"No space left for the image cache .* needs 0.00 GiB"):
        data.prepare("folder", path=tmp_path / "p", size=8, out=tmp_path / "c")
    assert not list((tmp_path / "c").glob("*.npy"))
    assert not (tmp_path / "c" / image_cache.MANIFEST).exists()


@independent
def test_decoding_in_worker_processes(tmp_path, monkeypatch):
    monkeypatch.setattr(image_cache, "PARALLEL_FROM", 1)
    data.write_image_folder(tmp_path / "p", 600, sizes=(16, 24), corrupt=2)
    parallel = data.prepare("folder", path=tmp_path / "p", size=8, out=tmp_path / "a", workers=2)
    serial = data.prepare("folder", path=tmp_path / "p", size=8, out=tmp_path / "b", workers=1)
    np.testing.assert_array_equal(parallel.data().x_train[:], serial.data().x_train[:])
    assert len(parallel.manifest["skipped"]) == 2


@independent
def test_array_sources_stream_into_the_cache(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (300, 6, 5), dtype=np.uint8)
    y = rng.integers(0, 10, 300)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", x)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", y)
    cached = data.prepare("idx", path=tmp_path, limit=280).data()
    assert cached.x_train.shape == (280, 6, 5, 1)
    np.testing.assert_array_equal(cached.x_train[:], x[:280, ..., None])
    np.testing.assert_array_equal(cached.y_train, y[:280])
    rgb = data.prepare("idx", path=tmp_path, size=4, channels=3).data().x_train
    assert rgb.shape == (300, 4, 4, 3) and (rgb[:, :, :, 0] == rgb[:, :, :, 2]).all()
    np.savez(tmp_path / "f.npz", x=x.astype(np.float32) / 255, y=y)
    from_npz = data.prepare("npz", path=tmp_path / "f.npz").data()
    np.testing.assert_array_equal(from_npz.x_train[:], x[..., None])
    np.savez(tmp_path / "bad.npz", x=x.astype(np.float32))
    with pytest.raises(ValueError, match="float images must lie in"):
        data.prepare("npz", path=tmp_path / "bad.npz")


@independent
def test_tfds_is_streamed_into_the_cache():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=40):
        in_memory = data.load("tfds", "mnist")
        cached = data.prepare("tfds", "mnist", limit=30).data()
    np.testing.assert_array_equal(cached.x_train[:], in_memory.x_train[:30])
    np.testing.assert_array_equal(cached.y_train, in_memory.y_train[:30])
    assert cached.x_test.shape == in_memory.x_test.shape


@independent
def test_manifest_is_json_with_the_rule(tmp_path):
    data.write_image_folder(tmp_path / "p", 3, sizes=(20, 30))
    cache = data.prepare("folder", path=tmp_path / "p", size=8, out=tmp_path / "c")
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["rule"] == decoding.RESIZE_RULE and manifest["source"] == "folder"
    assert manifest == cache.manifest


class NoFullCopy(DiskImages):
    """Images whose whole-array conversion fails: what uses them must read batches."""

    def __array__(self, dtype=None, copy=None):
        raise AssertionError("a full copy of the images was made")

    def take(self, indices):
        return NoFullCopy(self.path, self._file_rows(np.asarray(indices)))


def test_training_and_the_probe_read_the_cache_a_batch_at_a_time(tmp_path, shapes):
    from test_reclustering import run

    from keras_deepcluster import FeatureExtractor, ImageViews, PseudoLabelDataset, backbones
    from keras_deepcluster.evaluation import linear_probe

    images, labels = shapes(256)
    np.save(tmp_path / "x.npy", images[..., None])
    on_disk = NoFullCopy(tmp_path / "x.npy")
    views = ImageViews.for_dataset("mnist")
    batches = [PseudoLabelDataset(x, views, batch_size=32, seed=0) for x in (on_disk, images)]
    for dataset in batches:
        dataset.set_pseudo_labels(np.arange(256) % 5, epoch=1)
    (disk_inputs, disk_labels), (memory_inputs, memory_labels) = batches[0][3], batches[1][3]
    np.testing.assert_array_equal(disk_inputs["images"], memory_inputs["images"])
    np.testing.assert_array_equal(disk_inputs["boxes"], memory_inputs["boxes"])
    np.testing.assert_array_equal(disk_labels, memory_labels)
    backbone = backbones.lenet(seed=0)
    extractor = FeatureExtractor(backbone, views)
    np.testing.assert_allclose(extractor(on_disk, 100), extractor(images, 100), atol=1e-6)
    history, _, _, _ = run(on_disk, labels, k=4, epochs=2)
    assert len(history["nmi_labels"]) == 2
    train, test = np.arange(0, 256, 2), np.arange(1, 256, 2)
    result = linear_probe(
        backbone,
        "conv_2",
        (on_disk.take(train), labels[train]),
        (on_disk.take(test), labels[test]),
        views,
        epochs=2,
        flip=True,
    )
    expected = linear_probe(
        backbone,
        "conv_2",
        (images[train], labels[train]),
        (images[test], labels[test]),
        views,
        epochs=2,
        flip=True,
    )
    assert result.epoch_accuracies == expected.epoch_accuracies


def test_cli_prepare_then_train_from_the_cache(tmp_path):
    data.write_image_folder(tmp_path / "photos", 48, classes=3, sizes=(20, 70), corrupt=1)
    prepare = ("prepare", "folder", "--data-dir", tmp_path / "photos", "--size", "36")
    result = invoke(*prepare, "--out", tmp_path / "cache")
    assert result.exit_code == 0, result.output
    assert "48 train images (36, 36, 3); 1 unreadable files skipped" in result.output
    assert "corrupt_000.jpg" in result.output and "images/s" in result.output
    again = invoke(*prepare, "--out", tmp_path / "cache")
    assert "up to date (reused)" in again.output
    out = tmp_path / "run"
    result = invoke(
        "train",
        "cifar10",
        "--min-steps",
        "none",
        "--batch-size",
        "16",
        "--source",
        "cache",
        "--data-dir",
        tmp_path / "cache",
        "-k",
        "3",
        "--pca",
        "8",
        "--epochs",
        "1",
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    assert np.load(out / "pseudo_labels" / "epoch_000.npz")["labels"].shape == (48,)
    probe = invoke("probe", out, "--epochs", "1")
    assert probe.exit_code == 0, probe.output
    assert json.loads((out / "probe.json").read_text())["test_images"] == 10  # 20 % of 48


# One backend: the cache and recipe are Python; the 224-pixel AlexNet's layout is checked on
# every backend (test_backbones::test_imagenet_alexnet_layout) and training on small nets.
@pytest.mark.backend_independent
def test_cli_trains_on_a_mixed_folder_and_imagenet_recipe(tmp_path):
    data.write_image_folder(tmp_path / "photos" / "train", 40, classes=2, sizes=(48, 300))
    result = invoke(
        "train",
        "cifar10",
        "--min-steps",
        "none",
        "--batch-size",
        "16",
        "--source",
        "folder",
        "--data-dir",
        tmp_path / "photos",
        "-k",
        "3",
        "--pca",
        "8",
        "--epochs",
        "1",
        "--cache-dir",
        tmp_path / "caches",
        "--out",
        tmp_path / "run",
    )
    assert result.exit_code == 0, result.output
    assert "image cache" in result.output and (tmp_path / "caches").is_dir()
    result = invoke(
        "train",
        "imagenet",
        "--min-steps",
        "none",
        "--data-dir",
        tmp_path / "photos",
        "--limit",
        "32",
        "-k",
        "4",
        "--pca",
        "8",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--cache-dir",
        tmp_path / "caches",
        "--out",
        tmp_path / "imagenet",
    )
    assert result.exit_code == 0, result.output
    assert "32 train images (256, 256, 3)" in result.output
    too_small = tmp_path / "small.toml"
    recipe = (tmp_path / "imagenet" / "config.toml").read_text()
    too_small.write_text(recipe.replace("image_size = 256", "image_size = 200"))
    result = invoke("train", too_small, "--epochs", "1", "--out", tmp_path / "x")
    assert result.exit_code == 1
    assert "image_size=200 is smaller than the 224-pixel views" in result.output


def _undecodable(name: bytes) -> str:
    """A file name that is not UTF-8, as Python gives it (surrogate-escaped)."""
    return os.fsdecode(name)


@pytest.mark.backend_independent
def test_file_names_that_are_not_utf8_are_kept_and_printed_escaped(tmp_path):
    from keras_deepcluster.data.file_names import escape, unescape

    assert escape("plain/x.png") == "plain/x.png"
    odd = _undecodable(b"\xff\xfe\\ta\tb\n.png")
    assert escape(odd) == "\\xff\\xfe\\\\ta\\tb\\n.png" and unescape(escape(odd)) == odd
    # A data folder whose own name, a class folder's and files' names are not UTF-8.
    photos = tmp_path / _undecodable(b"ph\xf6tos")
    data.write_image_folder(photos, 40, classes=2, sizes=(20, 40))
    (photos / "class_0" / "000000.png").rename(photos / "class_0" / _undecodable(b"\xff\xfe.png"))
    (photos / "class_1").rename(photos / _undecodable(b"cl\xe4ss_1"))
    (photos / "class_0" / _undecodable(b"bad\xff.jpg")).write_bytes(b"not a jpeg")
    out = tmp_path / "run"
    result = invoke(
        "train", "cifar10", "--min-steps", "none", "--source", "folder", "--data-dir", photos,
        "--epochs", "1", "-k", "2", "--pca", "4", "--batch-size", "8", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "class_0/bad\\xff.jpg" in result.output  # the skipped file, printed escaped
    cache = data.ImageCache(json.loads((out / "data.json").read_text())["cache"])
    listing = (cache.path / "files.tsv").read_bytes().decode("utf-8")  # valid UTF-8 text
    assert "class_0/\\xff\\xfe.png\t" in listing and "cl\\xe4ss_1/" in listing
    files = cache.files("train")
    assert len(files) == 40 and all((photos / unescape(f)).is_file() for f in files)
    table = tmp_path / "clusters.csv"
    result = invoke("export", out, "--format", "csv", "--out", table,
                    "--link-clusters", tmp_path / "by_cluster")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "class_0/\\xff\\xfe.png" in table.read_text("utf-8")
    links = list((tmp_path / "by_cluster").rglob("*"))
    targets = [link.resolve() for link in links if link.is_symlink()]
    assert len(targets) == 40 and (photos / "class_0" / _undecodable(b"\xff\xfe.png")) in targets
