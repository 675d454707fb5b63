"""keras_deepcluster: DeepCluster unsupervised pretraining for Keras 3.

Runs unchanged on the TensorFlow, JAX and PyTorch backends (``KERAS_BACKEND``).
Importing it imports keras (and registers the package's Keras classes, so
`keras.saving.load_model` reads its ``.keras`` files); set the backend first.
"""

import os

# TensorFlow turns its oneDNN kernels on by default only on CPUs with AVX-512
# VNNI/BF16, AVX-VNNI or AMX; its own kernels elsewhere are much slower for
# these networks (measured in docs/performance.md). Applies when TensorFlow is
# imported after this; an explicit setting is kept.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from keras_deepcluster import (  # noqa: E402
    backbones,
    callbacks,
    clustering,
    data,
    determinism,
    devices,
    evaluation,
    pretraining,
    processes,
    recipe,
)
from keras_deepcluster.callbacks import RunRecorder, StopOnInterrupt, StopOnNaN  # noqa: E402
from keras_deepcluster.cluster_model import ClusterModel  # noqa: E402
from keras_deepcluster.clustering import cluster_features  # noqa: E402
from keras_deepcluster.determinism import enable_determinism, set_random_seed  # noqa: E402
from keras_deepcluster.devices import data_parallel  # noqa: E402
from keras_deepcluster.features import FeatureExtractor, extract_features  # noqa: E402
from keras_deepcluster.interrupts import catch_interrupts  # noqa: E402
from keras_deepcluster.model import DeepCluster  # noqa: E402
from keras_deepcluster.pretraining import train  # noqa: E402
from keras_deepcluster.pseudo_label_dataset import PseudoLabelDataset, epoch_length  # noqa: E402
from keras_deepcluster.recipe import Recipe, RecipeError, load_recipe  # noqa: E402
from keras_deepcluster.reclustering import (  # noqa: E402
    ClusteringWarning,
    Reclustering,
    ReclusteringSettings,
)
from keras_deepcluster.run_directory import DamagedFileError, RunDirectory  # noqa: E402
from keras_deepcluster.trained_run import Run  # noqa: E402
from keras_deepcluster.version import __version__  # noqa: E402, F401
from keras_deepcluster.views import FixedView, ImageViews, RandomView  # noqa: E402

__all__ = [
    "ClusterModel",
    "ClusteringWarning",
    "DamagedFileError",
    "DeepCluster",
    "FeatureExtractor",
    "FixedView",
    "ImageViews",
    "PseudoLabelDataset",
    "RandomView",
    "Recipe",
    "RecipeError",
    "Reclustering",
    "ReclusteringSettings",
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
    "epoch_length",
    "evaluation",
    "extract_features",
    "load_recipe",
    "pretraining",
    "processes",
    "recipe",
    "set_random_seed",
    "train",
]
