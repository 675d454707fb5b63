"""From a recipe to a finished run directory: `train`, and the linear probe of a run.

`train(recipe, out)` loads the recipe's data, builds and compiles the model
(`Pretraining`), and fits it with `RunRecorder`, `ClusteringDiagnostics`,
`StopOnNaN` and `StopOnInterrupt`, so the run directory is written after every
epoch and a killed run continues with ``resume=True`` to the same result. Every front
end (the CLI, `sweep`, `select`, the benchmarks) trains through here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import numpy as np

from keras_deepcluster import backbones, evaluation
from keras_deepcluster.data.disk_images import take_rows
from keras_deepcluster.data.image_cache import ImageCache
from keras_deepcluster.data.image_data import ImageData
from keras_deepcluster.method.cluster_model import ClusterModel
from keras_deepcluster.method.features import FeatureExtractor, layer_model
from keras_deepcluster.method.model import DeepCluster
from keras_deepcluster.method.pseudo_label_dataset import PseudoLabelDataset, epoch_length
from keras_deepcluster.method.reclustering import Reclustering
from keras_deepcluster.method.views import ImageViews
from keras_deepcluster.platform import directory_lock, processes
from keras_deepcluster.platform.determinism import enable_determinism, set_random_seed
from keras_deepcluster.platform.devices import data_parallel
from keras_deepcluster.platform.layer_acceleration import accelerate
from keras_deepcluster.runs import check_labels
from keras_deepcluster.runs.callbacks import (
    RunRecorder,
    StopOnInterrupt,
    StopOnNaN,
    describe_effect,
    training_effect,
)
from keras_deepcluster.runs.check_labels import CheckLabels, CheckLabelsError
from keras_deepcluster.runs.diagnostics import METRICS_FILE, ClusteringDiagnostics, check_log_dir
from keras_deepcluster.runs.recipe import Recipe, RecipeError, load_recipe
from keras_deepcluster.runs.recipe_data import image_views, load_data
from keras_deepcluster.runs.resume import recipe_to_resume
from keras_deepcluster.runs.run_directory import RunDirectory
from keras_deepcluster.runs.trained_run import Run

# Images per device in each feature-extraction batch.
FEATURE_BATCH_SIZE = 256
# Images held out for the probe's test split when the data has none.
PROBE_HOLDOUT = 0.2
# The weighted kNN protocol of solo-learn and lightly: neighbours and temperature.
KNN_K, KNN_TEMPERATURE = (20, 200), 0.07

ProgressCallback = Callable[[str, int, int], None]


def check_channels(recipe: Recipe, views: ImageViews, channels: int) -> None:
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
    """The untrained backbone, accelerated; its weights depend on the recipe's seed only."""
    kwargs = {"input_shape": input_shape, "batch_norm": recipe.batch_norm, "seed": recipe.seed}
    if recipe.sobel is not None:
        kwargs["sobel"] = recipe.sobel
    return accelerate(backbones.get(recipe.backbone, **kwargs))


def steps_per_execution(recipe: Recipe, devices: int) -> int:
    """The recipe's training steps per compiled call, where Keras's `fit` can do several.

    Several steps per call let TensorFlow run them in one graph loop (faster
    epochs on a CPU, benchmarks/steps_per_execution.py) and call the batch callbacks
    once per call on every backend. Keras runs one on PyTorch, and one under
    TensorFlow's MirroredStrategy (its multi-step loop fails there).
    """
    backend = keras.backend.backend()
    if backend == "torch" or (backend == "tensorflow" and devices > 1):
        return 1
    return recipe.steps_per_execution


