"""Backend and platform work behind the method's seams.

Devices and several processes, k-means in ``keras.ops``, compilation, determinism,
memory checks, interrupts, directory locks, the quiet TensorFlow import and the
PyTorch training step.
"""

from keras_deepcluster import lazy_modules


def __getattr__(name: str):
    return lazy_modules.submodule(__name__, name)
