"""From a recipe to a trained run directory, and the linear probe of a run.

Importing this module imports keras: the CLI does so only after choosing the
backend.
"""

from __future__ import annotations

import dataclasses
import platform
import time
from collections.abc import Callable, Sequence

import keras
import numpy as np
from rich.console import Console

import keras_deepcluster as kdc
from keras_deepcluster.data.disk_images import take_rows
from keras_deepcluster_cli.options import interrupt_requested
from keras_deepcluster_cli.progress import cache_progress, report_cache
from keras_deepcluster_cli.recipe import Recipe, RecipeError
from keras_deepcluster_cli.run_directory import RunDirectory

# Images per device in each feature-extraction batch.
FEATURE_BATCH_SIZE = 256
# Images held out for the probe's test split when the data has none.
PROBE_HOLDOUT = 0.2


def load_data(recipe: Recipe, console: Console | None = None) -> kdc.data.ImageData:
    """The recipe's images (the first `limit` training images if set).

    Folders, IDX, ``.npz`` and TFDS sources come from their image cache
    (`kdc.data.prepare`), built on first use with a progress bar on `console`
    and rebuilt when the source changed; their images stay on disk.
    """
    views = image_views(recipe)
    if recipe.source not in kdc.data.CACHED_SOURCES:
        data = kdc.data.load(recipe.source, recipe.dataset, recipe.data_dir)
        if recipe.limit is not None:
            data.x_train = take_rows(data.x_train, np.arange(min(recipe.limit, len(data.x_train))))
            data.y_train = None if data.y_train is None else data.y_train[: recipe.limit]
        return data
    size = recipe.image_size or (views.resize if recipe.source == "folder" else None)
    if size is not None and size < views.size:
        raise ValueError(
            f"image_size={size} is smaller than the {views.size}-pixel views of recipe "
            f"{recipe.name!r}; cache the images at {views.size} pixels or more."
        )
    with cache_progress(console) as on_progress:
        cache = kdc.data.prepare(
            recipe.source,
            recipe.dataset,
            recipe.data_dir,
            size=size,
            channels=views.channels,
            limit=recipe.limit,
            on_progress=on_progress,
            on_note=None if console is None else console.print,
        )
    if console is not None:
        report_cache(console, cache)
    return cache.data()


def image_views(recipe: Recipe) -> kdc.ImageViews:
    return kdc.ImageViews.for_dataset(recipe.views or recipe.dataset)


def check_channels(recipe: Recipe, views: kdc.ImageViews, channels: int) -> None:
    """Raises ValueError when the images' channels do not fit the recipe's views."""
    if channels == views.channels:
        return
    kind = {1: "grayscale", 3: "RGB"}
    fitting = "mnist, fashion_mnist or digits" if channels == 1 else "svhn or cifar10"
    raise ValueError(
        f"The {recipe.dataset} images have {channels} channel(s) "
        f"({kind.get(channels, 'other')}) but recipe {recipe.name!r} shows the network "
        f"{views.channels}-channel views ({kind.get(views.channels, 'other')}); use a recipe "
        f"for such images ({fitting}) or convert the images."
    )


def build_backbone(recipe: Recipe, input_shape: tuple[int, int, int]) -> keras.Model:
    """The untrained backbone; its weights depend on the recipe's seed only."""
    kwargs = {"input_shape": input_shape, "batch_norm": recipe.batch_norm, "seed": recipe.seed}
    if recipe.sobel is not None:
        kwargs["sobel"] = recipe.sobel
    return kdc.backbones.get(recipe.backbone, **kwargs)


def steps_per_execution(recipe: Recipe, devices: int) -> int:
    """The recipe's training steps per compiled call, where Keras's `fit` can do several.

    Several steps per call let TensorFlow run them in one graph loop (9 %
    faster epochs on a CPU, docs/performance.md) and call the batch callbacks
    once per call on every backend. Keras runs one on PyTorch, and one under
    TensorFlow's MirroredStrategy (its multi-step loop fails there).
    """
    backend = keras.backend.backend()
    if backend == "torch" or (backend == "tensorflow" and devices > 1):
        return 1
    return recipe.steps_per_execution