def check_devices(devices: int, recipes: Sequence[Recipe]) -> None:
    """Raises ValueError unless every recipe can train on `devices` devices.

    Called before anything is written, so a bad `devices` leaves no trace.
    """
    data_parallel(devices)
    for recipe in recipes:
        if recipe.batch_size % devices:
            raise ValueError(
                f"`devices={devices}`: the batch size {recipe.batch_size} of recipe "
                f"{recipe.name!r} does not split evenly over {devices} devices; use a "
                f"`batch_size` that is a multiple of {devices}, or other `devices`."
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
        distribution: The `data_parallel` the model lives in.
        check: The check labels that score the run and choose its best epoch, or None.
    """

    recipe: Recipe
    model: DeepCluster
    dataset: PseudoLabelDataset
    reclustering: Reclustering
    devices: int
    distribution: object
    check: CheckLabels | None = None

    @classmethod
    def build(
        cls,
        recipe: Recipe,
        data: ImageData,
        on_progress: ProgressCallback | None = None,
        devices: int = 1,
        check: CheckLabels | None = None,
    ) -> Pretraining:
        """Builds and checks everything, so bad settings fail before anything is written.

        With `devices` > 1 the model is built for data-parallel training over
        that many devices (`data_parallel`). `check` (from
        `read_check_labels`) stands in for the labels of unlabelled data.
        """
        distribution = data_parallel(devices)
        with distribution.scope():
            return cls._build(recipe, data, on_progress, devices, distribution, check)

    @classmethod
    def _build(cls, recipe, data, on_progress, devices, distribution, check):
        views = image_views(recipe)
        images = data.x_train
        check_channels(recipe, views, images.shape[-1])
        if recipe.tensorboard is not None:
            check_log_dir(recipe.tensorboard)
        if recipe.deterministic:
            enable_determinism()
        set_random_seed(recipe.seed)
        dataset = PseudoLabelDataset(
            images,
            views,
            batch_size=recipe.batch_size,
            seed=recipe.seed,
            epoch_length=epoch_length(
                len(images), recipe.batch_size, recipe.epoch_multiplier, recipe.min_steps
            ),
        )
        model = DeepCluster(
            build_backbone(recipe, (views.size, views.size, images.shape[-1])),
            recipe.clusters,
            weight_decay=recipe.weight_decay,
        )
        model.compile(
            optimizer=keras.optimizers.SGD(recipe.lr, momentum=recipe.momentum),
            steps_per_execution=steps_per_execution(recipe, devices),
        )
        reclustering = Reclustering(
            dataset,
            labels=data.y_train if check is None else check.labels,
            pca_dim=recipe.pca,
            kmeans_backend=recipe.kmeans,
            kmeans_iterations=recipe.kmeans_iterations,
            halt_after=recipe.halt_after,
            halt_when_stable=recipe.halt_when_stable,
            halt_patience=recipe.halt_patience,
            seed=recipe.seed,
            # The same number of images per device, whatever the device count (with several
            # processes each extracts its own images on one device).
            feature_batch_size=FEATURE_BATCH_SIZE * devices // processes.process_count(),
            on_progress=on_progress,
        )
        reclustering.check(model)
        return cls(recipe, model, dataset, reclustering, devices, distribution, check)

    def fit(
        self,
        run: RunDirectory,
        callbacks: Sequence[keras.callbacks.Callback] = (),
        resume_from: RunDirectory | None = None,
        verbose: int = 0,
    ) -> keras.callbacks.History:
        """Trains, recording every epoch into `run` (see `RunRecorder`).

        Each epoch's clustering diagnostics go to ``metrics.jsonl`` in `run`
        and, with the recipe's ``tensorboard`` folder, to TensorBoard event
        files in its sub-folder named after `run` (see `ClusteringDiagnostics`;
        the event files by process 0 alone). A run directory that holds a
        checkpoint of these settings is continued after it, to the same
        pseudo-labels and metrics as an uninterrupted run on the same backend
        and machine; `resume_from` reads the checkpoint from another directory
        (see `RunRecorder`). `verbose` is `keras.Model.fit`'s (0 silent, 1 a
        progress bar per epoch, 2 a line per epoch).

        Raises:
            FloatingPointError: the loss or the features became NaN or inf; the
                message names the epoch (and step); the last checkpoint stays.
        """
        summary = {"recipe": self.recipe.name, "devices": self.devices}
        if self.check is not None:
            summary["check_labels"] = self.check.describe()
        recorder = RunRecorder(
            run,
            self.reclustering,
            config=self.recipe,
            summary=summary,
            resume_from=resume_from,
            keep_best=self.check is not None,
        )
        tensorboard = self.recipe.tensorboard
        diagnostics = ClusteringDiagnostics(
            self.reclustering,
            log_dir=None
            if tensorboard is None or processes.process_index() != 0
            else Path(tensorboard) / run.path.resolve().name,
            metrics_file=run.path / METRICS_FILE,
        )
        # The diagnostics before the recorder: an epoch is recorded in them before it is
        # checkpointed, so a resumed run finds every epoch before the one it restarts at.
        fit_callbacks = [self.reclustering, StopOnNaN(), diagnostics, recorder, StopOnInterrupt()]
        with self.distribution.scope():
            return self.model.fit(
                self.dataset,
                epochs=self.recipe.epochs,
                verbose=verbose,
                callbacks=[*fit_callbacks, *callbacks],
            )


def train(
    recipe: Recipe | str | Path | None,
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    devices: int = 1,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    on_progress: ProgressCallback | None = None,
    on_note: Callable[[str], None] | None = None,
    verbose: int = 0,
) -> RunDirectory:
    """Trains `recipe` into the run directory `out`; returns the finished run.

    Args:
        recipe: A `Recipe`, a bundled recipe's name or a TOML file; None with
            `resume` takes the run's own ``config.toml``.
        out: The run directory (created; see `RunDirectory` for its files).
        resume: Continue the unfinished run in `out` after its last
            checkpoint (from the start if no epoch finished); its settings
            must be `recipe`'s.
        overwrite: Replace a run that `out` holds.
        devices: Train data-parallel on this many devices.
        callbacks: More Keras callbacks for the `fit`.
        on_progress: Called as ``on_progress(phase, done, total)``: the
            re-clustering's phases (see `Reclustering`), and ``"cache"``
            while an image cache is built.
        on_note: Called with one-line notes (a rebuilt cache, ...); with
            `verbose` and no `on_note`, they are printed.
        verbose: As `keras.Model.fit`'s: 0 silent, 1 a progress bar per epoch,
            2 a line per epoch (what a notebook user watches).

    Raises:
        RunDirectoryError: `out` holds something that this call may not
            replace (the message says what can be done).
        RecipeError, ValueError: bad settings or data, before anything is written.
        FloatingPointError: the training diverged; the epochs before it stay.

    Examples:
        >>> run = kdc.train("digits", out="runs/digits")
        >>> run.summary["final"]["nmi_labels"]
        >>> run = kdc.train(None, out="runs/digits", resume=True)  # after a crash
    """
    run = RunDirectory(Path(out).expanduser())
    recipe = _recipe_to_run(recipe, run, resume)
    writer = _writer(run)  # `run` itself, except on processes > 0 of a multi-process job
    held_before = directory_lock.is_held(writer.path)
    try:
        if not resume and writer is run:
            run.check_writable(overwrite)
        writer.lock()  # before anything is loaded or written: another process may be in it
        check_devices(devices, [recipe])
        if on_note is None and verbose:
            on_note = print
        note = on_note or (lambda line: None)
        cache_progress = (
            None if on_progress is None else lambda done, total: on_progress("cache", done, total)
        )
        data = load_data(recipe, on_progress=cache_progress, on_note=on_note)
        labelled = "" if data.y_train is not None else ", unlabelled"
        n = len(data.x_train)
        note(f"data: {n} training image{'s' if n != 1 else ''} {data.x_train.shape[1:]}{labelled}")
        check = read_check_labels(recipe, data)
        if check is not None:
            note(check.describe())
        pretraining = Pretraining.build(
            recipe, data, on_progress=on_progress, devices=devices, check=check
        )
        if not resume or writer is not run:
            writer.create(recipe.to_toml(), overwrite=overwrite or writer is not run)
            writer.write_json(RunDirectory.DATA, data.origin or {"source": recipe.source})
        if resume:
            checkpoint = run.read_checkpoint()
            note(
                f"resuming after epoch {checkpoint['epoch']}"
                if checkpoint
                else "resuming from the start (no epoch had finished)"
            )
        try:
            pretraining.fit(
                writer,
                callbacks=callbacks,
                resume_from=run if resume and writer is not run else None,
                verbose=verbose,
            )
        finally:
            if writer is not run:
                shutil.rmtree(writer.path, ignore_errors=True)
        if writer is run and processes.process_count() == 1:
            _score_test_split(run, data, recipe)
            for line in describe_effect(run.summary) if verbose else ():
                note(line)
    finally:  # the lock ends with the call: a notebook's `deepcluster show` may open the run next
        if not held_before:
            directory_lock.unlock_folder(writer.path)
    return run


def read_check_labels(recipe: Recipe, data: ImageData) -> CheckLabels | None:
    """The recipe's check labels for `data`'s training images, or None without any.

    Raises:
        CheckLabelsError: a file that cannot be used, or data that has labels of
            its own (a labelled run scores against those).
    """
    if recipe.check_labels is None:
        return None
    if data.y_train is not None:
        raise CheckLabelsError(
            f"{recipe.check_labels}: check labels are for unlabelled images, but "
            f"{data.name} has a label for every training image and the run scores against "
            "those; drop the check labels."
        )
    cache = (data.origin or {}).get("cache")
    files = ImageCache(cache).files("train") if cache else None
    return check_labels.read_check_labels(recipe.check_labels, len(data.x_train), files)


def _score_test_split(run: RunDirectory, data: ImageData, recipe: Recipe) -> None:
    """Adds the scores of the test split, assigned to the final clusters, to the summary.

    As SCAN reports them: the test images never trained the network or the
    clustering. The same for the untrained network, and the change.
    """
    if data.x_test is None or data.y_test is None:
        return
    clusters, _ = Run.open(run.path).assign(data.x_test, batch_size=FEATURE_BATCH_SIZE)
    summary = run.summary
    summary["final_clustering"]["test"] = evaluation.cluster_scores(clusters, data.y_test)
    # The untrained network's: its first clustering's centroids, the test images assigned.
    views = image_views(recipe)
    backbone = build_backbone(recipe, (views.size, views.size, data.x_train.shape[-1]))
    extractor = FeatureExtractor(backbone, views)
    untrained = ClusterModel.from_labels(
        extractor(data.x_train, FEATURE_BATCH_SIZE),
        run.read_pseudo_labels(0),
        recipe.clusters,
        recipe.pca,
    )
    clusters, _ = untrained.assign(extractor(data.x_test, FEATURE_BATCH_SIZE))
    summary["untrained_clustering"]["test"] = evaluation.cluster_scores(clusters, data.y_test)
    summary["training_effect"]["test"] = training_effect(summary, "test")
    run.write_json(RunDirectory.SUMMARY, summary)


def _recipe_to_run(recipe, run: RunDirectory, resume: bool) -> Recipe:
    """The recipe `train` runs: `recipe`, or with `resume` the run's own (which must agree)."""
    if isinstance(recipe, (str, Path)):
        recipe = load_recipe(recipe)
    if resume:
        return recipe_to_resume(run, recipe)
    if recipe is None:
        raise ValueError("train needs a recipe (a Recipe, a recipe name or a .toml file).")
    return recipe


