"""How TensorFlow is imported: not at all where it has no use, and quietly where it has.

Keras asks whether TensorFlow is installed, and so imports it (seconds per
process), in places where only TensorFlow's own objects would matter: when
seeding (`keras.utils.set_random_seed` seeds ``tf.data``) and when
serializing a model (it checks for ``tf.TensorShape``). Before TensorFlow is
imported no such object can exist, so answering "not installed" there changes
nothing but the time.

Where TensorFlow is used, its C++ libraries print log lines while they load,
before any logging setting applies; `import_tensorflow_quietly` drops those.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
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


# What TensorFlow's C++ libraries write to the process's stderr while they load, before any
# logging setting applies (TF_CPP_MIN_LOG_LEVEL does not reach them).
_LOAD_NOISE = (
    "All log messages before absl::InitializeLog() is called",
    "oneDNN custom operations are on",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "To enable the following instructions:",
    "Unable to register cu",
    "computation placer already registered",
)


def import_tensorflow_quietly():
    """Imports TensorFlow with its load-time log lines dropped; other stderr output is kept.

    Returns:
        The ``tensorflow`` module.
    """
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not any(noise in line for noise in _LOAD_NOISE):
                    sys.stderr.write(line)
    return tensorflow