def check_devices(devices: int, recipes: Sequence[Recipe]) -> None:
    """Raises ValueError unless every recipe can train on `devices` devices.

    Called before anything is written, so a bad --devices leaves no trace.
    """
    kdc.devices.data_parallel(devices)
    for recipe in recipes:
        if recipe.batch_size % devices:
            raise ValueError(
                f"--devices {devices}: the batch size {recipe.batch_size} of recipe "
                f"{recipe.name!r} does not split evenly over {devices} devices; use a "
                f"--batch-size that is a multiple of {devices}, or other --devices."
            )


@dataclasses.dataclass
class Pretraining:
    """A DeepCluster run set up from a recipe, checked, ready to `fit`.

    Attributes:
        recipe: The settings.
        model: The untrained, compiled `DeepCluster`.
        dataset: Its `PseudoLabelDataset`.
        reclustering: Its `Reclustering` callback (true labels, if any, for the metrics).
        devices: How many devices it trains on (data-parallel when > 1).
        distribution: The `kdc.devices.data_parallel` the model lives in.
    """

    recipe: Recipe
    model: kdc.DeepCluster
    dataset: kdc.PseudoLabelDataset
    reclustering: kdc.Reclustering
    devices: int
    distribution: object

    @classmethod
    def build(
        cls,
        recipe: Recipe,
        data: kdc.data.ImageData,
        on_progress: Callable[[str, int, int], None] | None = None,
        devices: int = 1,
    ) -> Pretraining:
        """Builds and checks everything, so bad settings fail before anything is written.

        With `devices` > 1 the model is built for data-parallel training over
        that many devices (`kdc.devices.data_parallel`).
        """
        distribution = kdc.devices.data_parallel(devices)
        with distribution.scope():
            return cls._build(recipe, data, on_progress, devices, distribution)

    @classmethod
    def _build(cls, recipe, data, on_progress, devices, distribution):
        views = image_views(recipe)
        images = data.x_train
        check_channels(recipe, views, images.shape[-1])
        if recipe.deterministic:
            kdc.enable_determinism()
        keras.utils.set_random_seed(recipe.seed)
        dataset = kdc.PseudoLabelDataset(
            images,
            views,
            batch_size=recipe.batch_size,
            seed=recipe.seed,
            epoch_length=recipe.epoch_multiplier * len(images),
        )
        model = kdc.DeepCluster(
            build_backbone(recipe, (views.size, views.size, images.shape[-1])),
            recipe.clusters,
            weight_decay=recipe.weight_decay,
        )
        model.compile(
            optimizer=keras.optimizers.SGD(recipe.lr, momentum=recipe.momentum),
            steps_per_execution=steps_per_execution(recipe, devices),
        )
        reclustering = kdc.Reclustering(
            dataset,
            labels=data.y_train,
            pca_dim=recipe.pca,
            kmeans_backend=recipe.kmeans,
            kmeans_iterations=recipe.kmeans_iterations,
            halt_after=recipe.halt_after,
            halt_when_stable=recipe.halt_when_stable,
            halt_patience=recipe.halt_patience,
            seed=recipe.seed,
            # The same number of images per device, whatever the device count (with several
            # processes each extracts its own images on one device).
            feature_batch_size=FEATURE_BATCH_SIZE * devices // kdc.processes.process_count(),
            on_progress=on_progress,
        )
        reclustering.check(model)
        return cls(recipe, model, dataset, reclustering, devices, distribution)

    def fit(
        self,
        run: RunDirectory,
        callbacks: Sequence[keras.callbacks.Callback] = (),
        resume: RunDirectory | None = None,
    ) -> keras.callbacks.History:
        """Trains, recording every epoch into `run` (created by `RunDirectory.create`).

        After each epoch its pseudo-labels, history row and a checkpoint (model,
        optimizer, re-clustering state) are on disk; at the end the model and
        ``summary.json``. With `resume` (a run directory, `run` itself except
        on the processes that do not write the run), training continues after
        its last checkpoint (from the start if it has none) and gives the same
        pseudo-labels and metrics as an uninterrupted run on the same backend
        and machine: every random draw derives from (seed, epoch).

        Raises:
            FloatingPointError: the loss or the features became NaN or inf; the
                message names the epoch (and step); the last checkpoint stays.
        """
        with self.distribution.scope():
            return self._fit(run, callbacks, resume)

    def _fit(self, run, callbacks, resume):
        recorder = RunRecorder(run, self.reclustering)
        checkpoint = resume.read_checkpoint() if resume is not None else None
        initial_epoch = 0
        if checkpoint is not None:
            self.model = keras.saving.load_model(resume.path / checkpoint["model"])
            initial_epoch = checkpoint["epoch"] + 1
            recorder.rows = resume.read_history()[:initial_epoch]
            self.reclustering.restore(checkpoint, resume.read_pseudo_labels(checkpoint["epoch"]))
        # Wall time over every process that worked on the run, not just this one.
        recorder.wall_before = checkpoint.get("wall_seconds", 0.0) if checkpoint else 0.0
        history = self.model.fit(
            self.dataset,
            epochs=self.recipe.epochs,
            initial_epoch=initial_epoch,
            verbose=0,
            callbacks=[self.reclustering, StopOnNaN(), recorder, StopOnInterrupt(), *callbacks],
        )
        run.save_model(self.model)
        last = recorder.rows[-1]
        nmis = [row["nmi_labels"] for row in recorder.rows if "nmi_labels" in row]
        run.write_json(
            RunDirectory.SUMMARY,
            {
                "recipe": self.recipe.name,
                "backend": keras.backend.backend(),
                "epochs": self.recipe.epochs,
                "images": self.dataset.num_images,
                "devices": self.devices,
                "processes": kdc.processes.process_count(),
                "deterministic": kdc.determinism.enabled(),
                "wall_seconds": recorder.wall_seconds(),
                "final": last,
                "best_nmi_labels": max(nmis) if nmis else None,
                "clustering_stopped": None
                if self.reclustering.halted_at is None
                else {
                    "epoch": self.reclustering.halted_at,
                    "reason": self.reclustering.halt_reason,
                },
                "versions": {"keras": keras.__version__, "python": platform.python_version()},
                "resumed_at_epoch": initial_epoch or None,
            },
        )
        run.remove_checkpoint()
        return history


