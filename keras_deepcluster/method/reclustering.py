"""`Reclustering`: the callback that makes a `fit` epoch a DeepCluster epoch."""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable

import keras
import numpy as np

from keras_deepcluster.data.disk_images import take_rows
from keras_deepcluster.evaluation.cluster_metrics import (
    ari,
    hungarian_accuracy,
    label_entropy,
    nmi,
)
from keras_deepcluster.method import clustering
from keras_deepcluster.method.features import FeatureExtractor
from keras_deepcluster.method.pseudo_label_dataset import PseudoLabelDataset
from keras_deepcluster.platform import devices, feature_routes, memory, processes
from keras_deepcluster.settings import (
    FEATURE_BATCH_SIZE,
    HALT_PATIENCE,
    KMEANS_BACKEND,
    KMEANS_ITERATIONS,
    PCA_BACKEND,
    check_setting,
)


class ClusteringWarning(UserWarning):
    """An epoch's features that k-means can hardly tell apart (most clusters left empty)."""


@dataclasses.dataclass(frozen=True)
class ReclusteringSettings:
    """How a `Reclustering` clusters and when it stops, checked once when made.

    The fields are the `Reclustering` arguments of the same names (which see), each
    checked by its rule in `keras_deepcluster.settings` (a recipe's keys are checked by
    the same rules).

    Raises:
        ValueError: A setting out of its range; the message names it and what it allows.

    Examples:
        >>> ReclusteringSettings(pca_dim=256, halt_after=10).kmeans_iterations
        20
    """

    pca_dim: int | None = None
    pca_backend: str = PCA_BACKEND
    kmeans_backend: str = KMEANS_BACKEND
    kmeans_iterations: int = KMEANS_ITERATIONS
    halt_after: int | None = None
    halt_when_stable: float | None = None
    halt_patience: int = HALT_PATIENCE
    seed: int = 0
    feature_batch_size: int = FEATURE_BATCH_SIZE
    feature_jit_compile: bool | str = "auto"

    def __post_init__(self):
        for field in dataclasses.fields(self):
            check_setting(field.name, getattr(self, field.name))


# What the logs of an epoch on frozen labels say about the clustering it skipped.
_HALTED_STATS = {
    "clustered": 0.0,
    "kmeans_objective": float("nan"),
    "empty_clusters": 0.0,
    "seconds_features": 0.0,
    "seconds_pca": 0.0,
    "seconds_kmeans": 0.0,
}


