"""Callbacks that make a `fit` a run: recorded, resumable, stopped cleanly.

`RunRecorder` writes a run directory after every epoch and, like Keras's
`BackupAndRestore`, continues a run that holds a checkpoint; `StopOnNaN` and
`StopOnInterrupt` end training with a message at a step boundary.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

import keras
import numpy as np

from keras_deepcluster.evaluation.cluster_metrics import cluster_scores
from keras_deepcluster.method.cluster_model import ClusterModel
from keras_deepcluster.method.clustering import kmeans_seed
from keras_deepcluster.method.features import FeatureExtractor
from keras_deepcluster.method.reclustering import Reclustering
from keras_deepcluster.platform import determinism, processes
from keras_deepcluster.platform.interrupts import interrupt_requested
from keras_deepcluster.runs.recipe import Recipe, toml_value
from keras_deepcluster.runs.run_directory import RunDirectory, RunDirectoryError


class RunRecorder(keras.callbacks.Callback):
    """Records a DeepCluster `fit` into a run directory, and resumes it exactly.

    After every epoch it writes that epoch's pseudo-labels, the history so
    far and a checkpoint of the model, its optimizer and the re-clustering
    state, each atomically; when training ends after the last epoch it writes
    ``model.keras``, the final clustering of the trained network's features
    (``clustering.npz``) and ``summary.json``, and drops the checkpoint (see
    `RunDirectory` for the layout).

    When the directory already holds a checkpoint, `fit` continues after it
    (as `keras.callbacks.BackupAndRestore` does): the model and optimizer
    are restored in place, the `Reclustering` gets its state back, and the
    epochs run from there give the same pseudo-labels and metrics as an
    uninterrupted run on the same backend and machine, since every random
    draw derives from (seed, epoch). Put it after the `Reclustering` in the
    callback list, so that it sees each epoch's metrics and phase times.

    Args:
        run: The run directory (a path or `RunDirectory`). A new one is
            created with `config` as its ``config.toml``; one that holds a
            run must hold one of the same config.
        reclustering: The `Reclustering` callback of this `fit`.
        config: The settings to record (a `Recipe` or TOML text); None
            records the re-clustering's settings.
        summary: Extra entries for ``summary.json``.
        resume_from: Where to read the checkpoint from, when not `run` (the
            processes of a multi-process job other than process 0 write a
            scratch copy and resume from the real run).
        keep_best: Keep the best epoch rather than the last, as Keras's
            ``EarlyStopping(restore_best_weights=True)`` does: the epoch whose
            clustering scores the highest NMI on the labelled images (a check
            set: the `Reclustering`'s labels, -1 where unknown). When the final
            clustering scores lower, ``model.keras`` and ``clustering.npz`` hold
            that epoch's network (the weights its clustering was made from) and
            its pseudo-labels, and the summary's ``kept`` says which epoch.

    Examples:
        >>> recorder = RunRecorder("runs/mine", reclustering)
        >>> model.fit(data, epochs=50, callbacks=[reclustering, recorder, StopOnNaN()])
        >>> # the kernel dies at epoch 40; the same three lines again continue at 41
    """

    def __init__(
        self,
        run: str | Path | RunDirectory,
        reclustering: Reclustering,
        config: Recipe | str | None = None,
        summary: dict | None = None,
        resume_from: RunDirectory | None = None,
        keep_best: bool = False,
    ):
        super().__init__()
        if not isinstance(reclustering, Reclustering):
            raise ValueError(
                f"reclustering must be the Reclustering callback of the fit; got "
                f"{type(reclustering).__name__}."
            )
        if keep_best and _known(reclustering) is None:
            raise ValueError(
                "keep_best=True chooses the epoch by its clustering's score on labelled images, "
                "but the Reclustering has no labels; give it labels (a few labelled images "
                "suffice, -1 for the others) or leave keep_best off."
            )
        self.keep_best = keep_best
        self.best: dict | None = None  # {"epoch", "nmi"} of the best clustering so far
        self.run = run if isinstance(run, RunDirectory) else RunDirectory(run)
        self.reclustering = reclustering
        if config is None:
            config = _settings_toml(reclustering)
        self.config = config if isinstance(config, str) else config.to_toml()
        self.resume_from = resume_from
        self.summary = dict(summary or {})
        self.rows: list[dict] = []
        self.resumed_at: int | None = None
        self._wall_before = 0.0  # wall seconds of the run before this process resumed it
        self._created = time.perf_counter()
        self._epochs_done = 0

    def wall_seconds(self) -> float:
        """Wall time of the run so far, across resumes."""
        return self._wall_before + time.perf_counter() - self._created

    def on_train_begin(self, logs=None):
        source = self.resume_from or self.run
        if source.is_run:
            source.check_replaceable(self.config)
            if source.is_finished:
                raise RunDirectoryError(
                    f"{source.path} already holds this run, finished; read it with "
                    "RunDirectory(path), or record into another directory."
                )
        checkpoint = source.read_checkpoint() if source.is_run else None
        if self.run.is_run and self.run.read_config() == self.config:
            self.run.lock()  # created for this fit (by `train`), or a resume
        else:
            self.run.create(self.config, overwrite=self.run.is_run)
        if checkpoint is not None:
            self._restore(checkpoint, source)

    def _restore(self, checkpoint: dict, source: RunDirectory) -> None:
        model, epoch = self.model, checkpoint["epoch"]
        backend = keras.backend.backend()
        recorded = checkpoint.get("backend", backend)
        if recorded != backend:
            raise RunDirectoryError(
                f"{source.path} trained on {recorded}; it continues on {recorded} only (on "
                f"{backend} the same seed gives other pseudo-labels): set "
                f"KERAS_BACKEND={recorded} before importing Keras, or record into another "
                "directory."
            )
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        with source.reading(checkpoint["model"]):
            model.load_weights(source.path / checkpoint["model"])
        self.reclustering.restore(checkpoint, source.read_pseudo_labels(epoch))
        self.rows = source.read_history()[: epoch + 1]
        if len(self.rows) < epoch + 1:  # deleted or cut short: the resumed record would lack rows
            with source.reading(RunDirectory.HISTORY):
                raise ValueError(f"{len(self.rows)} rows for {epoch + 1} finished epochs")
        self._wall_before = checkpoint.get("wall_seconds", 0.0)
        self.best = checkpoint.get("best")
        self.resumed_at = epoch + 1
        model._initial_epoch = epoch + 1  # what BackupAndRestore sets; read by fit

    def on_epoch_begin(self, epoch, logs=None):
        # The Reclustering (earlier in the list) has just clustered the features of the
        # weights as they are now: with keep_best, these are the weights to keep if it wins.
        clustering = self.reclustering.epoch_logs
        score = clustering.get("nmi_labels")
        if self.keep_best and clustering.get("clustered") and score is not None:
            if self.best is None or score > self.best["nmi"]:
                self.run.write_weights(RunDirectory.BEST, self.model.get_weights())
                self.best = {"epoch": epoch, "nmi": float(score)}

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        logs["seconds_epoch"] = sum(
            logs.get(key, 0.0)
            for key in ("seconds_features", "seconds_pca", "seconds_kmeans", "seconds_train")
        )
        row = {"epoch": epoch, **{k: float(v) for k, v in logs.items()}}
        if self.reclustering.halted_at == epoch:  # the first epoch on frozen labels
            row["halt_reason"] = self.reclustering.halt_reason
        self.rows.append(row)
        self.run.write_pseudo_labels(epoch, self.reclustering.pseudo_labels)
        self.run.write_history(self.rows)
        state = {
            **self.reclustering.state(),
            "wall_seconds": self.wall_seconds(),
            "best": self.best,
            "backend": keras.backend.backend(),
        }
        self.run.save_checkpoint(self.model, epoch, state)
        self._epochs_done = epoch + 1

    def on_train_end(self, logs=None):
        self.model._initial_epoch = None  # Keras keeps it; a later fit starts where asked
        epochs = self.params.get("epochs") if self.params else None
        if self.model.stop_training or epochs is None or self._epochs_done < epochs:
            return  # stopped early: the checkpoint stays, to resume
        final = self._save_final_clustering(epochs)
        self.run.save_model(self.model)  # after the final clustering: maybe an earlier epoch's
        self.run.write_json(RunDirectory.SUMMARY, {**self._summary(epochs), **final})
        self.run.remove_checkpoint()
        (self.run.path / RunDirectory.BEST).unlink(missing_ok=True)

    def _save_final_clustering(self, epochs: int) -> dict:
        """Clusters the trained network's features once more and keeps the clustering.

        ``clustering.npz`` (a `ClusterModel`) is what `kdc.Run.assign` places
        new images with; the training images' scores against their labels
        go into the summary, beside the untrained network's (the first
        epoch's clustering) and their change. With `keep_best`, an earlier
        epoch that scored higher replaces the last (weights and clustering).
        Skipped with several processes (their features are sharded).
        """
        if processes.process_count() > 1:
            return {"final_clustering": None}
        reclustering, settings = self.reclustering, self.reclustering.config
        cluster_model, labels = ClusterModel.fit(
            self._features(),
            self.model.num_clusters,
            seed=kmeans_seed(settings.seed, epochs),
            pca_dim=settings.pca_dim,
            kmeans_backend=settings.kmeans_backend,
            kmeans_iterations=settings.kmeans_iterations,
            pca_backend=settings.pca_backend,
        )
        known, kept = _known(reclustering), None
        if known is not None and self.keep_best and self.best is not None:
            final_nmi = cluster_scores(labels[known], reclustering.labels[known])["nmi"]
            if self.best["nmi"] > final_nmi:
                kept = {**self.best, "last_nmi": final_nmi}
                self.model.set_weights(self.run.read_weights(RunDirectory.BEST))
                labels = self.run.read_pseudo_labels(self.best["epoch"]).astype(np.int64)
                cluster_model = ClusterModel.from_labels(
                    self._features(),
                    labels,
                    self.model.num_clusters,
                    settings.pca_dim,
                    settings.pca_backend,
                )
        self.run.write_cluster_model(cluster_model)
        final = {"clusters": int(np.count_nonzero(np.bincount(labels)))}
        summary = {"final_clustering": final, "kept": kept}
        if known is not None:
            truth = reclustering.labels[known]
            final["train"] = cluster_scores(labels[known], truth)
            untrained = self.run.read_pseudo_labels(0)[known]
            summary["untrained_clustering"] = {"train": cluster_scores(untrained, truth)}
            summary["labelled_images"] = int(known.sum())
            summary["training_effect"] = {"train": training_effect(summary, "train")}
        return summary

    def _features(self) -> np.ndarray:
        data = self.reclustering.data
        extractor = FeatureExtractor(self.model.backbone, data.views)
        return extractor(data.images, self.reclustering.config.feature_batch_size)

    def _summary(self, epochs: int) -> dict:
        nmis = [row["nmi_labels"] for row in self.rows if "nmi_labels" in row]
        reclustering = self.reclustering
        return {
            **self.summary,
            "backend": keras.backend.backend(),
            "epochs": epochs,
            "images": reclustering.data.num_images,
            "processes": processes.process_count(),
            "deterministic": determinism.enabled(),
            "wall_seconds": self.wall_seconds(),
            "final": self.rows[-1],
            "best_nmi_labels": max(nmis) if nmis else None,
            "clustering_stopped": None
            if reclustering.halted_at is None
            else {"epoch": reclustering.halted_at, "reason": reclustering.halt_reason},
            "versions": {"keras": keras.__version__, "python": platform.python_version()},
            "resumed_at_epoch": self.resumed_at,
        }


# A change of NMI smaller than this is within k-means's own run-to-run spread.
UNCHANGED_NMI = 0.01


def training_effect(summary: dict, split: str) -> dict:
    """How the final clustering scores against the untrained network's on `split`.

    Reads ``untrained_clustering`` and ``final_clustering`` of a run's summary.
    Returns ``{"nmi": {"untrained", "final", "change"}, "acc": ..., "ari": ...,
    "verdict"}``; the verdict is "better" or "worse" when NMI moved by more
    than `UNCHANGED_NMI`, else "unchanged".
    """
    before, after = summary["untrained_clustering"][split], summary["final_clustering"][split]
    effect = {}
    for metric in ("nmi", "acc", "ari"):
        change = after[metric] - before[metric]
        effect[metric] = {"untrained": before[metric], "final": after[metric], "change": change}
    change = effect["nmi"]["change"]
    effect["verdict"] = (
        "unchanged" if abs(change) <= UNCHANGED_NMI else "better" if change > 0 else "worse"
    )
    return effect


def describe_effect(summary: dict) -> list[str]:
    """A finished run's before/after in lines of text: what `train` prints.

    The kept epoch (with `keep_best`), then per split the untrained and final
    NMI, ACC and ARI with their change and the verdict, and a warning after a
    split the training made worse.
    """
    lines = []
    kept = summary.get("kept")
    if kept:
        lines.append(
            f"kept epoch {kept['epoch']} (NMI {kept['nmi']:.3f} on the labelled images; the "
            f"last epoch's clustering scored {kept['last_nmi']:.3f})"
        )
    scored = summary.get("check_labels") or f"{summary.get('labelled_images')} labelled images"
    for split, effect in (summary.get("training_effect") or {}).items():
        where = f"{split} ({scored})" if split == "train" else split
        scores = ", ".join(
            f"{metric.upper()} {effect[metric]['untrained']:.3f} -> {effect[metric]['final']:.3f} "
            f"({effect[metric]['change']:+.3f})"
            for metric in ("nmi", "acc", "ari")
        )
        lines.append(f"untrained -> trained on {where}: {scores} {effect['verdict']}")
        if effect["verdict"] == "worse":
            lines.append(
                f"warning: the trained network clusters the {split} images worse than the "
                "untrained one did. Train longer on each clustering (min_steps, --min-steps), "
                "try another k or seed, or keep the untrained network."
            )
    return lines


def _known(reclustering: Reclustering) -> np.ndarray | None:
    """The mask of the images with a label, or None when none has one."""
    labels = reclustering.labels
    if labels is None or not (labels >= 0).any():
        return None
    return labels >= 0


def _settings_toml(reclustering: Reclustering) -> str:
    """The config of a run recorded without a recipe: the re-clustering's settings."""
    data = reclustering.data
    settings = {
        "images": data.num_images,
        "batch_size": data.batch_size,
        "epoch_length": data.epoch_length,
        **{key: value for key, value in reclustering.settings().items() if value is not None},
    }
    lines = ["# A model.fit() run recorded by keras_deepcluster.RunRecorder.", "[fit]"]
    return "\n".join(lines + [f"{k} = {toml_value(v)}" for k, v in settings.items()]) + "\n"


class StopOnNaN(keras.callbacks.Callback):
    """Stops training with a FloatingPointError naming the epoch and step of a NaN/inf loss.

    Marked `async_safe`: on JAX and PyTorch Keras then runs the batch hooks in
    a thread, so reading the loss waits for that step there while the
    training loop goes on dispatching steps; a NaN stops training a step or
    a few later, with the step where it was seen. (A hook that is not
    async-safe makes Keras wait for every step on the host.)
    """

    async_safe = True

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {}).get("loss", 0.0))
        if not np.isfinite(loss):
            raise FloatingPointError(
                f"The training loss is NaN or inf at epoch {self.epoch}, step {batch}: the "
                "network diverged (lower `lr`). Epochs before it are kept in the run directory."
            )


class StopOnInterrupt(keras.callbacks.Callback):
    """Re-raises a Ctrl-C / SIGTERM that native code swallowed, at the next boundary.

    Works inside `keras_deepcluster.catch_interrupts`. Goes after the
    `RunRecorder`, so an epoch that finished is checkpointed first.
    Async-safe (see `StopOnNaN`).
    """

    async_safe = True

    def on_train_batch_end(self, batch, logs=None):
        if interrupt_requested():
            raise KeyboardInterrupt

    on_epoch_begin = on_epoch_end = on_train_batch_end
