"""What the image cache reads: each source's splits as files to decode or arrays streamed in chunks.

Nothing here holds a whole split in memory: a folder is a list of files, and
IDX, ``.npz`` and TFDS splits are read a chunk of images at a time.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from keras_deepcluster.data.arrays import as_uint8
from keras_deepcluster.data.disk_images import npy_header
from keras_deepcluster.data.file_names import escape
from keras_deepcluster.data.idx import idx_files, read_idx

# Images per unit of work (decoded by one process, written with one write).
CHUNK = 256


@dataclasses.dataclass
class Split:
    """One split of a source, as the cache builder reads it.

    Either `files` (decoded one by one, in parallel) or `chunks` (a function
    giving (images, labels) chunks of `CHUNK` images from the start, in
    order) is set. `shape` is the images' (H, W, C) when they all have one.
    """

    name: str
    count: int
    files: list[Path] | None = None
    labels: np.ndarray | None = None
    chunks: Callable[[], Iterator[tuple[np.ndarray, np.ndarray | None]]] | None = None
    shape: tuple[int, int, int] | None = None


def folder_splits(directory: Path, limit: int | None = None) -> list[Split]:
    """A folder's splits: ``train/`` (and ``val/`` or ``test/``) if present, else the folder.

    In each split folder, files directly inside are unlabelled; with one
    sub-folder per class, the sorted sub-folder names give the labels 0, 1,
    ... Every file that is not hidden is a candidate: what Pillow cannot read
    is skipped and listed by the cache.
    """
    if not directory.is_dir():
        raise ValueError(f"Image folder {directory} does not exist or is not a directory.")
    if (directory / "train").is_dir():
        parts = [("train", directory / "train")]
        parts += [("test", directory / d) for d in ("val", "test") if (directory / d).is_dir()][:1]
    else:
        parts = [("train", directory)]
    splits = []
    for name, folder in parts:
        files, labels = _class_folder(folder)
        if name == "train" and limit is not None:
            files, labels = files[:limit], None if labels is None else labels[:limit]
        splits.append(Split(name, len(files), files=files, labels=labels))
    return splits


def _class_folder(folder: Path) -> tuple[list[Path], np.ndarray | None]:
    visible = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    classes = [p for p in visible if p.is_dir()]
    loose = [p for p in visible if p.is_file()]
    if classes and loose:
        raise ValueError(
            f"{folder} mixes loose files ({loose[0].name}, ...) with class sub-folders "
            f"({classes[0].name}, ...); put every image in a class folder (labelled) or all of "
            "them directly in the folder (unlabelled)."
        )
    if not classes:
        if not loose:
            raise ValueError(f"No images in {folder} or its sub-folders (it holds no files).")
        return loose, None
    files, labels = [], []
    for label, cls in enumerate(classes):
        members = sorted(p for p in cls.iterdir() if p.is_file() and not p.name.startswith("."))
        files += members
        labels += [label] * len(members)
    if not files:
        raise ValueError(f"The class folders of {folder} hold no files.")
    return files, np.array(labels, np.int64)


def idx_splits(directory: Path, limit: int | None = None) -> list[Split]:
    """An IDX directory's train (and t10k) images, read from the (gzipped) files in chunks."""
    found = idx_files(directory)
    if not found:
        raise ValueError(f"No train-images-idx3-ubyte[.gz] in {directory}.")
    splits = []
    for name, key in (("train", "x_train"), ("test", "x_test")):
        if key not in found:
            continue
        shape = _idx_shape(found[key])
        count = shape[0] if name == "test" or limit is None else min(shape[0], limit)
        labels_path = found.get(f"y_{key[2:]}")
        labels = None
        if labels_path is not None:
            labels = read_idx(labels_path)[:count].astype(np.int64)
        splits.append(
            Split(
                name,
                count,
                labels=labels,
                chunks=_stream(lambda p=found[key]: _idx_rows(p), count, shape[1:]),
                shape=tuple(shape[1:3]) + (1,),
            )
        )
    return splits


