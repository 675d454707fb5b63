"""keras_deepcluster: DeepCluster unsupervised pretraining for Keras 3.

Runs unchanged on the TensorFlow, JAX and PyTorch backends (``KERAS_BACKEND``).

Importing the package is cheap: each public name is imported on first use
(PEP 562), so the command line answers ``--help`` and recipe errors, and the
PIL-only helpers (`data.write_image_folder`) run, without importing Keras.
Once a name that needs Keras is used, all the package's Keras classes are
registered, so `keras.saving.load_model` reads its ``.keras`` files (for
example after ``from keras_deepcluster import DeepCluster``). Set the backend
before that first use.
"""

import importlib
import os
import sys

# TensorFlow turns its oneDNN kernels on by default only on CPUs with AVX-512
# VNNI/BF16, AVX-VNNI or AMX; its own kernels elsewhere are much slower for
# these networks (measured in docs/performance.md). Applies when TensorFlow is
# imported after this; an explicit setting is kept.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from keras_deepcluster import lazy_modules  # noqa: E402
from keras_deepcluster.version import __version__  # noqa: E402, F401

if not any(isinstance(finder, lazy_modules.MovedModuleFinder) for finder in sys.meta_path):
    sys.meta_path.append(lazy_modules.MovedModuleFinder())

# Public name -> the module (relative to the package) that defines it.
_NAMES = {
    "ClusterModel": "method.cluster_model",
    "ClusteringDiagnostics": "runs.diagnostics",
    "ClusteringWarning": "method.reclustering",
    "DamagedFileError": "runs.run_directory",
    "DeepCluster": "method.model",
    "FeatureExtractor": "method.features",
    "FixedView": "method.views",
    "ImageViews": "method.views",
    "PseudoLabelDataset": "method.pseudo_label_dataset",
    "RandomView": "method.views",
    "Recipe": "runs.recipe",
    "RecipeError": "runs.recipe",
    "Reclustering": "method.reclustering",
    "ReclusteringSettings": "method.reclustering",
    "Run": "runs.trained_run",
    "RunDirectory": "runs.run_directory",
    "RunRecorder": "runs.callbacks",
    "StopOnInterrupt": "runs.callbacks",
    "StopOnNaN": "runs.callbacks",
    "catch_interrupts": "platform.interrupts",
    "cluster_features": "method.clustering",
    "data_parallel": "platform.devices",
    "enable_determinism": "platform.determinism",
    "epoch_length": "method.pseudo_label_dataset",
    "extract_features": "method.features",
    "load_recipe": "runs.recipe",
    "set_random_seed": "platform.determinism",
    "train": "runs.pretraining",
}
_SUBMODULES = ("analysis", "backbones", "data", "evaluation", "method", "platform", "runs")
# The modules that register Keras classes (`register_keras_serializable`).
_KERAS_CLASS_MODULES = ("method.model", "backbones", "method.views", "evaluation.linear_probe")

__all__ = sorted([*_NAMES, *_SUBMODULES])


def __getattr__(name: str):
    # A submodule is also reached here by the library's own `from keras_deepcluster import x`,
    # in the middle of importing other modules: only public names register the Keras classes.
    if name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    elif name in _NAMES:
        value = getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
        if "keras" in sys.modules:  # Keras is imported anyway: let its load_model know ours
            for module in _KERAS_CLASS_MODULES:
                importlib.import_module(f"{__name__}.{module}")
    elif name in lazy_modules.MOVED:
        return lazy_modules.import_moved(name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
