"""Which image is in which cluster: a run's assignments as a table, folders of links.

`export_assignments` writes one row per image: where it came from (its file,
relative to the source folder, or its row index and split), its true label
if known, its cluster in the run's final clustering and the distance to that
cluster's centroid, optionally its feature vector. The images go through the
network a batch at a time and each batch's rows are written before the next
is read, so memory does not grow with the number of images.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from keras_deepcluster.data import ImageData
from keras_deepcluster.data.file_names import unescape
from keras_deepcluster.runs.run_directory import FILE_MODE
from keras_deepcluster.runs.trained_run import Run

FORMATS = ("parquet", "csv")
# Images per batch of the export (network and writes).
EXPORT_BATCH = 4096


def export_assignments(
    run: Run,
    data: ImageData,
    out: str | Path,
    split: str = "train",
    files: list[str] | None = None,
    file_format: str = "parquet",
    embeddings: bool = False,
    layer: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Writes the cluster of every image of `data`'s `split` to `out`.

    Args:
        run: The finished run whose clusters the images are assigned to.
        data: The images (those the run trained on, or any others).
        out: The table's path (``.parquet`` or ``.csv``); embeddings go next to
            it as ``<stem>.npy``.
        split: ``"train"`` or ``"test"``.
        files: The source file of each image (relative paths, row order), or
            None: rows are named by their index.
        file_format: ``"parquet"`` (pyarrow) or ``"csv"``.
        embeddings: Also write each image's features ((N, D) ``.npy`` in row
            order; in a Parquet table also a column ``embedding``).
        layer: The backbone layer of the embeddings (default: the run's
            `embedding_layer`, its recipe's probe layer).
        on_progress: Called as ``on_progress(images_done, images_total)``.

    Returns:
        What was written: ``{"table", "embeddings", "rows", "clusters"}``.

    Raises:
        ValueError: a bad format, split or layer, images the network cannot
            take; nothing is written then.
    """
    if file_format not in FORMATS:
        raise ValueError(f"file_format must be one of {', '.join(FORMATS)}; got {file_format!r}.")
    images, labels = getattr(data, f"x_{split}", None), getattr(data, f"y_{split}", None)
    if split not in ("train", "test") or images is None:
        raise ValueError(f"The data has no {split!r} split; use `split=train`.")
    if files is not None and len(files) != len(images):
        raise ValueError(f"{len(files)} file names for {len(images)} images.")
    out = Path(out)
    total = len(images)
    run.embed(images[:1], layer=layer)  # a bad layer or image shape fails before any write
    try:  # each file through a temporary beside it (see `_atomic`)
        with (
            _atomic(out) as table,
            _atomic(out.with_suffix(".npy")) as vectors,
            contextlib.ExitStack() as files_open,
        ):
            writer, array = None, None
            for start in range(0, total, EXPORT_BATCH):
                batch = images[start : start + EXPORT_BATCH]
                clusters, distances = run.assign(batch)
                rows = _rows(start, len(batch), split, files, labels, clusters, distances)
                if labels is not None and data.class_names is not None:
                    rows["label_name"] = [data.class_names[label] for label in rows["label"]]
                vector = None
                if embeddings:
                    vector = run.embed(batch, layer=layer)
                    if array is None:  # written, not memory-mapped: a full disk then raises
                        # ENOSPC where a memory map dies of SIGBUS
                        array = files_open.enter_context(open(vectors, "wb"))
                        header = {
                            "descr": "<f4",
                            "fortran_order": False,
                            "shape": (total, vector.shape[1]),
                        }
                        np.lib.format.write_array_header_1_0(array, header)
                    array.write(np.ascontiguousarray(vector, "<f4").tobytes())
                writer = _write(writer, table, file_format, rows, vector)
                if on_progress is not None:
                    on_progress(start + len(batch), total)
            writer.close()
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise OSError(
            error.errno,
            f"No space left on the disk of {out.parent} for the export of {total} images; "
            "nothing was written (the partial files were removed). Free space or export "
            "elsewhere (`out`, --out)",
        ) from None
    return {
        "table": str(out),
        "embeddings": str(out.with_suffix(".npy")) if embeddings else None,
        "rows": total,
        "clusters": run.num_clusters,
    }