def _writer(run: RunDirectory) -> RunDirectory:
    """Where this process writes: `run` on process 0 (and alone), else a scratch folder.

    Saving a model is a collective (every process of a job takes part), so the
    other processes write the same files into a scratch folder, named by the
    run and the process so that a relaunched process replaces what its killed
    predecessor left, and read the run only to resume.
    """
    index = processes.process_index()
    if index == 0:
        return run
    digest = hashlib.sha256(str(run.path.resolve()).encode()).hexdigest()[:12]
    scratch = Path(tempfile.gettempdir()) / f"deepcluster-process-{index}-{digest}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    return RunDirectory(scratch)


def train_unless_finished(
    recipe: Recipe,
    data: ImageData,
    run: RunDirectory,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    on_progress: ProgressCallback | None = None,
    devices: int = 1,
) -> bool:
    """Brings `run` to a finished run of `recipe`; what `sweep` and `select` do per run.

    A finished run of exactly these settings is kept; an unfinished one is
    resumed after its last checkpoint; anything else in `run` (refused
    earlier by `RunDirectory.check_replaceable` unless overwriting) is replaced.
    Returns whether it trained.
    """
    config = recipe.to_toml()
    run.lock()
    if run.holds(config):
        return False
    pretraining = Pretraining.build(recipe, data, on_progress=on_progress, devices=devices)
    if not (run.is_run and run.read_config() == config):
        run.create(config, overwrite=True)
    pretraining.fit(run, callbacks=callbacks)  # resumes after a checkpoint of these settings
    return True


