"""What the image cache reads: each source's splits as files to decode or arrays streamed in chunks.

Nothing here holds a whole split in memory: a folder is a list of files, and
IDX, ``.npz`` and TFDS splits are read a chunk of images at a time.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
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
    classes: list[str] | None = None  # the class names of the labels (folders)
    found: str | None = None  # what the source held, said to the user (folders)


# How a folder's images get labels: "inferred" from the top-level sub-folders (one per
# class, each read with all its sub-folders), "none" (the whole tree, unlabelled), or
# "auto": inferred when the folder holds only sub-folders that hold images directly
# and no deeper folders (the ImageFolder layout), else none (a photo collection).
LABEL_MODES = ("auto", "inferred", "none")


def folder_splits(directory: Path, limit: int | None = None, labels: str = "auto") -> list[Split]:
    """A folder's splits: ``train/`` (and ``val/`` or ``test/``) if present, else the folder.

    Every file in the tree that is not hidden is a candidate (what Pillow
    cannot read is skipped and listed by the cache); symbolic links to
    folders are followed once, loops ignored. With labels "inferred" the
    sorted top-level sub-folders are the classes 0, 1, ... (their names in
    `Split.classes`, the test split's mapped by name to the training split's)
    and files beside them belong to no class: they are left out, as Keras's
    ``image_dataset_from_directory`` leaves them, and `Split.found` says so.

    Raises:
        ValueError: no such folder, no files, an unknown `labels`, no class
            folders with "inferred", or a test class the training split lacks.
    """
    if labels not in LABEL_MODES:
        raise ValueError(f"labels must be one of {', '.join(LABEL_MODES)}; got {labels!r}.")
    if not directory.is_dir():
        raise ValueError(f"Image folder {directory} does not exist or is not a directory.")
    if (directory / "train").is_dir():
        parts = [("train", directory / "train")]
        parts += [("test", directory / d) for d in ("val", "test") if (directory / d).is_dir()][:1]
    else:
        parts = [("train", directory)]
    mode = _label_mode(parts[0][1]) if labels == "auto" else labels
    splits = []
    for name, folder in parts:
        files, classes, found = _read_folder(folder, mode, labels == "auto")
        names = label_ids = None
        if classes is not None:
            # The test split's classes are numbered as the training split's.
            names = splits[0].classes if splits else [c for c, _ in classes]
            files = [f for _, members in classes for f in members]
            label_ids = np.array(
                [_class_index(names, c, folder) for c, members in classes for _ in members],
                np.int64,
            )
        if name == "train" and limit is not None:
            files = files[:limit]
            label_ids = None if label_ids is None else label_ids[:limit]
        splits.append(Split(name, len(files), files, label_ids, classes=names, found=found))
    return splits


def _label_mode(folder: Path) -> str:
    """ "inferred" for the ImageFolder layout (flat class folders only), else "none"."""
    entries = _visible(folder)
    folders = [p for p in entries if p.is_dir()]
    if not folders or any(p.is_file() for p in entries):
        return "none"
    for sub in folders:
        inside = _visible(sub)
        if any(p.is_dir() for p in inside) or not any(p.is_file() for p in inside):
            return "none"
    return "inferred"


def _read_folder(folder: Path, mode: str, chosen: bool):
    """The files of `folder` (by class with "inferred"), and a line on what was found."""
    if mode == "none":
        files = _walk(folder)
        if not files:
            raise ValueError(f"No images in {folder} or its sub-folders (it holds no files).")
        folders = len({f.parent for f in files})
        why = ""
        if chosen and any(p.is_dir() for p in _visible(folder)):
            why = (
                " (its sub-folders are not one flat folder per class; --labels inferred, or "
                '[data] labels = "inferred", takes the top-level folders as classes)'
            )
        return files, None, f"{len(files)} files in {folders} folders, no labels{why}"
    entries = _visible(folder)
    class_folders = [p for p in entries if p.is_dir()]
    if not class_folders:
        raise ValueError(
            f"labels 'inferred' takes the sub-folders of {folder} as classes, but it has none; "
            "use labels 'none' for a folder of unlabelled images."
        )
    # Names as printable text (`file_names.escape`): they are shown and kept in JSON.
    classes = [(escape(p.name), _walk(p, folder)) for p in class_folders]
    classes = [(name, members) for name, members in classes if members]
    count = sum(len(members) for _, members in classes)
    if not count:
        raise ValueError(f"The class folders of {folder} hold no files.")
    loose = [p for p in entries if p.is_file()]
    names = ", ".join(name for name, _ in classes[:8]) + (", ..." if len(classes) > 8 else "")
    found = f"{count} files in {len(classes)} class folders ({names})"
    if loose:
        found += f"; {len(loose)} files beside the class folders belong to no class: left out"
    return None, classes, found


def _class_index(known: list[str], name: str, folder: Path) -> int:
    if name not in known:
        raise ValueError(
            f"{folder} has a class folder {name!r} that the training split lacks "
            f"(its classes: {', '.join(known)}); the splits must share their classes."
        )
    return known.index(name)


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _walk(folder: Path, root: Path | None = None) -> list[Path]:
    """Every visible file under `folder`, sorted by path.

    A linked folder is followed once, unless it leads back into `root` (the
    folder being read, default `folder`) or above it: what lies there is read
    in its own place, and a loop would repeat it.
    """
    top = (root or folder).resolve()
    files, seen = [], set()
    for base, dirs, names in os.walk(folder, followlinks=True):
        base = Path(base)
        stat = base.stat()
        key = (stat.st_dev, stat.st_ino)
        if key in seen:  # a folder linked twice
            dirs[:] = []
            continue
        seen.add(key)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and _followed(base / d, top))
        files += [base / n for n in names if not n.startswith(".") and (base / n).is_file()]
    return sorted(files)


def _followed(path: Path, top: Path) -> bool:
    """Whether to descend into `path`: a real folder, or a link that leads outside `top`."""
    if not path.is_symlink():
        return True
    target = path.resolve()
    return not (target == top or target in top.parents or top in target.parents)


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