class Reclustering(keras.callbacks.Callback):
    """Re-clusters the training set at the start of every epoch.

    At the start of each epoch it extracts the backbone's features of every
    training image (fixed view, inference mode), PCA-whitens them (optional),
    L2-normalises them, runs k-means with a seed derived from ``(seed,
    epoch)`` (all on the device when k-means runs there, so that only the
    labels come back to the host), refills the clusters k-means left empty,
    hands the labels to the `PseudoLabelDataset` for that same epoch, and
    re-initialises the model's head and its optimizer state. After
    `halt_after` epochs the pseudo-labels are frozen (the Deep Dive paper's
    early stopping of the clustering) and only the sampler and the head are
    renewed each epoch. With `halt_when_stable`, the clustering also stops by
    itself once NMI(t, t-1) has stayed at or above that threshold for
    `halt_patience` consecutive clusterings (see `stable_since`);
    `halted_at` and `halt_reason` then say when and why.

    Each epoch's logs (and so the `History`) get:
    ``nmi_previous`` (NMI with the previous epoch's labels; NaN in the first),
    ``nmi_labels``, ``acc_labels`` (Hungarian accuracy), ``ari_labels`` and
    ``label_entropy`` (only when `labels` are given),
    ``clusters``, ``cluster_min``, ``cluster_max`` (sizes after repair),
    ``empty_clusters`` (left empty by k-means and refilled),
    ``kmeans_objective`` (mean squared distance; NaN when not clustered),
    ``seconds_features``, ``seconds_pca``, ``seconds_kmeans``,
    ``seconds_train`` (from the end of its `on_epoch_begin` to the start of
    its `on_epoch_end`: the epoch's training steps) and
    ``clustered`` (1 if the epoch re-clustered, 0 once halted). Put it first
    in the callback list, so that the others see these logs.

    Args:
        data: The `PseudoLabelDataset` passed to `fit`.
        labels: Optional true labels (N,), used only for the metrics. Negative
            entries mark images without a label, left out of the metrics.
        pca_dim: PCA-whitening dimension; None skips PCA.
        pca_backend: ``"faiss"`` or ``"sklearn"``.
        kmeans_backend: ``"auto"`` (`keras.ops` k-means when Keras sees a GPU, else
            faiss when importable), ``"faiss"``, ``"sklearn"`` or ``"keras"``.
        kmeans_iterations: Lloyd iterations per clustering.
        halt_after: Stop re-clustering after this many epochs (>= 1); None never stops.
        halt_when_stable: Stop re-clustering once NMI(t, t-1) >= this threshold
            (in (0, 1]) for `halt_patience` clusterings in a row; None never does.
        halt_patience: Consecutive stable clusterings `halt_when_stable` needs
            (a positive integer; None is refused).
        seed: Seed (>= 0) from which every epoch's k-means and head seeds are derived.
        feature_batch_size: Batch size of the feature extraction.
        feature_jit_compile: ``jit_compile`` of the feature extraction (see
            `FeatureExtractor`); True compiles it with `torch.compile` on PyTorch.
        on_progress: Called as ``on_progress(phase, done, total)`` while an
            epoch re-clusters: phase ``"features"`` after every extraction
            batch (images done of N), then ``"clustering"`` at the start (0 of
            1) and end (1 of 1) of PCA + k-means. For progress displays.

    Attributes:
        config: The `ReclusteringSettings`; each of them also reads as an
            attribute of the callback (``callback.pca_dim``).
        pseudo_labels: The current epoch's labels (N,); None before the first.
        cluster_sizes: The current epoch's cluster sizes (num_clusters,), after
            the refill of empty clusters; None before the first epoch.
        previous_labels: The previous epoch's labels, or None.
        halted_at: The first epoch that does not re-cluster, or None.
        halt_reason: Why the clustering stops there, or None.

    Examples:
        >>> callback = Reclustering(data, labels=y_train, halt_after=10, seed=0)
        >>> history = model.fit(data, epochs=30, callbacks=[callback])
        >>> history.history["nmi_labels"][-1]
    """

    def __init__(
        self,
        data: PseudoLabelDataset,
        labels: np.ndarray | None = None,
        pca_dim: int | None = None,
        pca_backend: str = PCA_BACKEND,
        kmeans_backend: str = KMEANS_BACKEND,
        kmeans_iterations: int = KMEANS_ITERATIONS,
        halt_after: int | None = None,
        halt_when_stable: float | None = None,
        halt_patience: int = HALT_PATIENCE,
        seed: int = 0,
        feature_batch_size: int = FEATURE_BATCH_SIZE,
        feature_jit_compile: bool | str = "auto",
        on_progress: Callable[[str, int, int], None] | None = None,
    ):
        super().__init__()
        if not isinstance(data, PseudoLabelDataset):
            raise ValueError(
                "Reclustering needs the PseudoLabelDataset given to fit; got "
                f"{type(data).__name__}."
            )
        if labels is not None:
            labels = np.asarray(labels)
            if labels.shape != (data.num_images,):
                raise ValueError(
                    f"labels must hold one label per image, shape ({data.num_images},); "
                    f"got shape {labels.shape}."
                )
        self.config = ReclusteringSettings(
            pca_dim=pca_dim,
            pca_backend=pca_backend,
            kmeans_backend=kmeans_backend,
            kmeans_iterations=kmeans_iterations,
            halt_after=halt_after,
            halt_when_stable=halt_when_stable,
            halt_patience=halt_patience,
            seed=seed,
            feature_batch_size=feature_batch_size,
            feature_jit_compile=feature_jit_compile,
        )
        self.data = data
        self.labels = labels
        self.on_progress = on_progress or (lambda phase, done, total: None)
        self.pseudo_labels: np.ndarray | None = None
        self.cluster_sizes: np.ndarray | None = None
        self.previous_labels: np.ndarray | None = None
        self.halted_at: int | None = halt_after
        self.halt_reason: str | None = None if halt_after is None else f"halt_after={halt_after}"
        self._stability: list[float] = []  # NMI(t, t-1) so far, with halt_when_stable
        self._epoch_logs: dict[str, float] = {}

    def __getattr__(self, name: str):
        # The settings read as attributes too (`callback.seed`); `config` holds them.
        config = self.__dict__.get("config")
        if config is not None and name in _SETTING_NAMES:
            return getattr(config, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # The epoch: extract -> PCA -> L2 -> k-means -> repair -> sampler -> head.

    def on_train_begin(self, logs=None):
        self.check(self.model)
        processes.check_same("the data and the re-clustering settings", self._fingerprint())
        self._extractor = FeatureExtractor(
            self.model.backbone,
            self.data.views,
            jit_compile=self.config.feature_jit_compile,
            direct_torch=self.model.direct_torch,  # the model's switch governs its extraction too
        )

    def on_epoch_begin(self, epoch, logs=None):
        halted = self.halted_at is not None and epoch >= self.halted_at
        if halted and self.pseudo_labels is not None:
            labels, stats = self.pseudo_labels, _HALTED_STATS
        else:
            labels, stats = self._recluster(epoch)
        self.previous_labels, self.pseudo_labels = self.pseudo_labels, labels
        self.data.set_pseudo_labels(labels, epoch)
        # The new cluster ids bear no relation to the old ones: a fresh head.
        head_seed = clustering.derive_seed(self.config.seed, epoch, clustering.HEAD_STREAM)
        self.model.reset_head(head_seed)
        self.cluster_sizes = np.bincount(labels, minlength=self.model.num_clusters)
        self._epoch_logs = {**stats, **self._label_stats(labels)}
        if not halted and self.config.halt_when_stable is not None:
            self._halt_if_stable(epoch)
        self._training_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            seconds_train = time.perf_counter() - self._training_start
            logs.update(self._epoch_logs, seconds_train=seconds_train)

    @property
    def epoch_logs(self) -> dict[str, float]:
        """The current epoch's clustering logs (what `on_epoch_end` adds), from its start on."""
        return dict(self._epoch_logs)

    def _recluster(self, epoch: int) -> tuple[np.ndarray, dict[str, float]]:
        """This epoch's pseudo-labels from the backbone's features, and their logs."""
        config, model = self.config, self.model
        start = time.perf_counter()
        features = self._extractor(
            processes.own_shard(self.data.images, take_rows),
            config.feature_batch_size,
            on_batch=lambda done, total: self.on_progress("features", done, total),
            on_device=feature_routes.extract_to_device(
                config.kmeans_backend, self.data.num_images, model.feature_dim
            ),
        )
        feature_routes.wait_for(features)  # so that the phases are timed apart
        seconds_features = time.perf_counter() - start
        self.on_progress("clustering", 0, 1)
        try:  # PCA-whitening, L2, k-means and the refill of empty clusters
            result = clustering.cluster_features(
                features,
                model.num_clusters,
                seed=clustering.kmeans_seed(config.seed, epoch),
                pca_dim=config.pca_dim,
                pca_backend=config.pca_backend,
                kmeans_backend=config.kmeans_backend,
                kmeans_iterations=config.kmeans_iterations,
            )
        except FloatingPointError as error:
            raise FloatingPointError(f"Epoch {epoch}, re-clustering: {error}") from None
        if result.empty_clusters > model.num_clusters // 2:
            warnings.warn(
                f"Epoch {epoch}: k-means left {result.empty_clusters} of {model.num_clusters} "
                "clusters empty (refilled by splitting the largest): the images' features "
                "hardly differ (identical or nearly identical images?), so these pseudo-labels "
                "carry little. Check the data, or use fewer clusters.",
                ClusteringWarning,
                stacklevel=2,
            )
        self.on_progress("clustering", 1, 1)
        return result.labels, {
            "clustered": 1.0,
            "kmeans_objective": result.objective,
            "empty_clusters": float(result.empty_clusters),
            "seconds_features": seconds_features,
            "seconds_pca": result.seconds_pca,
            "seconds_kmeans": result.seconds_kmeans,
        }

    def _label_stats(self, labels: np.ndarray) -> dict[str, float]:
        """The logs of a clustering: its sizes, and its agreement with the last and the labels."""
        sizes = self.cluster_sizes
        stats = {
            "nmi_previous": (
                nmi(labels, self.previous_labels)
                if self.previous_labels is not None
                else float("nan")
            ),
            "clusters": float(np.count_nonzero(sizes)),
            "cluster_min": float(sizes[sizes > 0].min()),
            "cluster_max": float(sizes.max()),
        }
        known = None if self.labels is None else self.labels >= 0
        if known is not None and known.any():
            ours, truth = labels[known], self.labels[known]
            stats["nmi_labels"] = nmi(ours, truth)
            stats["acc_labels"] = hungarian_accuracy(ours, truth)
            stats["ari_labels"] = ari(ours, truth)
            stats["label_entropy"] = label_entropy(ours, truth)
        return stats

    def _halt_if_stable(self, epoch: int) -> None:
        """Freezes the labels from the next epoch once the clustering has stopped changing."""
        threshold, patience = self.config.halt_when_stable, self.config.halt_patience
        self._stability.append(self._epoch_logs["nmi_previous"])
        if stable_since(self._stability, threshold, patience):
            self.halted_at = epoch + 1
            self.halt_reason = (
                f"NMI(t, t-1) >= {threshold} for {patience} clusterings in a row "
                f"(epochs {epoch + 1 - patience}-{epoch})"
            )

    # What a run records, and what a checkpoint restores.

    def settings(self) -> dict:
        """The settings that decide the pseudo-labels (what a run records as its config)."""
        settings = dataclasses.asdict(self.config)
        # How the features are computed, not which: no part of a run's config.
        del settings["feature_batch_size"], settings["feature_jit_compile"]
        return settings

    def state(self) -> dict:
        """What a checkpoint needs besides the pseudo-labels (JSON-serialisable)."""
        return {
            "halted_at": self.halted_at,
            "halt_reason": self.halt_reason,
            "stability": list(self._stability),
        }

    def restore(self, state: dict, pseudo_labels: np.ndarray) -> None:
        """Continues after a checkpoint: `state()` and the last epoch's pseudo-labels."""
        self.halted_at, self.halt_reason = state["halted_at"], state["halt_reason"]
        self._stability = list(state["stability"])
        self.pseudo_labels, self.previous_labels = np.asarray(pseudo_labels), None

    # The checks of a model against the data and the settings, before anything runs.

    def check(self, model) -> None:
        """Raises ValueError when `model` cannot be trained on this callback's data."""
        for attribute in ("backbone", "num_clusters", "reset_head"):
            if not hasattr(model, attribute):
                raise ValueError(
                    f"Reclustering trains a keras_deepcluster.DeepCluster model; got a "
                    f"{type(model).__name__} without `{attribute}`."
                )
        data, pca_dim = self.data, self.config.pca_dim
        k, n = model.num_clusters, data.num_images
        if n < 2:
            raise ValueError(
                f"The data has {n} image; clustering needs at least two (and at least "
                f"num_clusters={k}). Add images, or check `limit` and the data source."
            )
        if k > n:
            raise ValueError(
                f"num_clusters={k} is larger than the number of images ({n}); use at most {n}."
            )
        expected = tuple(model.backbone.input_shape[1:])
        got = (data.views.size, data.views.size, data.images.shape[-1])
        if expected != got:
            raise ValueError(
                f"The backbone takes images of shape {expected} (H, W, C) but the data "
                f"gives {got}: {data.images.shape[-1]}-channel images viewed at "
                f"{data.views.size}x{data.views.size}. Match the backbone's input_shape "
                "to the data (channels, ImageViews size)."
            )
        if pca_dim is not None and pca_dim > model.feature_dim:
            dim = model.feature_dim
            raise ValueError(
                f"pca_dim={pca_dim} exceeds the feature dimension {dim}; "
                f"use at most {dim} (`pca_dim={dim}`) or none (`pca_dim=None`)."
            )
        if pca_dim is not None and pca_dim > n:
            raise ValueError(
                f"pca_dim={pca_dim} needs at least {pca_dim} images, but the data has "
                f"{n}: PCA gives at most as many dimensions as there are images; use at most "
                f"{n} (`pca_dim={n}`) or none (`pca_dim=None`)."
            )
        feature_routes.check_kmeans_backend(self.config.kmeans_backend)
        self._check_memory(model)
        replicas = devices.replica_count(model)
        for name, size in (
            ("batch_size", data.batch_size),
            ("feature_batch_size", self.config.feature_batch_size),
        ):
            if size % replicas:
                raise ValueError(
                    f"{name}={size} does not split evenly over the {replicas} devices the "
                    f"model is distributed on; use a multiple of {replicas}."
                )

    def _check_memory(self, model) -> None:
        """Refuses settings whose arrays cannot fit, before anything is allocated."""
        rows = processes.shard(self.data.num_images)  # this process's features
        n, dim = rows.stop - rows.start, model.feature_dim
        # The features, their normalised copy and, with PCA, the whitened ones (float32).
        features = 4 * n * (2 * dim + (self.config.pca_dim or 0))
        memory.check_fits(
            f"Clustering the features of {n} images ({dim} dimensions)",
            features,
            memory.available_host_bytes(),
            "use fewer images, a feature layer with fewer dimensions, or more memory",
        )
        where = memory.device_or_host_bytes()
        for name, batch_size, copies in (
            ("A training batch", self.data.batch_size, 1),
            ("A feature-extraction batch", self.config.feature_batch_size, 1 / 3),
        ):
            memory.check_fits(
                f"{name} of {batch_size} images",
                int(copies * memory.training_batch_bytes(model.backbone, batch_size)),
                where,
                "use a smaller batch size",
            )

    def _fingerprint(self) -> str:
        """What every process of a job must share: settings, and a sample of the images."""
        data, n = self.data, self.data.num_images
        sample = np.asarray(data.images[[0, n // 2, n - 1]])
        shared = (self.model.num_clusters, self.settings(), data.images.shape)
        shared += (data.batch_size, data.epoch_length, data.seed)
        return repr(shared) + sample.tobytes().hex()


_SETTING_NAMES = frozenset(field.name for field in dataclasses.fields(ReclusteringSettings))


def stable_since(nmi_previous: list[float], threshold: float, patience: int) -> bool:
    """Whether the last `patience` values of NMI(t, t-1) are all >= `threshold`.

    NaN (the first clustering has no predecessor) never counts as stable.

    Examples:
        >>> stable_since([float("nan"), 0.8, 0.93, 0.95, 0.96], threshold=0.9, patience=3)
        True
    """
    recent = nmi_previous[-patience:]
    return len(recent) == patience and all(value >= threshold for value in recent)
