"""`Run`: a finished run, loaded to be used: its network, data and clusters.

Examples:
    >>> run = kdc.Run.open("runs/digits-tensorflow-k10-seed61")
    >>> labels, distances = run.assign(new_images)  # the run's clusters for new images
    >>> features = run.embed(new_images, layer="conv_2")
    >>> run.export_model("clusterer.keras")  # image -> cluster, loads without this package
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tomllib

from keras_deepcluster import data as data_sources
from keras_deepcluster.method.cluster_model import ClusterModel
from keras_deepcluster.method.features import FeatureExtractor, layer_model
from keras_deepcluster.runs import deployment
from keras_deepcluster.runs.recipe import Recipe, RecipeError, load_recipe
from keras_deepcluster.runs.recipe_data import recorded_data
from keras_deepcluster.runs.run_directory import RunDirectory, RunDirectoryError

# The `layer` of `Run.embed` that means the backbone's output, the features the run clustered.
OUTPUT = "output"


class Run:
    """A finished run: its recipe, trained model, final clustering and training data.

    Open one with `Run.open`. `embed` and `assign` run the trained network on
    the fixed view of any images (batched and compiled, as the feature
    extraction of training is); `assign` places them in the final clustering
    (the nearest centroid, as ``clustering.npz`` keeps it).

    Attributes:
        directory: The `RunDirectory`.
        recipe: Its settings (None for a run recorded from a `fit` without a recipe).
        model: The trained `DeepCluster`.
        cluster_model: The final `ClusterModel`.
    """

    def __init__(self, directory: RunDirectory, recipe: Recipe | None, model, cluster_model):
        self.directory = directory
        self.recipe = recipe
        self.model = model
        self.cluster_model = cluster_model
        self._extractors: dict[str | None, FeatureExtractor] = {}  # compiled once per layer
        # The shape of the images it trained on, where an image cache recorded it.
        recorded = directory.path / RunDirectory.DATA
        shape = (
            directory.read_json(RunDirectory.DATA).get("image_shape")
            if recorded.is_file()
            else None
        )
        self._trained_shape = tuple(shape) if shape else None

    @classmethod
    def open(cls, path: str | Path) -> Run:
        """Loads the finished run in `path`.

        Raises:
            RunDirectoryError: no finished run there, or its files are damaged.
        """
        directory = RunDirectory(Path(path).expanduser())
        if not directory.is_run:
            raise RunDirectoryError(f"{directory.path} holds no run ({RunDirectory.CONFIG}).")
        if not directory.is_finished:
            raise RunDirectoryError(
                f"{directory.path} holds a run that has not finished (no "
                f"{RunDirectory.SUMMARY}); continue it with `resume=True` first."
            )
        if not (directory.path / RunDirectory.CLUSTERING).is_file():
            raise RunDirectoryError(
                f"{directory.path} has no final clustering ({RunDirectory.CLUSTERING}): the run "
                "was trained by an earlier version, or with several processes; train it again."
            )
        try:
            recipe = load_recipe(directory.path / RunDirectory.CONFIG)
        except RecipeError as error:
            recipe = None  # recorded from a fit without a recipe, if not damaged
            with directory.reading(RunDirectory.CONFIG):
                if "fit" not in tomllib.loads(directory.read_config()):
                    raise ValueError(str(error).split(": ", 1)[-1]) from None
        model = directory.load_model()
        with directory.reading(RunDirectory.CLUSTERING):
            cluster_model = ClusterModel.load(directory.path / RunDirectory.CLUSTERING)
        return cls(directory, recipe, model, cluster_model)

    @property
    def backbone(self) -> keras.Model:
        return self.model.backbone

    @property
    def num_clusters(self) -> int:
        return self.cluster_model.num_clusters

    @property
    def embedding_layer(self) -> str:
        """The layer `embed` reads by default: the recipe's probe layer, else ``"output"``.

        The probe layer (``conv_2`` for LeNet, ``relu_5`` for AlexNet-micro) is where the
        recipes' linear probe and kNN score the features; the backbone's output, which the run
        clustered, is made to separate the pseudo-labels and is a weaker embedding.
        """
        probe_layer = None if self.recipe is None else self.recipe.probe_layer
        return probe_layer or OUTPUT

    def embed(
        self, images: np.ndarray, layer: str | None = None, batch_size: int = 256
    ) -> np.ndarray:
        """Features (N, D) of `images` (uint8 or float in [0, 1], NHW[C]) on the fixed view.

        Args:
            images: The images.
            layer: A backbone layer's name, or ``"output"``: the backbone's output, the
                features the run clustered (default: `embedding_layer`).
            batch_size: Images per forward pass.

        Raises:
            ValueError: images with NaN or inf, of another channel count, or
                less than half the side of the images the run trained on.
        """
        _check_finite(images)
        self._check_size(images)
        layer = layer or self.embedding_layer
        if layer not in self._extractors:
            network = self.backbone if layer == OUTPUT else layer_model(self.backbone, layer)
            self._extractors[layer] = FeatureExtractor(network, self.model.views)
        return self._extractors[layer](images, batch_size)

    def _check_size(self, images) -> None:
        """Refuses images far smaller than those the run trained on (their cache's side)."""
        if np.ndim(images) >= 3:
            self._check_side(min(np.shape(images)[1:3]))

    def _check_side(self, side: int) -> None:
        trained = min(self._trained_shape[:2]) if self._trained_shape else 0
        if 2 * side < trained:
            raise ValueError(
                f"The images are {side} pixels on their shorter side; the run trained on "
                f"{trained}-pixel images, and one upscaled more than twice tells the network "
                f"little. Give images of at least {(trained + 1) // 2} pixels."
            )

    def assign(self, images: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """The run's cluster of each image and the distance to its centroid.

        Returns:
            ``(clusters, distances)``: int64 (N,) in ``0..k-1`` and float32 (N,).
        """
        return self.cluster_model.assign(self.embed(images, OUTPUT, batch_size))

    @property
    def image_shape(self) -> tuple[int, int, int] | None:
        """``(height, width, channels)`` of the images the run trained on; None if unknown.

        The image cache's shape recorded in ``data.json``; for sources read
        into memory (``digits``), that of the data; None for a run recorded
        from a `fit` without a recipe.
        """
        if self._trained_shape is None and self.recipe is not None:
            self._trained_shape = tuple(self.data().x_train.shape[1:])
        return self._trained_shape

    def to_model(
        self, image_shape: tuple[int, ...] | None = None, dtype: str = "uint8"
    ) -> keras.Model:
        """The run as one Keras model from images to clusters (`deployment.deployable_model`).

        Built-in Keras layers only (the fixed view, the backbone, the
        PCA-whitening, L2 normalisation, the centroids), so its ``.keras``
        file loads without this package. Its outputs are a dict:
        ``cluster`` and ``distance``, what `assign` gives, and ``embedding``,
        the images' points in the clustering's space
        (``cluster_model.transform(embed(images))``).

        Args:
            image_shape: ``(height, width[, channels])`` of the images it
                will take; default: those the run trained on.
            dtype: ``"uint8"`` (images in [0, 255]) or ``"float32"`` (in [0, 1]).

        Raises:
            ValueError: the image shape is unknown (a run recorded from a
                `fit`: give it), of other channels, or far smaller than
                the training images; a bad dtype.
        """
        shape = tuple(image_shape) if image_shape is not None else self.image_shape
        if shape is None:
            raise ValueError(
                f"{self.directory.path} does not record the size of its images; give "
                "`image_shape=(height, width, channels)`."
            )
        if len(shape) == 2:
            shape += (self.model.views.channels,)
        if len(shape) != 3 or shape[2] != self.model.views.channels:
            raise ValueError(
                f"image_shape must be (height, width, {self.model.views.channels}) for this run "
                f"({self.model.views.channels}-channel views); got {shape}."
            )
        self._check_side(min(shape[:2]))
        return deployment.deployable_model(
            self.backbone, self.model.views, self.cluster_model, shape, dtype
        )

    def export_model(
        self,
        path: str | Path,
        format: str | None = None,
        image_shape: tuple[int, ...] | None = None,
        dtype: str = "uint8",
    ) -> Path:
        """Writes `to_model` to `path` as ``keras``, ``onnx``, ``litert`` or ``saved_model``.

        `format` defaults to the one `path`'s suffix names (``.keras``,
        ``.onnx``, ``.tflite``; none: a SavedModel folder). The file is
        written under a temporary name beside `path` and renamed when whole
        (`deployment.export_model`).

        Returns:
            The path written.

        Raises:
            deployment.ExportError: an unknown format, one the current backend
                cannot write (the message names those it can, and the backend
                that writes this one), a path inside the run's folder, or one
                `deployment.check_target` refuses; nothing is written then.
        """
        path = Path(path).expanduser()
        run_folder = self.directory.path.resolve()
        if path.resolve() == run_folder or run_folder in path.resolve().parents:
            raise deployment.ExportError(
                f"{path} is inside the run's folder {self.directory.path}, whose files the run "
                "owns; write the model elsewhere."
            )
        format = deployment.check_target(path, format)  # before the model is built
        return deployment.export_model(self.to_model(image_shape, dtype), path, format)

    def data(self, data_dir: str | Path | None = None) -> data_sources.ImageData:
        """The images the run trained on (and its test split, if any).

        The image cache recorded in ``data.json`` when it is still there and
        unchanged; otherwise the recipe's source (or `data_dir` instead of
        the recipe's), which must hold the same images.

        Raises:
            ValueError: the data moved or changed since training (the message
                says how to point at it).
        """
        if self.recipe is None:
            raise RunDirectoryError(
                f"{self.directory.path} was recorded from a fit without a recipe; it does not "
                "know its data. Pass the images to embed or assign."
            )
        return recorded_data(self.directory, self.recipe, data_dir)


def _check_finite(images) -> None:
    """Refuses float images holding NaN or inf, which would get a cluster at distance NaN."""
    array = images if isinstance(images, np.ndarray) else None
    if array is None or not np.issubdtype(array.dtype, np.floating):
        return  # uint8 (arrays or an image cache on disk) cannot hold them
    bad = ~np.isfinite(array.reshape(len(array), -1)).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValueError(
            f"{len(rows)} of {len(array)} images hold NaN or inf values (first: row {rows[0]}); "
            "give images in [0, 1] (float) or 0-255 (uint8), without missing values."
        )
