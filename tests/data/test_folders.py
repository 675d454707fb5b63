"""Photo folders as people keep them: nested, mixed, with broken files, read whole."""

import numpy as np
import pytest
from PIL import Image

from keras_deepcluster import data

pytestmark = pytest.mark.backend_independent

# A photo collection: nested date and trip folders, names restarting in each folder.
NESTED = {
    "phone/2021-06": 5,
    "phone/2022-01/trip": 4,
    "camera/dump/old": 3,
    "scans": 2,
    "shared/from_anna/batch 2": 3,
}


def photo_folder(root):
    rng = np.random.default_rng(0)
    for folder, count in NESTED.items():
        (root / folder).mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 255, (20 + i, 30, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / folder / f"img_{i:04d}.png")
    (root / "phone" / "2021-06" / "fake.png").write_text("not an image")
    jpeg = root / "camera" / "dump" / "broken.jpg"
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(jpeg)
    jpeg.write_bytes(jpeg.read_bytes()[:100])
    (root / "scans" / "notes.txt").write_text("scanned 2019")
    (root / ".DS_Store").write_bytes(b"\0\1")
    (root / "phone" / "loop").symlink_to(root)  # a link back up: not followed
    outside = root.parent / "elsewhere"  # a link out of the folder: followed once
    outside.mkdir()
    Image.fromarray(np.zeros((24, 24, 3), np.uint8)).save(outside / "img_0000.png")
    (root / "shared" / "elsewhere").symlink_to(outside)
    return sum(NESTED.values()) + 1


def test_a_nested_photo_folder_is_read_whole_without_labels(tmp_path):
    images = photo_folder(tmp_path / "photos")
    cache = data.prepare("folder", path=tmp_path / "photos", size=16, out=tmp_path / "cache")
    loaded = cache.data()
    assert len(loaded.x_train) == images and loaded.y_train is None
    assert loaded.class_names is None
    files = cache.files("train")
    assert (
        "phone/2022-01/trip/img_0003.png" in files
        and "shared/from_anna/batch 2/img_0000.png" in files
    )
    assert not any("loop" in name for name in files)
    skipped = {entry["file"] for entry in cache.manifest["skipped"]}
    expected = ("phone/2021-06/fake.png", "camera/dump/broken.jpg", "scans/notes.txt")
    assert skipped == {str(tmp_path / "photos" / name) for name in expected}
    found = "\n".join(cache.describe())
    assert "shared/elsewhere/img_0000.png" in files
    assert f"{images + 3} files in 7 folders, no labels" in found
    assert "--labels inferred" in found


def test_inferred_labels_take_the_top_level_folders_with_everything_below(tmp_path):
    images = photo_folder(tmp_path / "photos")
    cache = data.prepare(
        "folder", path=tmp_path / "photos", size=16, out=tmp_path / "cache", labels="inferred"
    )
    loaded = cache.data()
    assert loaded.class_names == ["camera", "phone", "scans", "shared"]
    assert len(loaded.x_train) == images
    counts = np.bincount(loaded.y_train, minlength=4).tolist()
    assert counts == [3, 9, 2, 4]  # the readable images under each top-level folder
    assert "in 4 class folders (camera, phone, scans, shared)" in "\n".join(cache.describe())


def test_flat_class_folders_are_labelled_by_default_and_loose_files_reported(tmp_path):
    data.write_image_folder(tmp_path / "classes", 12, classes=3, sizes=(20, 30))
    loaded = data.prepare("folder", path=tmp_path / "classes", size=16, out=tmp_path / "a").data()
    assert loaded.class_names == ["class_0", "class_1", "class_2"]
    assert np.bincount(loaded.y_train).tolist() == [4, 4, 4]
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "classes" / "stray.png")
    whole = data.prepare("folder", path=tmp_path / "classes", size=16, out=tmp_path / "b")
    assert len(whole.data().x_train) == 13 and whole.data().y_train is None  # auto: none
    inferred = data.prepare(
        "folder", path=tmp_path / "classes", size=16, out=tmp_path / "c", labels="inferred"
    )
    assert len(inferred.data().x_train) == 12
    assert "1 files beside the class folders belong to no class: left out" in "\n".join(
        inferred.describe()
    )


def test_bad_label_modes_are_refused(tmp_path):
    photo_folder(tmp_path / "photos")
    with pytest.raises(ValueError, match="labels must be one of auto, inferred, none"):
        data.prepare("folder", path=tmp_path / "photos", size=16, labels="classes")
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(flat / "a.png")
    with pytest.raises(ValueError, match="takes the sub-folders of .* as classes, but it has none"):
        data.prepare("folder", path=flat, size=16, labels="inferred")


def test_the_in_memory_loader_reads_the_same_files(tmp_path):
    data.write_image_folder(tmp_path / "classes", 8, classes=2, sizes=(20, 20))
    for path in list((tmp_path / "classes").rglob("*.*")):
        Image.open(path).convert("L").resize((20, 20)).save(path.with_suffix(".png"))
        if path.suffix != ".png":
            path.unlink()
    loaded = data.load("folder", path=tmp_path / "classes", labels="none")
    assert len(loaded.x_train) == 8 and loaded.y_train is None
    labelled = data.load("folder", path=tmp_path / "classes")
    assert labelled.class_names == ["class_0", "class_1"]
