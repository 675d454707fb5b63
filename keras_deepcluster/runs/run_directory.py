"""The run directory: everything a `deepcluster train` run leaves behind.

Layout::

    config.toml                 the resolved recipe (``deepcluster train config.toml`` re-runs it)
    checkpoint.json             the last finished epoch and the state to resume after it,
    checkpoint_epoch_NNN.keras  with the model and optimizer of that epoch (removed when done)
    history.csv                 one row per finished epoch: metrics, loss, seconds
    metrics.jsonl               the same per epoch as JSON lines, with the cluster sizes
                                (`ClusteringDiagnostics`; appended, so not atomic)
    pseudo_labels/epoch_000.npz the pseudo-labels each epoch trained on (``labels``)
    model.keras                 the trained DeepCluster model
    clustering.npz              the final clustering (`ClusterModel`: whitening, centroids)
    data.json                   the data it trained on (source, image cache and its identity)
    summary.json                written last: the run finished (final metrics, wall time)
    probe.json, probe_random.json   written by ``deepcluster probe``

Every file is written atomically (a temporary file in the same folder,
flushed to disk, then renamed), so a crash never leaves a half-written file
under its final name. One process at a time writes a run: ``.lock`` is the
lock it holds (`directory_lock`).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from keras_deepcluster.platform.directory_lock import LOCK_FILE, lock_folder
from keras_deepcluster.platform.tensorflow_import import without_tensorflow

# history.csv columns, in this order; further keys follow alphabetically.
HISTORY_COLUMNS = (
    "epoch",
    "loss",
    "nmi_labels",
    "acc_labels",
    "ari_labels",
    "nmi_previous",
    "label_entropy",
    "clusters",
    "cluster_min",
    "cluster_max",
    "empty_clusters",
    "kmeans_objective",
    "clustered",
    "seconds_features",
    "seconds_pca",
    "seconds_kmeans",
    "seconds_train",
    "seconds_epoch",
    "halt_reason",
)


class RunDirectoryError(ValueError):
    """A run directory that cannot be used as asked."""


class DamagedFileError(RunDirectoryError):
    """A file of a run that cannot be read (truncated, garbled, replaced or missing).

    The message names the file, says what its loss costs and what still can be done.
    """


_RESTART = "train the run again (`overwrite=True`, or --overwrite)"
# What each file's damage costs, and what can still be done, by file (or folder) name.
_DAMAGE = {
    "checkpoint.json": "the state to resume from is lost (the finished epochs' history.csv "
    f"and pseudo_labels/ are intact); {_RESTART}",
    "checkpoint_epoch_": "the model to resume from is lost (the finished epochs' history.csv "
    f"and pseudo_labels/ are intact); {_RESTART}",
    "pseudo_labels": f"that epoch's pseudo-labels are lost; {_RESTART}",
    "history.csv": f"the per-epoch record is lost (the model may be intact); {_RESTART}",
    "metrics.jsonl": "the per-epoch diagnostics are lost (history.csv holds most of them); "
    "delete the file to continue without the earlier epochs' lines",
    "summary.json": "the run's final record is lost (its model.keras and clustering.npz may "
    f"be intact); {_RESTART}",
    "model.keras": f"the trained model is lost; {_RESTART}",
    "clustering.npz": f"the final clustering is lost; {_RESTART}",
    "best_weights.npz": "the weights of the best epoch so far are lost (the run can only keep "
    f"its last epoch's); {_RESTART}",
    "data.json": "the record of the data it trained on is lost; give the data again "
    "(`data_dir`, or --data-dir)",
    "probe.json": "the probe's result is lost; run the probe again",
    "space.csv": "the finished seeds' scores are lost; run `space` again with --overwrite",
    "probe_random.json": "the probe's result is lost; run the probe again",
}


class RunDirectory:
    """Reads and writes the files of one run.

    Args:
        path: The directory (created by `create`).
    """

    CONFIG, HISTORY, MODEL, SUMMARY, LABELS, CHECKPOINT = (
        "config.toml",
        "history.csv",
        "model.keras",
        "summary.json",
        "pseudo_labels",
        "checkpoint.json",
    )
    CLUSTERING, DATA, BEST = "clustering.npz", "data.json", "best_weights.npz"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def is_run(self) -> bool:
        return (self.path / self.CONFIG).is_file()

    @property
    def is_finished(self) -> bool:
        return (self.path / self.SUMMARY).is_file()

    @property
    def history(self) -> list[dict[str, float | str]]:
        """The finished epochs' rows of history.csv (see `read_history`)."""
        return self.read_history()

    @property
    def summary(self) -> dict:
        """summary.json of a finished run (final metrics, wall time, versions)."""
        if not self.is_finished:
            raise RunDirectoryError(f"{self.path} holds no finished run (no {self.SUMMARY}).")
        return self.read_json(self.SUMMARY)

    @property
    def has_checkpoint(self) -> bool:
        return (self.path / self.CHECKPOINT).is_file()

    def save_checkpoint(self, model, epoch: int, state: dict) -> None:
        """Saves the model (with its optimizer) after `epoch`, then commits it.

        checkpoint.json is written last and names the model file, so a crash at
        any point leaves the previous checkpoint whole and in charge.
        """
        name = f"checkpoint_epoch_{epoch:03d}.keras"
        _save_keras_atomic(model, self.path / name)
        self.write_json(self.CHECKPOINT, {"epoch": epoch, "model": name, **state})
        for old in self.path.glob("checkpoint_epoch_*.keras"):
            if old.name != name:
                old.unlink()

    def read_checkpoint(self) -> dict | None:
        """The last checkpoint's state (``epoch``, ``model`` file, ...), or None."""
        if not self.has_checkpoint:
            return None
        checkpoint = self.read_json(self.CHECKPOINT, keys=("epoch", "model"))
        epoch, model = checkpoint["epoch"], checkpoint["model"]
        if not (isinstance(epoch, int) and model == f"checkpoint_epoch_{epoch:03d}.keras"):
            with self.reading(self.CHECKPOINT):
                raise ValueError(f"epoch {epoch!r} and model {model!r} do not match")
        return checkpoint

    def remove_checkpoint(self) -> None:
        for path in self.path.glob("checkpoint_epoch_*.keras"):
            path.unlink()
        (self.path / self.CHECKPOINT).unlink(missing_ok=True)

    def check_writable(self, overwrite: bool = False) -> None:
        """Raises RunDirectoryError unless a new run may be written here.

        A missing or empty directory is fine; one holding a run only with
        `overwrite`; anything else never (it is not ours to delete).
        """
        if self.path.exists() and not self.path.is_dir():
            raise RunDirectoryError(
                f"{self.path} is a file, not a directory; choose another `out`."
            )
        if self.is_run and not overwrite:
            if self.is_finished:
                raise RunDirectoryError(
                    f"{self.path} already holds a finished run; pass `overwrite=True` to replace "
                    "it, or choose another `out`."
                )
            raise RunDirectoryError(
                f"{self.path} holds an unfinished run; continue it with `resume=True`, "
                "replace it with `overwrite=True`, or choose another `out`."
            )
        if self.path.is_dir() and not self.is_run and self._contents():
            raise RunDirectoryError(
                f"{self.path} is not empty and holds no run; choose an empty or new `out`."
            )
        parent = next(p for p in (self.path, *self.path.parents) if p.exists())
        if not os.access(parent, os.W_OK | os.X_OK):
            raise RunDirectoryError(
                f"Cannot write to {parent}: permission denied; choose another `out`."
            )

    def lock(self) -> None:
        """Takes this run's lock, if the directory exists (`create` takes it otherwise).

        Raises `directory_lock.FolderInUseError` when another process holds it.
        """
        if self.path.is_dir():
            lock_folder(self.path)

    def create(self, config_toml: str, overwrite: bool = False) -> None:
        """Starts a new run here (checked by `check_writable`), writing its config."""
        self.check_writable(overwrite)
        self.path.mkdir(parents=True, exist_ok=True)
        lock_folder(self.path)
        self.check_writable(overwrite)  # again: another process may have just finished here
        if self.is_run:
            for path in self._contents():  # all but the lock, which stays ours
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        (self.path / self.LABELS).mkdir(parents=True, exist_ok=True)
        self.write_text(self.CONFIG, config_toml)

    def _contents(self) -> list[Path]:
        return [path for path in self.path.iterdir() if path.name != LOCK_FILE]

    def open(self, config_toml: str, overwrite: bool = False) -> bool:
        """Reopens the run here if it has exactly this config (True), else creates it.

        What a resumable command (``space``, ``sweep``) calls: the same
        settings continue where they stopped; other settings are refused
        unless `overwrite`.
        """
        self.check_replaceable(config_toml, overwrite)
        self.lock()
        if self.is_run and not overwrite:
            return True
        self.create(config_toml, overwrite)
        return False

    def holds(self, config_toml: str) -> bool:
        """Whether a finished run of exactly this config is here."""
        return self.is_finished and self.read_config() == config_toml

    def check_replaceable(self, config_toml: str, overwrite: bool = False) -> None:
        """Refuses (unless `overwrite`) a run here of settings other than `config_toml`."""
        if self.is_run and not overwrite and self.read_config() != config_toml:
            raise RunDirectoryError(
                f"{self.path} holds a run of other settings ({self.path / self.CONFIG}); "
                "pass `overwrite=True` to replace it, or choose another `out`."
            )

    def read_config(self) -> str:
        if not self.is_run:
            raise RunDirectoryError(f"{self.path} holds no run (no {self.CONFIG}).")
        with self.reading(self.CONFIG):
            return (self.path / self.CONFIG).read_text("utf-8")

    def write_text(self, name: str, text: str) -> None:
        self._write_atomic(name, lambda f: f.write(text.encode()))

    def write_json(self, name: str, value: dict) -> None:
        self.write_text(name, json.dumps(value, indent=2, default=_json_default) + "\n")

    def read_json(self, name: str, keys: tuple[str, ...] = ()) -> dict:
        """The JSON object in file `name`, which must have `keys`.

        Raises:
            DamagedFileError: the file is missing, not a JSON object, or lacks a key.
        """
        with self.reading(name):
            value = json.loads((self.path / name).read_text("utf-8"))
            missing = [key for key in keys if key not in value]
            if not isinstance(value, dict) or missing:
                raise ValueError(f"no {missing[0]!r}" if missing else "not a JSON object")
            return value

    @contextlib.contextmanager
    def reading(self, name: str) -> Iterator[None]:
        """Turns the errors of reading file `name` in the block into a `DamagedFileError`.

        Any reader of a run's file (this class, `Run.open`, resuming) reads it
        inside this block, so that a truncated, garbled or replaced file gets
        one message naming it, never a parser's own error.
        """
        try:
            yield
        except (
            OSError,
            EOFError,
            ValueError,
            KeyError,
            csv.Error,
            zipfile.BadZipFile,
            zlib.error,
        ) as error:
            if isinstance(error, DamagedFileError):
                raise
            reason = "missing" if isinstance(error, FileNotFoundError) else _reason(error)
            advice = next(
                (text for prefix, text in _DAMAGE.items() if name.startswith(prefix)),
                _RESTART,
            )
            raise DamagedFileError(f"{self.path / name} is damaged ({reason}): {advice}.") from None

    def load_model(self, name: str | None = None):
        """The Keras model saved as `name` (default model.keras); see `reading`."""
        import keras

        name = name or self.MODEL
        with self.reading(name), without_tensorflow():
            with zipfile.ZipFile(self.path / name) as archive:  # Keras would say "not found"
                damaged = archive.testzip()
            if damaged is not None:
                raise zipfile.BadZipFile(f"{damaged} fails its checksum")
            return keras.saving.load_model(self.path / name)

    def write_history(self, rows: list[dict]) -> None:
        """Writes history.csv with every row so far (one per epoch)."""
        keys = {key for row in rows for key in row}
        columns = [c for c in HISTORY_COLUMNS if c in keys] + sorted(keys - set(HISTORY_COLUMNS))
        text = io.StringIO()
        writer = csv.DictWriter(text, columns, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        self.write_text(self.HISTORY, text.getvalue())

    def read_history(self) -> list[dict[str, float | str]]:
        """The rows of history.csv: numbers as floats (blank: NaN), text as is."""
        path = self.path / self.HISTORY
        if not path.is_file():
            return []
        with self.reading(self.HISTORY), path.open(encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
            # Written with its header and a row per finished epoch, each of every column.
            if (
                not rows
                or "epoch" not in rows[0]
                or any(None in row or None in row.values() for row in rows)
            ):
                raise ValueError("rows missing or cut short")
            return [{k: _cell(v) for k, v in row.items()} for row in rows]

    def write_pseudo_labels(self, epoch: int, labels: np.ndarray) -> None:
        self._write_atomic(
            f"{self.LABELS}/epoch_{epoch:03d}.npz",
            lambda f: np.savez_compressed(f, labels=np.asarray(labels, np.int32)),
        )

    def read_pseudo_labels(self, epoch: int) -> np.ndarray:
        name = f"{self.LABELS}/epoch_{epoch:03d}.npz"
        with self.reading(name), np.load(self.path / name) as npz:
            return npz["labels"]

    def write_weights(self, name: str, weights: list[np.ndarray]) -> None:
        """Writes a model's `get_weights()` as ``.npz`` (atomic)."""
        arrays = {f"w{index:04d}": value for index, value in enumerate(weights)}
        self._write_atomic(name, lambda f: np.savez(f, **arrays))

    def read_weights(self, name: str) -> list[np.ndarray]:
        """The weights `write_weights` wrote, in order (for `set_weights`)."""
        with self.reading(name), np.load(self.path / name) as npz:
            return [npz[key] for key in sorted(npz.files)]

    def write_cluster_model(self, cluster_model) -> None:
        """Writes the final clustering (a `ClusterModel`) as clustering.npz."""
        self._write_atomic(self.CLUSTERING, cluster_model.save)

    def save_model(self, model) -> None:
        _save_keras_atomic(model, self.path / self.MODEL)

    def _write_atomic(self, name: str, write: Callable) -> None:
        final = self.path / name
        descriptor, temporary = tempfile.mkstemp(dir=final.parent, prefix=".partial-")
        try:
            with os.fdopen(descriptor, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(temporary, FILE_MODE)  # mkstemp makes it private
            os.replace(temporary, final)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def _reason(error: Exception) -> str:
    """A parser's error in a few words: "not valid JSON", "a bad zip file: ..."."""
    if isinstance(error, json.JSONDecodeError):
        return f"not valid JSON at line {error.lineno}"
    if isinstance(error, UnicodeDecodeError):
        return "not UTF-8 text"
    if isinstance(error, (zipfile.BadZipFile, EOFError, zlib.error)):
        return f"not a whole archive: {error}"
    if isinstance(error, OSError):
        return error.strerror or str(error)
    return str(error).strip("'\"") or type(error).__name__


def _cell(text: str) -> float | str:
    try:
        return float(text) if text != "" else float("nan")
    except ValueError:
        return text


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# What a file written through a temporary gets: what `open` would give it (mkstemp: 0600).
FILE_MODE = 0o666 & ~_umask()


def _fsync(path: Path) -> None:
    with path.open("rb") as f:
        os.fsync(f.fileno())


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"Cannot write {type(value).__name__} to JSON.")


def _save_keras_atomic(model, final: Path) -> None:
    """`model.save` into `final` through a temporary file, synced, then renamed."""
    # Keras insists on the .keras suffix, so the temporary name keeps it.
    temporary = final.with_name(".partial-" + final.name)
    with without_tensorflow():  # Keras would import it to look for its shapes
        model.save(temporary)
    _fsync(temporary)
    os.replace(temporary, final)
