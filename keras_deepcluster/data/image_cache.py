"""The image cache: a data source decoded once into uint8 arrays on disk.

A cache folder holds, per split (``train``, optionally ``test``), the images
as one uint8 ``.npy`` array (N, S, S, C) (or the source's own (H, W) when no
size is asked), the labels as ``.npy`` when the source has them, and
``manifest.json``: the source and its file listing (``files.tsv``: path,
size, mtime), S, C, the resize rule, the versions, each array's sha256 and
the files that could not be read. The manifest is written last, so a folder
without one is never used as a cache; a build that stops (Ctrl-C, a crash, a
full disk) resumes from its last finished chunk of `CHUNK` images.

Examples:
    >>> cache = prepare("folder", path="photos/", size=64, channels=3)
    >>> data = cache.data()  # an ImageData whose images stay on disk
    >>> data.x_train.shape, cache.manifest["skipped"]
    ((20000, 64, 64, 3), [...])
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import multiprocessing
import os
import platform
import shutil
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from keras_deepcluster.data import source_splits
from keras_deepcluster.data.decoding import RESIZE_RULE, decode_array, decode_file
from keras_deepcluster.data.disk_images import DiskImages, read_npy_header
from keras_deepcluster.data.file_names import escape
from keras_deepcluster.data.image_data import ImageData
from keras_deepcluster.data.source_splits import CHUNK
from keras_deepcluster.platform import directory_lock
from keras_deepcluster.version import __version__

CACHE_ENV = "KERAS_DEEPCLUSTER_CACHE"
CACHED_SOURCES = ("folder", "idx", "npz", "tfds")
MANIFEST, LISTING = "manifest.json", "files.tsv"
BUILDING, PROGRESS = "building.json", "progress.jsonl"
FORMAT = 1
# Fewer files than this decode in this process: starting workers costs seconds.
PARALLEL_FROM = 4 * CHUNK

logger = logging.getLogger("keras_deepcluster")


def default_cache_root() -> Path:
    """Where caches go unless told: ``$KERAS_DEEPCLUSTER_CACHE``, else
    ``$XDG_CACHE_HOME/keras_deepcluster`` (``~/.cache/keras_deepcluster``)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "keras_deepcluster"