class StopOnInterrupt(keras.callbacks.Callback):
    """Re-raises a Ctrl-C / SIGTERM that native code swallowed, at the next boundary.

    Goes after the `RunRecorder`, so an epoch that finished is checkpointed first.
    Safe for Keras's asynchronous batch callbacks (see `StopOnNaN`).
    """

    async_safe = True

    def on_train_batch_end(self, batch, logs=None):
        if interrupt_requested():
            raise KeyboardInterrupt

    on_epoch_begin = on_epoch_end = on_train_batch_end


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
                "network diverged (lower --lr). Epochs before it are kept in the run directory."
            )


def train_unless_finished(
    recipe: Recipe,
    data: kdc.data.ImageData,
    run: RunDirectory,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    on_progress: Callable[[str, int, int], None] | None = None,
    devices: int = 1,
) -> bool:
    """Brings `run` to a finished run of `recipe`; what `sweep` and `select` do per run.

    A finished run of exactly these settings is kept; an unfinished one is
    resumed after its last checkpoint; anything else in `run` (refused
    earlier by `RunDirectory.check_replaceable` unless --overwrite) is replaced.
    Returns whether it trained.
    """
    config = recipe.to_toml()
    run.lock()
    if run.holds(config):
        return False
    pretraining = Pretraining.build(recipe, data, on_progress=on_progress, devices=devices)
    resume = run.is_run and run.read_config() == config
    if not resume:
        run.create(config, overwrite=True)
    pretraining.fit(run, callbacks=callbacks, resume=run if resume else None)
    return True


