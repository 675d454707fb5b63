"""The run machinery.

Recipes, run directories, the callbacks that record and resume a run, `train`,
finished runs (`Run`), export, the deployable model and the report.
"""

from keras_deepcluster import lazy_modules


def __getattr__(name: str):
    return lazy_modules.submodule(__name__, name)
