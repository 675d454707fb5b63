"""`DiskImages`: an image array that stays on disk and is read a batch at a time."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


class DiskImages:
    """uint8 images (N, H, W, C) in a ``.npy`` file, read from disk on demand.

    Indexing works as on a NumPy array (an int, a slice or an array of
    indices) and returns a NumPy array holding only the rows asked for, so a
    training loop that reads a batch at a time needs memory for a batch,
    whatever N. Rows are read with positional reads (``os.preadv``) into the
    result, sorted by position on disk and runs of neighbouring rows read at
    once; nothing is memory-mapped, so pages read once do not count in the
    process's memory (the kernel keeps them as page cache, which it can drop).
    Reads are thread-safe, and the object can be pickled (to worker
    processes: each opens the file again).

    Args:
        path: The ``.npy`` file, uint8, C order, 4 dimensions.
        rows: Which of the file's rows make up this array (None: all), e.g.
            the images a cache could decode, or a split of them.

    Example:
    >>> images = DiskImages("cache/train_images.npy")
    >>> images.shape
    (20000, 32, 32, 3)
    >>> images[np.array([7, 3])].shape  # reads two images
    (2, 32, 32, 3)
    """

    ndim = 4
    dtype = np.dtype(np.uint8)

    def __init__(self, path: str | Path, rows: np.ndarray | None = None):
        self.path = Path(path)
        self._file_shape, self._offset = read_npy_header(self.path)
        self.rows = None if rows is None else np.asarray(rows, np.int64)
        if (
            self.rows is not None
            and len(self.rows)
            and (self.rows.min() < 0 or self.rows.max() >= self._file_shape[0])
        ):
            raise ValueError(f"Rows out of range for the {self._file_shape[0]} images of {path}.")
        self._row_bytes = int(np.prod(self._file_shape[1:]))
        self._fd: int | None = None

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self),) + self._file_shape[1:]

    @property
    def nbytes(self) -> int:
        return len(self) * self._row_bytes

    def __len__(self) -> int:
        return self._file_shape[0] if self.rows is None else len(self.rows)

    def __getitem__(self, key):
        if isinstance(key, tuple):  # e.g. images[..., None] or images[:, :, ::-1]
            first, rest = key[0], key[1:]
            if first is Ellipsis:
                return self[:][key]
            return self[first][rest] if _is_int(first) else self[first][(slice(None),) + rest]
        if _is_int(key):
            return self._read(self._file_rows(np.array([key])))[0]
        if isinstance(key, slice):
            positions = range(len(self))[key]
            if self.rows is None and positions.step == 1:
                return self._read_contiguous(positions.start, len(positions))
            indices = np.arange(positions.start, positions.stop, positions.step)
            return self._read(self._file_rows(indices))
        key = np.asarray(key)
        if key.dtype == bool:
            if key.shape != (len(self),):
                raise IndexError(f"A boolean index of shape {key.shape} for {len(self)} images.")
            key = np.flatnonzero(key)
        return self._read(self._file_rows(key))

    def take(self, indices: np.ndarray) -> DiskImages:
        """The images at `indices`, still on disk (no image is read)."""
        return DiskImages(self.path, self._file_rows(np.asarray(indices)))

    def __array__(self, dtype=None, copy=None):
        # Reads every image: for small arrays and tests, never in the training loop.
        images = self[:]
        return images if dtype is None else images.astype(dtype)

    def __repr__(self) -> str:
        return f"DiskImages({str(self.path)!r}, shape={self.shape})"

    def _file_rows(self, positions: np.ndarray) -> np.ndarray:
        positions = np.asarray(positions)
        if positions.dtype.kind not in "iu":
            raise IndexError(f"Images are indexed by integers; got dtype {positions.dtype}.")
        n = len(self)
        if positions.size and (positions.min() < -n or positions.max() >= n):
            raise IndexError(f"Index out of range for {n} images.")
        positions = np.where(positions < 0, positions + n, positions).astype(np.int64)
        return positions if self.rows is None else self.rows[positions]

    def _read(self, file_rows: np.ndarray) -> np.ndarray:
        """The file's rows `file_rows`, in that order; each run of neighbours in one read."""
        out = np.empty((len(file_rows),) + self._file_shape[1:], np.uint8)
        if not len(file_rows):
            return out
        order = np.argsort(file_rows, kind="stable")
        in_order = bool(np.all(order == np.arange(len(order))))
        target = out if in_order else np.empty_like(out)
        ordered = file_rows[order]
        breaks = np.flatnonzero(np.diff(ordered) != 1) + 1
        for start, stop in zip(np.r_[0, breaks], np.r_[breaks, len(ordered)]):
            self._pread(target[start:stop], int(ordered[start]))
        if not in_order:
            out[order] = target
        return out

    def _read_contiguous(self, first: int, count: int) -> np.ndarray:
        out = np.empty((count,) + self._file_shape[1:], np.uint8)
        if count:
            self._pread(out, first)
        return out

    def _pread(self, target: np.ndarray, first_row: int) -> None:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        view = memoryview(target.reshape(-1))
        offset = self._offset + first_row * self._row_bytes
        while len(view):
            done = os.preadv(self._fd, [view], offset)
            if done == 0:
                raise OSError(f"{self.path} is shorter than its header says (truncated?).")
            view, offset = view[done:], offset + done

    def __getstate__(self):
        return {**self.__dict__, "_fd": None}

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)


def read_npy_header(path: Path) -> tuple[tuple[int, ...], int]:
    """The shape of the uint8, C-order, 4-d array in the ``.npy`` file, and its data offset."""
    try:
        with open(path, "rb") as file:
            shape, fortran, dtype = npy_header(file)
            offset = file.tell()
    except (OSError, ValueError) as error:
        raise ValueError(f"Cannot read {path} as a .npy file: {error}.") from None
    if dtype != np.uint8 or fortran or len(shape) != 4:
        raise ValueError(
            f"{path} holds a {dtype} array of shape {shape}; images on disk are uint8 "
            "(N, H, W, C) in C order."
        )
    expected = offset + int(np.prod(shape))
    if path.stat().st_size < expected:
        raise ValueError(
            f"{path} is truncated: its header promises {expected} bytes, the file has "
            f"{path.stat().st_size}."
        )
    return tuple(int(s) for s in shape), offset


def npy_header(file) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) of the ``.npy`` stream `file`, left at its data."""
    version = np.lib.format.read_magic(file)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(file)
    return np.lib.format.read_array_header_2_0(file)


def take_rows(images, indices: np.ndarray):
    """``images[indices]`` that reads nothing from disk for `DiskImages` (a `take`)."""
    return images.take(indices) if isinstance(images, DiskImages) else images[indices]


def _is_int(key) -> bool:
    return isinstance(key, (int, np.integer)) and not isinstance(key, bool)