class ImageCache:
    """A finished cache folder: its manifest, and its images as `DiskImages`.

    Attributes:
        path: The folder.
        manifest: Its ``manifest.json``.
        built: Whether `prepare` built it just now (False: reused, or opened).
    """

    def __init__(self, path: str | Path, built: bool = False):
        self.path = Path(path)
        self.built = built
        manifest = _read_json(self.path / MANIFEST)
        if manifest is None and (self.path / MANIFEST).is_file():
            raise ValueError(
                f"{self.path / MANIFEST} is damaged (not the JSON it writes), so the cache cannot "
                "be read; rebuild it from its source (`deepcluster prepare`, or "
                "keras_deepcluster.data.prepare)."
            )
        if manifest is None or manifest.get("format") != FORMAT:
            raise ValueError(
                f"{self.path} is not an image cache (no {MANIFEST} of format {FORMAT}); build "
                "one with `deepcluster prepare` or keras_deepcluster.data.prepare."
            )
        self.manifest = manifest

    def describe(self, files: int = 5) -> list[str]:
        """Lines on the cache: where, how many images, and (the first `files` of) the
        files that could not be read."""
        manifest = self.manifest
        counts = ", ".join(
            f"{entry['shape'][0] - len(entry['skipped'])} {name}"
            for name, entry in manifest["splits"].items()
        )
        skipped = manifest["skipped"]
        lines = [
            f"image cache {self.path}: {counts} images {tuple(manifest['image_shape'])}"
            + (
                f"; {len(skipped)} unreadable files skipped (listed in its manifest.json)"
                if skipped
                else ""
            )
        ]
        lines += [f"  {name}: {found}" for name, found in manifest.get("found", {}).items()]
        lines += [f"  skipped {entry['file']}: {entry['reason']}" for entry in skipped[:files]]
        if len(skipped) > files:
            lines.append(f"  ... and {len(skipped) - files} more")
        return lines

    def damaged(self) -> list[str]:
        """The files of the cache that fail their checksums or cannot be read (one full read).

        Every chunk of `CHUNK` images is checked against the crc32 recorded
        when it was written, so flipped, cut or replaced bytes are found
        before they could train a network on wrong images.
        """
        damaged = []
        for entry in self.manifest["splits"].values():
            try:
                images = DiskImages(self.path / entry["images"])
                failed = [
                    chunk
                    for chunk, crc in enumerate(entry["crc32"])
                    if zlib.crc32(images[chunk * CHUNK : (chunk + 1) * CHUNK]) != crc
                ]
            except (OSError, ValueError) as error:
                damaged.append(f"{entry['images']} ({error})")
                continue
            if failed:
                chunks = ", ".join(map(str, failed[:5])) + (", ..." if len(failed) > 5 else "")
                damaged.append(f"{entry['images']} (chunks {chunks} fail their checksums)")
            if entry["labels"]:
                try:
                    np.load(self.path / entry["labels"])
                except (OSError, ValueError, EOFError) as error:
                    damaged.append(f"{entry['labels']} ({error})")
        return damaged

    def data(self) -> ImageData:
        """The cached splits: images on disk (`DiskImages`), labels in memory."""
        arrays = {}
        for split, entry in self.manifest["splits"].items():
            images = DiskImages(self.path / entry["images"])
            skipped = {row for row, _ in entry["skipped"]}
            kept = None
            if skipped:
                kept = np.setdiff1d(np.arange(len(images)), np.fromiter(skipped, np.int64))
                images = images.take(kept)
            labels = None
            if entry["labels"]:
                labels = np.load(self.path / entry["labels"])
                labels = labels if kept is None else labels[kept]
            arrays[f"x_{split}"], arrays[f"y_{split}"] = images, labels
        return ImageData(
            self.manifest["name"],
            **arrays,
            origin=self.identity(),
            class_names=self.manifest.get("classes"),
        )

    def identity(self) -> dict:
        """The cache's folder and what it holds: source, path, shape, limit, source digest."""
        keys = ("source", "name", "path", "image_shape", "limit", "labels", "source_digest")
        return {"cache": str(self.path.resolve()), **{key: self.manifest.get(key) for key in keys}}

    def files(self, split: str) -> list[str] | None:
        """The source files of a split's rows, relative to the source root (folders only).

        Rows the cache skipped (unreadable files) are left out, as `data` leaves
        them out, so entry i is the file of image i. None for other sources.
        Names are as ``files.tsv`` holds them, `file_names.escape`d (printable
        UTF-8); `file_names.unescape` gives the name that opens the file.
        """
        if self.manifest["source"] != "folder":
            return None
        lines = (self.path / self.manifest["listing"]).read_text("utf-8").splitlines()
        paths = [line.split("\t")[0] for line in lines if line]
        offset = 0
        for name, entry in self.manifest["splits"].items():
            count = entry["shape"][0]
            if name == split:
                skipped = {row for row, _ in entry["skipped"]}
                rows = paths[offset : offset + count]
                return [path for row, path in enumerate(rows) if row not in skipped]
            offset += count
        raise ValueError(
            f"{self.path} has no split {split!r}; it has {', '.join(self.manifest['splits'])}."
        )


