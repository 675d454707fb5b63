"""From a recipe to a finished run directory: `train`, and `train_unless_finished`.

`train(recipe, out)` loads the recipe's data, builds and compiles the model
(`Pretraining`), and fits it with `RunRecorder`, `ClusteringDiagnostics`,
`StopOnNaN` and `StopOnInterrupt`, so the run directory is written after every
epoch and a killed run continues with ``resume=True`` to the same result. Every front
end (the CLI, `sweep`, `select`, the benchmarks) trains through here.
"""

from __future__ import annotations

import hashlib
import importlib
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import keras

from keras_deepcluster import evaluation
from keras_deepcluster.data.image_data import ImageData
from keras_deepcluster.method.cluster_model import ClusterModel
from keras_deepcluster.method.features import FeatureExtractor
from keras_deepcluster.platform import directory_lock, processes
from keras_deepcluster.runs.build import (
    Pretraining,
    ProgressCallback,
    build_backbone,
    check_devices,
)
from keras_deepcluster.runs.callbacks import describe_effect, training_effect
from keras_deepcluster.runs.recipe import Recipe, load_recipe
from keras_deepcluster.runs.recipe_data import image_views, load_data, read_check_labels
from keras_deepcluster.runs.resume import recipe_to_resume
from keras_deepcluster.runs.run_directory import RunDirectory
from keras_deepcluster.runs.trained_run import Run
from keras_deepcluster.settings import FEATURE_BATCH_SIZE


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


# The names this module held before it was split, and the modules that hold them now
# (those it imports for its own use read as before).
_MOVED = {
    "steps_per_execution": "build",
    "check_channels": "recipe_data",
    **dict.fromkeys(("probe", "knn_probe", "PROBE_HOLDOUT", "KNN_K", "KNN_TEMPERATURE"), "probes"),
}


def __getattr__(name: str):
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    new = f"keras_deepcluster.runs.{_MOVED[name]}"
    warnings.warn(
        f"{__name__}.{name} is now {new}.{name}; import it from there (the old name will be "
        "removed in a future version).",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(new), name)
