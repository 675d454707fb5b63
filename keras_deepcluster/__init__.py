"""keras_deepcluster: DeepCluster unsupervised pretraining for Keras 3.

Runs unchanged on the TensorFlow, JAX and PyTorch backends (``KERAS_BACKEND``).
"""

import os

# TensorFlow turns its oneDNN kernels on by default only on CPUs with AVX-512
# VNNI/BF16, AVX-VNNI or AMX; on AVX2-only CPUs its own kernels made training
# 1.9x and extraction 2x slower (docs/performance.md). Applies when TensorFlow
# is imported after this; an explicit setting is kept.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from keras_deepcluster import (
    backbones,
    clustering,
    data,
    determinism,
    devices,
    evaluation,
    processes,
)
from keras_deepcluster.clustering import cluster_features
from keras_deepcluster.determinism import enable_determinism
from keras_deepcluster.devices import data_parallel
from keras_deepcluster.features import FeatureExtractor, extract_features
from keras_deepcluster.model import DeepCluster
from keras_deepcluster.pseudo_label_dataset import PseudoLabelDataset
from keras_deepcluster.reclustering import Reclustering
from keras_deepcluster.views import FixedView, ImageViews, RandomView

__version__ = "0.1.0"

__all__ = [
    "DeepCluster",
    "FeatureExtractor",
    "FixedView",
    "ImageViews",
    "PseudoLabelDataset",
    "RandomView",
    "Reclustering",
    "backbones",
    "cluster_features",
    "clustering",
    "data",
    "data_parallel",
    "determinism",
    "devices",
    "enable_determinism",
    "evaluation",
    "extract_features",
    "processes",
]