def prepare(
    source: str,
    name: str | None = None,
    path: str | Path | None = None,
    size: int | None = None,
    channels: int | None = None,
    limit: int | None = None,
    out: str | Path | None = None,
    workers: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_note: Callable[[str], None] | None = None,
    download: bool = True,
    lock_timeout: float = 24 * 3600,
    labels: str = "auto",
) -> ImageCache:
    """The cache of a source: reused while it matches, else built (or resumed).

    A build holds the cache folder's lock (`directory_lock.waiting_lock`):
    another process that needs the same cache meanwhile waits for the build
    (with a note naming the builder) and then reads it.

    Args:
        source: ``"folder"``, ``"idx"``, ``"npz"`` or ``"tfds"`` (see `load`).
        name: The dataset's name (the TFDS name for ``"tfds"``).
        path: The folder, IDX directory, ``.npz`` file or TFDS data_dir.
        size: Side S of the cached images (shorter side to S, centre crop;
            see `decoding`); None keeps the source's size (one size only).
        channels: 1 (grayscale) or 3 (RGB); None: the source's (3 for folders).
        limit: Cache only the first `limit` training images.
        out: The cache folder; default: a folder named after the settings in
            `default_cache_root()`.
        workers: Decoding processes for folders (default: the CPUs available).
        on_progress: Called as ``on_progress(images_done, images_total)``.
        on_note: Gets one-line notes (a rebuilt cache, a download); default: a log warning.
        download: For ``"tfds"``: download and prepare a dataset that is not
            prepared (see `keras_deepcluster.data.tfds`).
        lock_timeout: Seconds to wait for another process building the same cache.
        labels: For ``"folder"``: how its images get labels (``"auto"``,
            ``"inferred"`` or ``"none"``; see `source_splits.folder_splits`).

    Raises:
        ValueError: bad settings, a source that cannot be read, an `out`
            holding something else or another cache, or another process
            still building it after `lock_timeout` seconds.
        OSError: the disk is full (the partial cache is removed).
    """
    if size is not None and (isinstance(size, bool) or size < 1):
        raise ValueError(f"size must be a positive number of pixels or None; got {size!r}.")
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1 (grayscale), 3 (RGB) or None; got {channels!r}.")
    path = None if path is None else Path(path).expanduser()
    out = None if out is None else Path(out).expanduser()
    splits, source_files, root = _splits(source, name, path, limit, download, on_note, labels)
    shape = _image_shape(source, splits, size, channels)
    identity = {
        "format": FORMAT,
        "source": source,
        "name": name or (Path(path).stem if path else source),
        "path": None if path is None else str(Path(path).resolve()),
        "image_shape": list(shape),
        "limit": limit,
        "rule": RESIZE_RULE,
    }
    if source == "folder":  # how the labels were made is part of what the cache holds
        identity["labels"] = "none" if splits[0].classes is None else "inferred"
    digest, listing = source_splits.files_digest(source_files, root)
    out = Path(out) if out is not None else default_cache_root() / _folder_name(identity)
    note = on_note or logger.warning
    if _up_to_date(out, identity, digest) and _intact(out):
        return ImageCache(out, built=False)
    out.mkdir(parents=True, exist_ok=True)

    def waiting(holder: str) -> None:
        note(f"Waiting for {holder}, which is building the image cache in {out}.")

    with directory_lock.waiting_lock(out, lock_timeout, waiting):
        # Built meanwhile by the process waited for, or still to build (or resume).
        if _up_to_date(out, identity, digest, on_stale=note) and _intact(out, on_damaged=note):
            return ImageCache(out, built=False)
        signature = {**identity, "source_digest": digest}
        _Build(out, signature, splits, shape, workers, on_progress).run(listing)
    return ImageCache(out, built=True)


def _intact(out: Path, on_damaged: Callable[[str], None] | None = None) -> bool:
    """Whether the cache in `out` passes its checksums; `on_damaged` hears of a rebuild."""
    damaged = ImageCache(out).damaged()
    if damaged and on_damaged is not None:  # checked again under the lock: said once
        on_damaged(f"The image cache in {out} is damaged: {'; '.join(damaged)}. Rebuilding it.")
    return not damaged