def probe(
    recipe: Recipe,
    data: ImageData,
    run: RunDirectory,
    layer: str | None = None,
    epochs: int | None = None,
    random: bool = False,
) -> dict:
    """Linear probe of a run's backbone (or, with `random`, of its untrained twin).

    Trains on the training images the run used, with their true labels, and
    reports accuracy on the test split; data without a test split hold out a
    seeded `PROBE_HOLDOUT` of the training images instead. Writes
    ``probe.json`` (``probe_random.json``).
    """
    layer, backbone, views = _probe_setup(recipe, data, run, layer, random, "linear probe")
    train_split, test_split, test_name = _probe_splits(data, recipe.seed)
    start = time.perf_counter()
    result = evaluation.linear_probe(
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
        **_probe_facts(train_split[0], test_split[0], test_name, start),
    }
    run.write_json("probe_random.json" if random else "probe.json", report)
    return report


def knn_probe(
    recipe: Recipe,
    data: ImageData,
    run: RunDirectory,
    layer: str | None = None,
    k: Sequence[int] = KNN_K,
    temperature: float = KNN_TEMPERATURE,
    random: bool = False,
) -> dict:
    """Weighted kNN classifier on a frozen layer (`evaluation.weighted_knn`), like `probe`.

    The same layer and the same train and test splits as the linear probe;
    the features of the fixed view, flattened. Writes ``knn.json``
    (``knn_random.json``).
    """
    layer, backbone, views = _probe_setup(recipe, data, run, layer, random, "kNN probe")
    (x_train, y_train), (x_test, y_test), test_name = _probe_splits(data, recipe.seed)
    start = time.perf_counter()
    network = layer_model(backbone, layer)
    extractor = FeatureExtractor(network, views)
    accuracies = evaluation.weighted_knn(
        extractor(x_train, FEATURE_BATCH_SIZE),
        y_train,
        extractor(x_test, FEATURE_BATCH_SIZE),
        y_test,
        k=k,
        temperature=temperature,
    )
    report = {
        "model": "random" if random else "trained",
        "layer": layer,
        "feature_dim": extractor.dim,
        "accuracy": {str(key): value for key, value in accuracies.items()},
        "temperature": temperature,
        **_probe_facts(x_train, x_test, test_name, start),
    }
    run.write_json("knn_random.json" if random else "knn.json", report)
    return report