def npz_splits(path: Path, limit: int | None = None) -> list[Split]:
    """A ``.npz`` file's ``x_train``/``x_test`` (or ``x``) arrays, decompressed in chunks."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = {Path(n).stem for n in archive.namelist()}
            images = names & {"x", "x_train", "x_test"}
            headers = {key: _npz_header(archive, key, path) for key in images}
    except (OSError, zipfile.BadZipFile) as error:
        raise ValueError(f"Cannot read {path} as a .npz file: {error}.") from None
    pairs = [("train", "x_train", "y_train"), ("test", "x_test", "y_test")]
    if "x_train" not in names and "x" in names:
        pairs = [("train", "x", "y")]
    if pairs[0][1] not in names:
        raise ValueError(
            f"{path} holds {sorted(names)}; expected x_train (with optional y_train, x_test, "
            "y_test) or x (with optional y)."
        )
    splits = []
    for name, x_key, y_key in pairs:
        if x_key not in names:
            continue
        shape, dtype = headers[x_key]
        count = shape[0] if name == "test" or limit is None else min(shape[0], limit)
        labels = None
        if y_key in names:
            with np.load(path, allow_pickle=False) as npz:
                labels = np.asarray(npz[y_key]).reshape(-1)[:count].astype(np.int64)
        where = f"{path}: {x_key}"
        splits.append(
            Split(
                name,
                count,
                labels=labels,
                chunks=_stream(
                    lambda k=x_key, s=shape, d=dtype: _npz_rows(path, k, s, d),
                    count,
                    shape[1:],
                    convert=lambda x, w=where: as_uint8(x, w),
                ),
                shape=tuple(shape[1:3]) + ((shape[3],) if len(shape) == 4 else (1,)),
            )
        )
    return splits


def tfds_splits(
    name: str,
    data_dir: str | None,
    limit: int | None = None,
    download: bool = True,
    on_note: Callable[[str], None] | None = None,
) -> list[Split]:
    """A TFDS dataset's train and test splits, streamed record by record.

    A dataset not prepared in `data_dir` is downloaded first if `download`
    (see `keras_deepcluster.data.tfds`).
    """
    from keras_deepcluster.data.tfds import import_tfds, prepared_splits

    tfds = import_tfds()
    builder, datasets = prepared_splits(name, data_dir, download, on_note)
    image_shape = builder.info.features["image"].shape
    shape = tuple(image_shape) if None not in image_shape else None
    splits = []
    for split, data in datasets.items():
        if builder.info.splits:
            total = builder.info.splits[split].num_examples
        else:  # no split metadata (e.g. TFDS's mock data): count the records
            total = sum(len(labels) for _, labels in tfds.as_numpy(data.batch(CHUNK)))
        count = total if split == "test" or limit is None else min(total, limit)

        def records(data=data, count=count):
            done = 0
            for images, labels in tfds.as_numpy(data.batch(CHUNK)):
                images, labels = images[: count - done], labels[: count - done]
                done += len(labels)
                yield images, labels.astype(np.int64)
                if done == count:
                    return

        splits.append(Split(split, count, chunks=records, shape=shape))
    return splits


def files_digest(paths: list[Path], root: Path) -> tuple[str, list[str]]:
    """The sha256 of a listing of `paths` (relative path, size, mtime) and the listing's lines.

    Paths are `file_names.escape`d: the listing is UTF-8 text whatever the names' encoding.
    """
    lines = []
    for path in paths:
        stat = path.stat()
        lines.append(f"{escape(path.relative_to(root))}\t{stat.st_size}\t{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(lines).encode()).hexdigest(), lines


def _stream(rows_from_start, count, shape, convert=None):
    """A `Split.chunks` function: `CHUNK` images at a time from a row reader, cut at `count`."""

    def chunks():
        reader = rows_from_start()
        for start in range(0, count, CHUNK):
            images = reader(min(CHUNK, count - start))
            yield (images if convert is None else convert(images)), None

    return chunks


def _idx_shape(path: Path) -> list[int]:
    with _open(path) as file:
        head = file.read(4)
        if len(head) < 4 or head[:3] != b"\0\0\x08" or head[3] not in (3, 4):
            raise ValueError(f"{path} is not an IDX file of uint8 images (magic {head.hex()}).")
        dims = file.read(4 * head[3])
    return [int.from_bytes(dims[4 * i : 4 * i + 4], "big") for i in range(head[3])]


def _idx_rows(path: Path):
    shape = _idx_shape(path)
    file = _open(path)
    file.read(4 + 4 * len(shape))
    return _row_reader(file, shape[1:], np.uint8, path)


def _npz_header(archive: zipfile.ZipFile, key: str, path: Path):
    with archive.open(f"{key}.npy") as file:
        shape, fortran, dtype = npy_header(file)
    if fortran or len(shape) not in (3, 4) or 0 in shape:
        raise ValueError(
            f"{path}: {key} must be (N, H, W) or (N, H, W, C) in C order; got shape {shape}."
        )
    return shape, dtype


def _npz_rows(path: Path, key: str, shape, dtype):
    file = zipfile.ZipFile(path).open(f"{key}.npy")
    npy_header(file)
    return _row_reader(file, shape[1:], dtype, path)


def _row_reader(file, image_shape, dtype, path):
    row_bytes = int(np.prod(image_shape)) * np.dtype(dtype).itemsize

    def read(rows: int) -> np.ndarray:
        raw = file.read(rows * row_bytes)
        if len(raw) != rows * row_bytes:
            raise ValueError(f"{path} is truncated: it ends inside its images.")
        return np.frombuffer(raw, dtype).reshape((rows,) + tuple(image_shape))

    return read


def _open(path: Path):
    return gzip.open(path) if path.suffix == ".gz" else open(path, "rb")
