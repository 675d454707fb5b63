"""Modules imported on first use, and those that moved, still importable by their old names.

`submodule` lets a sub-package give its modules as attributes (``kdc.platform.devices``)
without importing them all, and Keras with them, when the package is imported.

``import keras_deepcluster.model`` (and ``kdc.model``) gives the module that is now
``keras_deepcluster.method.model``, with a `DeprecationWarning`. This also lets Keras load
``.keras`` files saved before the move: it imports a custom class's ``module`` when the class
is not registered yet.
"""

import importlib
import importlib.abc
import importlib.util
import warnings

PACKAGE = "keras_deepcluster"

# Old name (relative to the package) -> new name.
MOVED = {
    **{
        name: f"method.{name}"
        for name in (
            "cluster_model",
            "clustering",
            "features",
            "model",
            "pseudo_label_dataset",
            "reclustering",
            "views",
        )
    },
    **{
        name: f"platform.{name}"
        for name in (
            "accelerated_kmeans",
            "compilation",
            "determinism",
            "devices",
            "directory_lock",
            "interrupts",
            "memory",
            "processes",
            "tensorflow_import",
            "torch_network",
            "torch_step",
        )
    },
    **{
        name: f"runs.{name}"
        for name in (
            "callbacks",
            "check_labels",
            "deployment",
            "diagnostics",
            "export",
            "pretraining",
            "recipe",
            "recipe_data",
            "resume",
            "run_directory",
            "trained_run",
            "visualize",
        )
    },
}


def submodule(package: str, name: str):
    """The module `name` of `package`, imported now; `AttributeError` if there is none."""
    try:
        return importlib.import_module(f"{package}.{name}")
    except ModuleNotFoundError as error:
        if error.name != f"{package}.{name}":
            raise  # a module that exists failed to import one of its own
        raise AttributeError(f"module {package!r} has no attribute {name!r}") from None


def import_moved(name: str, stacklevel: int = 3):
    """The module that the old name `name` (relative to the package) now is, with a warning."""
    new = f"{PACKAGE}.{MOVED[name]}"
    warnings.warn(
        f"{PACKAGE}.{name} is now {new}; import it from there (the old name will be removed "
        "in a future version).",
        DeprecationWarning,
        stacklevel=stacklevel,
    )
    return importlib.import_module(new)


class _Alias(importlib.abc.Loader):
    """Loads an old name as the module it moved to (the same module object)."""

    def __init__(self, name: str):
        self.name = name

    def create_module(self, spec):
        self.module = import_moved(self.name, stacklevel=6)
        self.spec = self.module.__spec__  # importlib overwrites it with the alias's spec
        return self.module

    def exec_module(self, module):
        module.__spec__ = self.spec


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Finds ``keras_deepcluster.<old name>`` for the modules in `MOVED`."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.rpartition(".")
        if package != PACKAGE or name not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, _Alias(name))
