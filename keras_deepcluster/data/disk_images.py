"""`DiskImages`: an image array that stays on disk and is read a batch at a time."""

from __future__ import annotations

import mmap
import threading
from pathlib import Path

import numpy as np

# The map's pages are released once reads may have mapped this many bytes. Each page a
# read touches maps up to 64 KB around it (the kernel's fault-around), counted as such.
RELEASE_BYTES = 64 * 2**20
_FAULT_AROUND = 64 * 2**10


class DiskImages:
    """uint8 images (N, H, W, C) in a ``.npy`` file, read from disk on demand.

    Indexing works as on a NumPy array (an int, a slice or an array of
    indices) and returns a NumPy array holding only the rows asked for, so a
    training loop that reads a batch at a time needs memory for a batch,
    whatever N. Rows are gathered, in the order of their position on disk,
    from a read-only memory map of the file, whose pages are released
    (``madvise(MADV_DONTNEED)``) whenever the reads since the last release
    may have mapped `RELEASE_BYTES`: the file's pages stay in the kernel's
    page cache, which it can drop under memory pressure, but stop counting in
    the process's resident memory, which therefore does not grow with N (the
    kernel maps 64 KB around every page a read touches, so random batches
    would otherwise map the whole file). Releasing after every read would
    cost a TLB flush on every core per batch; one ``pread`` per row costs
    more Python. Reads are thread-safe (a page released while another thread
    reads it is read again), and the object can be pickled (to worker
    processes: each maps the file again).

    Args:
        path: The ``.npy`` file, uint8, C order, 4 dimensions.
        rows: Which of the file's rows make up this array (None: all), e.g.
            the images a cache could decode, or a split of them.

    Examples:
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
        self._map: mmap.mmap | None = None
        self._array: np.ndarray | None = None
        self._mapped_since_release = 0
        self._lock = threading.Lock()

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
        """The file's rows `file_rows`, in that order, gathered in their order on disk."""
        if not len(file_rows):
            return np.empty((0,) + self._file_shape[1:], np.uint8)
        order = np.argsort(file_rows, kind="stable")
        out = np.empty((len(file_rows),) + self._file_shape[1:], np.uint8)
        out[order] = self._mapped()[file_rows[order]]
        self._release_after(len(file_rows) * (self._row_bytes + _FAULT_AROUND))
        return out

    def _read_contiguous(self, first: int, count: int) -> np.ndarray:
        out = self._mapped()[first : first + count].copy()
        self._release_after(out.nbytes + _FAULT_AROUND)
        return out

    def _mapped(self) -> np.ndarray:
        """The whole file's images as an array over a read-only memory map (made once)."""
        if self._array is None:
            with self._lock:
                if self._array is None:
                    with open(self.path, "rb") as file:
                        self._map = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
                    count = int(np.prod(self._file_shape))
                    flat = np.frombuffer(self._map, np.uint8, count, self._offset)
                    self._array = flat.reshape(self._file_shape)
        return self._array

    def _release_after(self, mapped: int) -> None:
        self._mapped_since_release += mapped
        if self._mapped_since_release >= RELEASE_BYTES:
            self._mapped_since_release = 0
            self._map.madvise(mmap.MADV_DONTNEED)

    def __getstate__(self):
        state = dict(self.__dict__)
        state.update(_map=None, _array=None, _mapped_since_release=0, _lock=None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state, _lock=threading.Lock())


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
