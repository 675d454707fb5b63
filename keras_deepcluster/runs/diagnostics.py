"""`ClusteringDiagnostics`: each epoch's clustering, for TensorBoard and as JSON lines.

What a DeepCluster epoch did to its clustering (NMI with the previous
epoch's, clusters left empty, the k-means objective, the cluster sizes, the
time of each phase, the scores on labelled images) is computed by the
`Reclustering` already; this callback writes it where tools can watch it while
training runs: TensorBoard event files and a JSON-lines file with one object
per epoch.

The event files are written with tensorboardX, which needs no TensorFlow:
Keras's own `keras.callbacks.TensorBoard` writes through `tf.summary` and so
imports TensorFlow (seconds per process) on JAX and PyTorch runs too.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import uuid
from pathlib import Path

import keras
import numpy as np

from keras_deepcluster.method.reclustering import Reclustering
from keras_deepcluster.runs.run_directory import RunDirectory

# What a `train` run writes beside history.csv, and the callback into its log_dir by default.
METRICS_FILE = "metrics.jsonl"
# Ends the names of the event files written here: a resumed run replaces its own, no others.
EVENT_FILE_SUFFIX = ".deepcluster"
# The TensorBoard tag of the cluster-size histogram.
CLUSTER_SIZES_TAG = "clustering/cluster_sizes"
# The Reclustering's logs that describe the clustering itself (the others are scores on
# labels, phase times, or the model's training metrics).
CLUSTERING_LOGS = (
    "nmi_previous",
    "clusters",
    "cluster_min",
    "cluster_max",
    "empty_clusters",
    "kmeans_objective",
    "clustered",
)
# The entries of a row that are not scalars of the epoch.
_NOT_SCALARS = ("epoch", "wall_time", "cluster_sizes")


def check_log_dir(log_dir: str | Path) -> None:
    """Raises ValueError unless TensorBoard event files can be written into `log_dir`.

    A folder that exists or can be created, with write permission; called
    before training, so that a bad folder stops a run before anything is written.
    """
    path = Path(log_dir).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(
            f"The TensorBoard folder {path} is a file; give a folder for the event files "
            "(`tensorboard`)."
        )
    existing = next(parent for parent in (path, *path.absolute().parents) if parent.exists())
    if not existing.is_dir():
        raise ValueError(
            f"The TensorBoard folder {path} cannot be created: {existing} is a file; give "
            "another folder (`tensorboard`)."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(
            f"The TensorBoard folder {path} cannot be written: no write permission in "
            f"{existing}; give another folder (`tensorboard`)."
        )


def scalar_tag(key: str) -> str:
    """The TensorBoard tag of a log key, in one of the groups clustering, labels, time, training.

    Examples:
        >>> scalar_tag("nmi_previous"), scalar_tag("acc_labels"), scalar_tag("loss")
        ('clustering/nmi_previous', 'labels/acc_labels', 'training/loss')
    """
    if key in CLUSTERING_LOGS:
        group = "clustering"
    elif key.endswith("_labels") or key == "label_entropy":
        group = "labels"
    elif key.startswith("seconds_"):
        group = "time"
    else:
        group = "training"
    return f"{group}/{key}"


def read_metrics(path: str | Path) -> list[dict]:
    """The rows of a ``metrics.jsonl`` (one dict per epoch); [] when it does not exist.

    A last line without its newline (an append cut short by a crash) is left
    out. Values that were NaN are None (JSON has no NaN).

    Raises:
        ValueError: A whole line that is not a JSON object (the message names the line).
    """
    path = Path(path)
    if not path.is_file():
        return []
    text = path.read_text("utf-8")
    rows = []
    for number, line in enumerate(text.split("\n")[:-1], start=1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict) or "epoch" not in row:
            raise ValueError(f"{path}, line {number}: not a JSON object with an epoch.")
        rows.append(row)
    return rows


class ClusteringDiagnostics(keras.callbacks.Callback):
    """Writes each epoch's clustering diagnostics for TensorBoard and as JSON lines.

    After every epoch it writes one row: the epoch's logs (the loss and the
    model's other metrics; from the `Reclustering`: NMI(t, t-1), clusters
    left empty, the k-means objective, the phase times ``seconds_features``,
    ``seconds_pca``, ``seconds_kmeans``, ``seconds_train``, and, where the
    images have labels or check labels, ``nmi_labels``, ``acc_labels``,
    ``ari_labels``), the cluster sizes, and the wall time. The row is appended
    to `metrics_file` (JSON lines; NaN written as null) and, with `log_dir`,
    written to a TensorBoard event file there: each number as a scalar (tags
    from `scalar_tag`, step = epoch; NaN left out) and the cluster sizes as the
    histogram ``clustering/cluster_sizes``. Nothing is computed again: the
    numbers are the `Reclustering`'s and the model's.

    A `fit` that starts at epoch e (a resumed run) keeps the rows of the
    epochs before e and drops any later ones, in `metrics_file` and in the
    event files, which it writes anew from the kept rows (event files are
    append-only): the record holds each epoch once, as ``history.csv`` does.
    Only this callback's event files (names ending in `EVENT_FILE_SUFFIX`)
    are replaced.

    The event files are written with tensorboardX, imported only with a
    `log_dir`; TensorFlow is never imported.

    Args:
        reclustering: The `Reclustering` callback of the `fit`; put this
            callback after it in the callback list.
        log_dir: The folder for TensorBoard's event files (created), or None
            for none. Checked here (`check_log_dir`).
        metrics_file: The JSON-lines file; default ``metrics.jsonl`` in `log_dir`.

    Raises:
        ValueError: Neither `log_dir` nor `metrics_file`, or a `log_dir` that
            is a file or cannot be written.

    Examples:
        >>> diagnostics = ClusteringDiagnostics(reclustering, log_dir="logs/digits")
        >>> model.fit(data, epochs=10, callbacks=[reclustering, diagnostics])
        >>> # then: tensorboard --logdir logs
    """

    def __init__(
        self,
        reclustering: Reclustering,
        log_dir: str | Path | None = None,
        metrics_file: str | Path | None = None,
    ):
        super().__init__()
        if not isinstance(reclustering, Reclustering):
            raise ValueError(
                f"reclustering must be the Reclustering callback of the fit; got "
                f"{type(reclustering).__name__}."
            )
        if log_dir is None and metrics_file is None:
            raise ValueError("ClusteringDiagnostics writes to a log_dir, a metrics_file or both.")
        if log_dir is not None:
            check_log_dir(log_dir)
        self.reclustering = reclustering
        self.log_dir = None if log_dir is None else Path(log_dir).expanduser()
        self.metrics_file = Path(metrics_file or self.log_dir / METRICS_FILE).expanduser()
        self.rows: list[dict] = []  # this run's rows so far, as in metrics_file
        self._writer = None  # the tensorboardX SummaryWriter of this fit
        self._continued = False  # whether this fit has taken over the earlier record

    def on_epoch_end(self, epoch, logs=None):
        if not self._continued:  # the first epoch of this fit: after e.g. a resume
            self._continue_before(epoch)
        row = self._row(epoch, logs or {})
        self.rows.append(row)
        with self.metrics_file.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if self._writer is not None:
            self._write_events(row)
            self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
        self._writer, self._continued = None, False

    def _continue_before(self, epoch: int) -> None:
        """Keeps the record of the epochs before `epoch`, in both files, and drops the rest."""
        folder, name = RunDirectory(self.metrics_file.parent), self.metrics_file.name
        with folder.reading(name):  # a damaged file: one message, naming it
            self.rows = [row for row in read_metrics(self.metrics_file) if row["epoch"] < epoch]
        folder.path.mkdir(parents=True, exist_ok=True)
        folder.write_text(name, "".join(json.dumps(row) + "\n" for row in self.rows))  # atomic
        if self.log_dir is not None:
            earlier = list(self.log_dir.glob(f"events.out.tfevents.*{EVENT_FILE_SUFFIX}"))
            self._writer = _summary_writer(self.log_dir)
            for row in self.rows:
                self._write_events(row)
            self._writer.flush()
            for path in earlier:  # after the new file holds their kept epochs
                path.unlink(missing_ok=True)
        self._continued = True

    def _row(self, epoch: int, logs: dict) -> dict:
        """The epoch's record: its logs, cluster sizes and wall time, as JSON values."""
        row = {"epoch": epoch, "wall_time": time.time()}
        for key, value in logs.items():
            value = float(value)
            row[key] = value if math.isfinite(value) else None
        row["cluster_sizes"] = self.reclustering.cluster_sizes.tolist()
        return row

    def _write_events(self, row: dict) -> None:
        step, wall_time = row["epoch"], row["wall_time"]
        for key, value in row.items():
            if key not in _NOT_SCALARS and value is not None:
                self._writer.add_scalar(scalar_tag(key), value, step, walltime=wall_time)
        sizes = np.asarray(row["cluster_sizes"], np.float64)
        self._writer.add_histogram(CLUSTER_SIZES_TAG, sizes, step, walltime=wall_time)


def _summary_writer(log_dir: Path):
    """A tensorboardX `SummaryWriter` writing a new event file of this callback's into `log_dir`."""
    # tensorboardX imports torch, where installed, to recognise torch tensors: seconds on a
    # JAX or TensorFlow run. Before torch is imported no torch tensor exists, so it is
    # hidden from that import (as tensorflow_import.py hides TensorFlow from Keras).
    hide_torch = "torch" not in sys.modules
    if hide_torch:
        sys.modules["torch"] = None
    try:
        from tensorboardX import SummaryWriter
    finally:
        if hide_torch:
            del sys.modules["torch"]
    # A name of its own, so that a resumed run's new file never takes an earlier one's.
    suffix = f".{uuid.uuid4().hex[:8]}{EVENT_FILE_SUFFIX}"
    return SummaryWriter(str(log_dir), filename_suffix=suffix)