def _up_to_date(out: Path, identity: dict, digest: str, on_stale=None) -> bool:
    """Whether `out` holds the cache of `identity` and `digest`; raises if it holds another.

    Raises:
        ValueError: `out` holds a cache of other settings, or files that are
            not a cache.
    """
    manifest = _read_json(out / MANIFEST)
    if manifest is None and (out / MANIFEST).is_file():
        if on_stale is not None:  # checked again under the lock: said once
            on_stale(f"The manifest of the image cache in {out} is damaged: rebuilding the cache.")
        return False
    if manifest is None:
        ours = {BUILDING, PROGRESS, directory_lock.LOCK_FILE}
        foreign = [p.name for p in out.iterdir() if p.name not in ours] if out.is_dir() else []
        if foreign and not (out / BUILDING).is_file():
            raise ValueError(
                f"{out} holds files that are not an image cache ({foreign[0]}, ...); "
                "give an empty or new folder for the cache."
            )
        return False
    settings = {key: manifest.get(key) for key in identity}
    if settings != identity:
        changed = ", ".join(
            f"{key} {settings[key]!r} (asked: {identity[key]!r})"
            for key in identity
            if settings[key] != identity[key]
        )
        raise ValueError(
            f"{out} holds an image cache of other settings: {changed}. Use another cache "
            "folder, or delete this one to rebuild it."
        )
    if manifest["source_digest"] == digest:
        return True
    if on_stale is not None:
        on_stale(
            f"{identity['path'] or identity['name']} changed since its cache in {out} was "
            "built (files added, removed or modified): rebuilding the cache."
        )
    return False


def _splits(source, name, path, limit, download=True, on_note=None, labels="auto"):
    """The source's splits, the files whose listing identifies it, and their root."""
    if source not in CACHED_SOURCES:
        raise ValueError(f"Unknown cached source {source!r}; known: {', '.join(CACHED_SOURCES)}.")
    if source != "tfds" and path is None:
        raise ValueError(f"The {source!r} source needs a path (data directory or file).")
    if source == "folder":
        root = Path(path)
        splits = source_splits.folder_splits(root, limit, labels)
        return splits, [f for s in splits for f in s.files], root
    if source == "idx":
        root = Path(path)
        if not root.is_dir():
            raise ValueError(f"IDX data directory {root} does not exist or is not a directory.")
        return source_splits.idx_splits(root, limit), sorted(root.glob("*idx*")), root
    if source == "npz":
        root = Path(path)
        if not root.is_file():
            raise ValueError(f"No .npz file {root}.")
        return source_splits.npz_splits(root, limit), [root], root.parent
    if not name:
        raise ValueError("The 'tfds' source needs a dataset name, e.g. 'fashion_mnist'.")
    data_dir = None if path is None else str(path)
    splits = source_splits.tfds_splits(name, data_dir, limit, download, on_note)
    root = Path(path) if path else Path.home() / "tensorflow_datasets"
    files = sorted(p for p in (root / name).rglob("*") if p.is_file())
    return splits, files, root


def _image_shape(source, splits, size, channels) -> tuple[int, int, int]:
    native = splits[0].shape
    if channels is None:
        channels = 3 if native is None else native[2]
    if size is not None:
        return (size, size, channels)
    if native is None or any(s.shape != native for s in splits):
        raise ValueError(
            f"The {source!r} images do not all have one size; give the side S to resize them "
            "to (`size`, or the recipe's [data] image_size)."
        )
    return native[:2] + (channels,)


def _folder_name(identity: dict) -> str:
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    height, width, channels = identity["image_shape"]
    return f"{identity['source']}-{identity['name']}-{height}x{width}x{channels}-{key}"


