"""The probes of a run's backbone: a linear classifier and weighted kNN on a frozen layer."""

from __future__ import annotations

import time
from collections.abc import Sequence

import keras
import numpy as np

from keras_deepcluster import evaluation
from keras_deepcluster.data.disk_images import take_rows
from keras_deepcluster.data.image_data import ImageData
from keras_deepcluster.method.features import FeatureExtractor, layer_model
from keras_deepcluster.runs.build import build_backbone
from keras_deepcluster.runs.recipe import Recipe, RecipeError
from keras_deepcluster.runs.recipe_data import image_views
from keras_deepcluster.runs.run_directory import RunDirectory
from keras_deepcluster.settings import FEATURE_BATCH_SIZE

# Images held out for the probe's test split when the data has none.
PROBE_HOLDOUT = 0.2
# The weighted kNN protocol of solo-learn and lightly: neighbours and temperature.
KNN_K, KNN_TEMPERATURE = (20, 200), 0.07


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
    return layer, run.load_model().backbone, views


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
