"""From a recipe to the checked objects of a run: `Pretraining` (model, sampler, callback).

`Pretraining.build` makes and checks everything before anything is written, and
`Pretraining.fit` trains with the callbacks of a recorded run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import keras

from keras_deepcluster import backbones
from keras_deepcluster.data.image_data import ImageData
from keras_deepcluster.method.model import DeepCluster
from keras_deepcluster.method.pseudo_label_dataset import PseudoLabelDataset, epoch_length
from keras_deepcluster.method.reclustering import Reclustering
from keras_deepcluster.platform import processes
from keras_deepcluster.platform.determinism import enable_determinism, set_random_seed
from keras_deepcluster.platform.devices import data_parallel
from keras_deepcluster.platform.layer_acceleration import accelerate
from keras_deepcluster.runs.callbacks import RunRecorder, StopOnInterrupt, StopOnNaN
from keras_deepcluster.runs.check_labels import CheckLabels
from keras_deepcluster.runs.diagnostics import METRICS_FILE, ClusteringDiagnostics, check_log_dir
from keras_deepcluster.runs.recipe import Recipe
from keras_deepcluster.runs.recipe_data import check_channels, image_views
from keras_deepcluster.runs.run_directory import RunDirectory
from keras_deepcluster.settings import FEATURE_BATCH_SIZE, RECIPE_KEYS

ProgressCallback = Callable[[str, int, int], None]


def recipe_settings(recipe: Recipe, *keywords: str) -> dict:
    """The recipe's values of the library keywords `keywords` (``pca_dim`` is its ``pca``).

    Examples:
        >>> recipe_settings(load_recipe("svhn"), "pca_dim", "num_clusters")
        {'pca_dim': 256, 'num_clusters': 200}
    """
    return {keyword: getattr(recipe, RECIPE_KEYS.get(keyword, keyword)) for keyword in keywords}


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
            **recipe_settings(
                recipe,
                "pca_dim",
                "kmeans_backend",
                "kmeans_iterations",
                "halt_after",
                "halt_when_stable",
                "halt_patience",
                "seed",
            ),
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