def link_clusters(
    table: dict[str, np.ndarray], root: str | Path, out: str | Path, copy: bool = False
) -> int:
    """One folder per cluster under `out`, holding links to (or copies of) its images.

    Args:
        table: Columns ``file`` (relative to `root`, `file_names.escape`d), ``cluster`` and
            ``distance``, as `export_assignments` writes them.
        root: The source folder the files are relative to.
        out: A new or empty folder.
        copy: Copy the files instead of linking them.

    The entries are named ``<rank>_<file name>``, rank 0 the image nearest
    its centroid, so a sorted listing shows the most typical first.

    Returns:
        The number of entries made.

    Raises:
        ValueError: `out` is not empty, or symbolic links are not possible
            there (the message suggests `copy=True`); `out` is left as it was.
    """
    out, root = Path(out), Path(root)
    check_link_folder(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=out.parent))
    try:
        order = np.lexsort((table["distance"], table["cluster"]))
        width = len(str(int(np.max(table["cluster"])))) if len(order) else 1
        rank, previous = 0, None
        for row in order:
            cluster = int(table["cluster"][row])
            rank = rank + 1 if cluster == previous else 0
            previous = cluster
            folder = staging / f"cluster_{cluster:0{width}d}"
            folder.mkdir(exist_ok=True)
            source = (root / unescape(table["file"][row])).resolve()
            target = folder / f"{rank:06d}_{source.name}"
            if copy:
                shutil.copy2(source, target)
            else:
                try:
                    os.symlink(source, target)
                except OSError as error:
                    raise ValueError(
                        f"Cannot make symbolic links in {out.parent} ({error.strerror}); copy "
                        "the images instead (`copy=True`)."
                    ) from None
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return len(order)


def check_link_folder(out: str | Path) -> None:
    """Raises ValueError unless `out` can take `link_clusters`'s folders (new, or empty).

    Called before an export's work too, so a refusal leaves nothing written.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} is not an empty folder; choose a new or empty one.")


def read_table(path: str | Path) -> dict[str, np.ndarray]:
    """An exported table's columns as NumPy arrays (Parquet or CSV)."""
    path = Path(path)
    if path.suffix == ".csv":
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        columns = {key: [row[key] for row in rows] for key in (rows[0] if rows else {})}
        return {key: _parsed(values) for key, values in columns.items()}
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}


def _rows(start, count, split, files, labels, clusters, distances) -> dict:
    rows = {}
    if files is not None:
        rows["file"] = files[start : start + count]
    else:
        rows["index"] = np.arange(start, start + count, dtype=np.int64)
        rows["split"] = [split] * count
    if labels is not None:
        rows["label"] = np.asarray(labels[start : start + count], np.int64)
    rows["cluster"] = clusters
    rows["distance"] = distances
    return rows


def _write(writer, path: Path, file_format: str, rows: dict, vectors):
    if file_format == "csv":
        if writer is None:
            writer = _CsvWriter(path.open("w", newline=""), list(rows))
        writer.rows.writerows(zip(*(np.asarray(v).tolist() for v in rows.values())))
        return writer
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {key: pa.array(np.asarray(value)) for key, value in rows.items()}
    if vectors is not None:
        flat = pa.array(np.ascontiguousarray(vectors, np.float32).ravel())
        columns["embedding"] = pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])
    batch = pa.table(columns)
    if writer is None:
        writer = pq.ParquetWriter(path, batch.schema)
    writer.write_table(batch)
    return writer


class _CsvWriter:
    def __init__(self, file, header):
        self.file, self.rows = file, csv.writer(file)
        self.rows.writerow(header)

    def close(self):
        self.file.close()


class _atomic:
    """A temporary path beside `path` that becomes `path` when the block succeeds."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, name = tempfile.mkstemp(
            prefix=".partial-", suffix=self.path.suffix, dir=self.path.parent
        )
        os.close(descriptor)
        self.temporary = Path(name)
        return self.temporary

    def __exit__(self, kind, error, traceback):
        if kind is None and self.temporary.exists() and self.temporary.stat().st_size:
            os.chmod(self.temporary, FILE_MODE)  # mkstemp makes it private
            os.replace(self.temporary, self.path)
        else:
            self.temporary.unlink(missing_ok=True)
        return False


def _parsed(values: list[str]) -> np.ndarray:
    for kind in (np.int64, np.float64):
        try:
            return np.array(values, dtype=kind)
        except ValueError:
            continue
    return np.array(values, dtype=object)