class _Build:
    """Decodes the splits into the cache folder, resuming a build of the same settings."""

    def __init__(self, out, signature, splits, shape, workers, on_progress):
        self.out, self.signature, self.splits, self.shape = out, signature, splits, shape
        self.workers = workers or len(os.sched_getaffinity(0))
        self.on_progress = on_progress or (lambda done, total: None)
        self.total = sum(split.count for split in splits)

    def run(self, listing: list[str]) -> None:
        out = self.out
        out.mkdir(parents=True, exist_ok=True)
        resuming = _read_json(out / BUILDING) == self.signature
        if not resuming:
            for entry in out.iterdir():  # our own files only: checked by `prepare`
                if entry.name == directory_lock.LOCK_FILE:  # held by this build
                    continue
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
            _write_json(out / BUILDING, self.signature)
        done = _read_progress(out / PROGRESS) if resuming else {}
        self.start = time.perf_counter()
        entries = {}
        try:
            with open(out / PROGRESS, "a") as progress:
                self.done_images = sum(entry[0] for entry in done.values())
                for split in self.splits:
                    entries[split.name] = self._split(split, done, progress, resuming)
        except OSError as error:
            if error.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            for split in self.splits:
                (out / f"{split.name}_images.npy").unlink(missing_ok=True)
            raise OSError(
                error.errno,
                f"No space left for the image cache in {out}: it needs "
                f"{self.total * int(np.prod(self.shape)) / 2**30:.2f} GiB. Free space or put "
                f"the cache elsewhere (${CACHE_ENV}, or prepare's `out`); the partial cache was "
                "removed",
            ) from None
        (out / LISTING).write_text("\n".join(listing) + "\n", encoding="utf-8")
        files = {split.name: split.files for split in self.splits}
        manifest = {
            **self.signature,
            "splits": entries,
            "listing": LISTING,
            "skipped": [
                {"split": name, "file": escape(files[name][row]), "reason": reason}
                for name, entry in entries.items()
                for row, reason in entry["skipped"]
            ],
            "classes": self.splits[0].classes,
            "found": {split.name: split.found for split in self.splits if split.found},
            "seconds": time.perf_counter() - self.start,
            # Until the last image was written, before flushing the files to disk.
            "seconds_decoding": self.seconds_decoding,
            "versions": _versions(),
        }
        _write_json(out / MANIFEST, manifest)
        (out / BUILDING).unlink()
        (out / PROGRESS).unlink()

    def _split(self, split, done, progress, resuming) -> dict:
        npy = self.out / f"{split.name}_images.npy"
        if not (resuming and npy.is_file()):
            _allocate(npy, (split.count,) + self.shape)
            for key in [key for key in done if key[0] == split.name]:
                del done[key]
        offset = read_npy_header(npy)[1]
        streamed = np.full(split.count, -1, np.int64)  # labels that come with the chunks
        if split.files is not None:
            results = self._decode_files(split, npy, offset, done)
        else:
            results = self._write_chunks(split, npy, offset, done, streamed)
        for chunk, skipped, crc in results:
            count = min(CHUNK, split.count - chunk * CHUNK)
            done[(split.name, chunk)] = (count, skipped, crc)
            progress.write(json.dumps([split.name, chunk, count, skipped, crc]) + "\n")
            progress.flush()
            self.done_images += count
            self.on_progress(self.done_images, self.total)
        skipped = sorted(
            tuple(row)
            for (name, _), (_, rows, _) in done.items()
            if name == split.name
            for row in rows
        )
        if len(skipped) == split.count:
            raise ValueError(
                f"None of the {split.count} files of the {split.name} split could be read as an "
                f"image (the first: {split.files[skipped[0][0]]}: {skipped[0][1]})."
            )
        self.seconds_decoding = time.perf_counter() - self.start
        with open(npy, "rb+") as file:
            os.fdatasync(file.fileno())
        labels = split.labels if split.labels is not None or streamed.min() < 0 else streamed
        entry = {
            "images": npy.name,
            "shape": [split.count, *self.shape],
            # zlib.crc32 of each chunk of CHUNK images, in order.
            "crc32": [done[(split.name, c)][2] for c in range(-(-split.count // CHUNK))],
            "labels": None,
            "skipped": [[row, reason] for row, reason in skipped],
        }
        if labels is not None:
            np.save(self.out / f"{split.name}_labels.npy", labels)
            entry["labels"] = f"{split.name}_labels.npy"
        return entry

    def _decode_files(self, split, npy, offset, done):
        """(chunk, skipped rows) per chunk decoded, in parallel over processes when worth it."""
        files = [str(f) for f in split.files]
        tasks = [
            (str(npy), offset, start // CHUNK, start, files[start : start + CHUNK], self.shape)
            for start in range(0, split.count, CHUNK)
            if (split.name, start // CHUNK) not in done
        ]
        remaining = sum(len(task[4]) for task in tasks)
        if self.workers < 2 or remaining < PARALLEL_FROM:
            yield from map(_decode_task, tasks)
            return
        with _light_child_processes():
            pool = multiprocessing.get_context("spawn").Pool(min(self.workers, len(tasks)))
        try:
            yield from pool.imap_unordered(_decode_task, tasks)
        finally:
            pool.terminate()
            pool.join()

    def _write_chunks(self, split, npy, offset, done, labels):
        """Streams an array source's chunks into the cache, filling `labels` as they come."""
        size = self.shape[0] if self.shape[0] == self.shape[1] else None
        with open(npy, "rb+") as file:
            for chunk, (images, chunk_labels) in enumerate(split.chunks()):
                start = chunk * CHUNK
                if chunk_labels is not None:
                    labels[start : start + len(chunk_labels)] = chunk_labels
                if (split.name, chunk) in done:
                    continue
                rows = np.stack([decode_array(x, size, self.shape[2]) for x in images])
                _pwrite(file.fileno(), rows, offset + start * rows[0].nbytes)
                yield chunk, [], zlib.crc32(rows)


def _decode_task(task) -> tuple[int, list, int]:
    """Decodes one chunk of files and writes it into the cache (runs in a worker process)."""
    npy, offset, chunk, first, files, shape = task
    rows = np.zeros((len(files),) + tuple(shape), np.uint8)
    skipped = []
    for i, file in enumerate(files):
        try:
            rows[i] = decode_file(file, shape[0], shape[2])
        except ValueError as error:
            skipped.append([first + i, str(error)[:300]])
    fd = os.open(npy, os.O_WRONLY)
    try:
        _pwrite(fd, rows, offset + first * rows[0].nbytes)
    finally:
        os.close(fd)
    return chunk, skipped, zlib.crc32(rows)


def _pwrite(fd: int, rows: np.ndarray, offset: int) -> None:
    view = memoryview(np.ascontiguousarray(rows).reshape(-1))
    while len(view):
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _allocate(npy: Path, shape: tuple) -> None:
    """Creates the ``.npy`` file with its header and reserves its bytes (a full disk fails here)."""
    np.lib.format.open_memmap(npy, mode="w+", dtype=np.uint8, shape=shape).flush()
    fd = os.open(npy, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, npy.stat().st_size)
    except OSError as error:
        if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # not every filesystem can
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def _light_child_processes():
    """Worker processes import keras_deepcluster (and so keras) on its lightest backend."""
    saved = os.environ.get("KERAS_BACKEND")
    os.environ["KERAS_BACKEND"] = "numpy"
    try:
        yield
    finally:
        if saved is None:
            del os.environ["KERAS_BACKEND"]
        else:
            os.environ["KERAS_BACKEND"] = saved


def _read_progress(path: Path) -> dict:
    done = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                name, chunk, count, skipped, crc = json.loads(line)
            except ValueError:  # a line cut by the interruption
                continue
            done[(name, chunk)] = (count, [tuple(row) for row in skipped], crc)
    return done


def _versions() -> dict:
    import PIL

    return {
        "keras_deepcluster": __version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "python": platform.python_version(),
    }


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, value) -> None:
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(value, indent=1))
    os.replace(partial, path)
