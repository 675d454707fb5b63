"""keras_deepcluster: DeepCluster unsupervised pretraining for Keras 3.

Runs unchanged on the TensorFlow, JAX and PyTorch backends (``KERAS_BACKEND``).

The names below are imported on first use, not with the package: the
recipes, run directories and locks do not need keras, so a front end can
read a recipe before it chooses the backend (which is fixed by the first
import of keras).
"""

import importlib
import os
from typing import TYPE_CHECKING

# TensorFlow turns its oneDNN kernels on by default only on CPUs with AVX-512
# VNNI/BF16, AVX-VNNI or AMX; on AVX2-only CPUs its own kernels made training
# 1.9x and extraction 2x slower (docs/performance.md). Applies when TensorFlow
# is imported after this; an explicit setting is kept.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    "DeepCluster": "model",
    "FeatureExtractor": "features",
    "FixedView": "views",
    "ImageViews": "views",
    "PseudoLabelDataset": "pseudo_label_dataset",
    "RandomView": "views",
    "Reclustering": "reclustering",
    "Recipe": "recipe",
    "RecipeError": "recipe",
    "Run": "trained_run",
    "ClusterModel": "cluster_model",
    "RunDirectory": "run_directory",
    "RunRecorder": "callbacks",
    "StopOnInterrupt": "callbacks",
    "StopOnNaN": "callbacks",
    "catch_interrupts": "interrupts",
    "cluster_features": "clustering",
    "data_parallel": "devices",
    "enable_determinism": "determinism",
    "extract_features": "features",
    "load_recipe": "recipe",
    "train": "pretraining",
}
_SUBMODULES = (
    "backbones",
    "callbacks",
    "clustering",
    "data",
    "determinism",
    "devices",
    "evaluation",
    "pretraining",
    "processes",
    "recipe",
)

__all__ = [
    "ClusterModel",
    "DeepCluster",
    "FeatureExtractor",
    "FixedView",
    "ImageViews",
    "PseudoLabelDataset",
    "RandomView",
    "Recipe",
    "RecipeError",
    "Reclustering",
    "Run",
    "RunDirectory",
    "RunRecorder",
    "StopOnInterrupt",
    "StopOnNaN",
    "backbones",
    "callbacks",
    "catch_interrupts",
    "cluster_features",
    "clustering",
    "data",
    "data_parallel",
    "determinism",
    "devices",
    "enable_determinism",
    "evaluation",
    "extract_features",
    "load_recipe",
    "pretraining",
    "processes",
    "recipe",
    "train",
]


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return __all__


if TYPE_CHECKING:
    from keras_deepcluster.callbacks import RunRecorder, StopOnInterrupt, StopOnNaN
    from keras_deepcluster.cluster_model import ClusterModel
    from keras_deepcluster.clustering import cluster_features
    from keras_deepcluster.determinism import enable_determinism
    from keras_deepcluster.devices import data_parallel
    from keras_deepcluster.features import FeatureExtractor, extract_features
    from keras_deepcluster.interrupts import catch_interrupts
    from keras_deepcluster.model import DeepCluster
    from keras_deepcluster.pretraining import train
    from keras_deepcluster.pseudo_label_dataset import PseudoLabelDataset
    from keras_deepcluster.recipe import Recipe, RecipeError, load_recipe
    from keras_deepcluster.reclustering import Reclustering
    from keras_deepcluster.run_directory import RunDirectory
    from keras_deepcluster.trained_run import Run
    from keras_deepcluster.views import FixedView, ImageViews, RandomView