def _probe_facts(train_images, test_images, test_name: str, start: float) -> dict:
    """What every probe report says about its splits, backend and time."""
    return {
        "train_images": len(train_images),
        "test_images": len(test_images),
        "test_split": test_name,
        "backend": keras.backend.backend(),
        "seconds": time.perf_counter() - start,
    }


def _probe_setup(recipe, data, run, layer, random, what):
    """The layer, backbone and views a probe of `run` (or its untrained twin) reads."""
    layer = layer or recipe.probe_layer
    if layer is None:
        raise RecipeError(f"{recipe.origin}: no [probe] layer; pass `layer`.")
    if data.y_train is None:
        where = (data.origin or {}).get("path") or data.name
        raise ValueError(
            f"The images of {where} have no labels; the {what} needs labelled images (one "
            "sub-folder per class, `labels` 'inferred', or a labelled source)."
        )
    views = image_views(recipe)
    if random:
        return (
            layer,
            build_backbone(recipe, (views.size, views.size, data.x_train.shape[-1])),
            views,
        )
    if not (run.path / RunDirectory.MODEL).is_file():
        raise ValueError(
            f"{run.path} holds no trained model ({RunDirectory.MODEL}); "
            "the run did not finish. Probe its untrained network with `random=True`, or "
            "train it again."
        )
    return layer, accelerate(run.load_model()).backbone, views


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
