"""Keras on JAX or PyTorch, without importing TensorFlow where it has no use.

Keras asks whether TensorFlow is installed, and so imports it (seconds per
process), in places where only TensorFlow's own objects would matter: when
seeding (`keras.utils.set_random_seed` seeds ``tf.data``) and when
serializing a model (it checks for ``tf.TensorShape``). Before TensorFlow is
imported no such object can exist, so answering "not installed" there changes
nothing but the time.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def without_tensorflow() -> Iterator[None]:
    """Within it, Keras treats TensorFlow as absent unless it is the backend or imported."""
    import keras  # here: the modules that use this import without Keras
    from keras.src.utils import module_utils

    lazy = module_utils.tensorflow
    hide = (
        keras.backend.backend() != "tensorflow"
        and "tensorflow" not in sys.modules
        and getattr(lazy, "_available", False) is None  # Keras has not looked for it yet
    )
    if hide:
        lazy._available = False
    try:
        yield
    finally:
        if hide:
            lazy._available = None