class RunRecorder(keras.callbacks.Callback):
    """Writes each finished epoch's row, pseudo-labels and checkpoint into the run directory.

    Goes after `Reclustering` in the callback list, so it sees the epoch's
    metrics and times the training part of the epoch alone.
    """

    def __init__(self, run: RunDirectory, reclustering: kdc.Reclustering):
        super().__init__()
        self.run = run
        self.reclustering = reclustering
        self.rows: list[dict] = []
        self.wall_before = 0.0  # wall seconds of the run before this process resumed it
        self._created = time.perf_counter()

    def wall_seconds(self) -> float:
        """Wall time of the run so far, across resumes."""
        return self.wall_before + time.perf_counter() - self._created

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        logs["seconds_train"] = time.perf_counter() - self._start
        logs["seconds_epoch"] = logs["seconds_train"] + sum(
            logs.get(key, 0.0) for key in ("seconds_features", "seconds_pca", "seconds_kmeans")
        )
        row = {"epoch": epoch, **{k: float(v) for k, v in logs.items()}}
        if self.reclustering.halted_at == epoch:  # the first epoch on frozen labels
            row["halt_reason"] = self.reclustering.halt_reason
        self.rows.append(row)
        self.run.write_pseudo_labels(epoch, self.reclustering.pseudo_labels)
        self.run.write_history(self.rows)
        self.run.save_checkpoint(
            self.model, epoch, {**self.reclustering.state(), "wall_seconds": self.wall_seconds()}
        )


def probe(
    recipe: Recipe,
    data: kdc.data.ImageData,
    run: RunDirectory,
    layer: str | None = None,
    epochs: int | None = None,
    random: bool = False,
) -> dict:
    """Linear probe of a run's backbone (or, with `random`, of its untrained twin).

    Trains on the training images the run used, with their true labels, and
    reports accuracy on the test split; data without a test split hold out a
    seeded `PROBE_HOLDOUT` of the training images instead.
    """
    layer = layer or recipe.probe_layer
    if layer is None:
        raise RecipeError(f"{recipe.origin}: no [probe] layer; pass --layer.")
    if data.y_train is None:
        raise ValueError(f"{data.name} has no labels; the linear probe needs labelled images.")
    views = image_views(recipe)
    if random:
        backbone = build_backbone(recipe, (views.size, views.size, data.x_train.shape[-1]))
    else:
        if not (run.path / RunDirectory.MODEL).is_file():
            raise ValueError(
                f"{run.path} holds no trained model ({RunDirectory.MODEL}); "
                "the run did not finish. Probe it with --random, or train it again."
            )
        backbone = keras.saving.load_model(run.path / RunDirectory.MODEL).backbone
    train_split, test_split, test_name = _probe_splits(data, recipe.seed)
    start = time.perf_counter()
    result = kdc.evaluation.linear_probe(
        backbone,
        layer,
        train_split,
        test_split,
        views,
        epochs=epochs or recipe.probe_epochs,
        flip=recipe.probe_flip,
        seed=recipe.seed,
    )
    report = {
        "model": "random" if random else "trained",
        "layer": result.layer,
        "feature_dim": result.feature_dim,
        "accuracy": result.accuracy,
        "best_accuracy": result.best_accuracy,
        "epoch_accuracies": result.epoch_accuracies,
        "train_images": len(train_split[0]),
        "test_images": len(test_split[0]),
        "test_split": test_name,
        "backend": keras.backend.backend(),
        "seconds": time.perf_counter() - start,
    }
    run.write_json("probe_random.json" if random else "probe.json", report)
    return report


def _probe_splits(data, seed):
    if data.x_test is not None and data.y_test is not None:
        return (data.x_train, data.y_train), (data.x_test, data.y_test), "test"
    order = np.random.default_rng(seed).permutation(len(data.x_train))
    held = order[: int(round(PROBE_HOLDOUT * len(order)))]
    kept = np.sort(order[len(held) :])
    held = np.sort(held)
    return (
        (take_rows(data.x_train, kept), data.y_train[kept]),
        (take_rows(data.x_train, held), data.y_train[held]),
        f"{PROBE_HOLDOUT:.0%} of train held out",
    )
