"""Deterministic mode: the same seed gives the same pseudo-labels, run after run, on a GPU too.

On a CPU every backend is already reproducible for a given machine and thread
count. GPUs are not by default: cuDNN and XLA pick kernels by timing them,
and reductions that add with atomics (scatter-add, segment sums) add in no
fixed order. `enable_determinism` switches each backend to its deterministic
kernels and makes our own k-means sum in a fixed order (`accelerated_kmeans`).
It costs speed on a GPU (docs/reliability.md) and nothing measurable on a CPU.
"""

from __future__ import annotations

import os

import keras

from keras_deepcluster.platform.tensorflow_import import without_tensorflow

# XLA's switch for deterministic GPU kernels (scatter rewritten, no
# nondeterministic autotuning choices); read when JAX or TensorFlow starts XLA.
XLA_FLAG = "--xla_gpu_deterministic_ops=true"
# cuBLAS needs a fixed workspace to be deterministic (PyTorch's requirement).
CUBLAS_WORKSPACE = ":4096:8"

_enabled = False


def enabled() -> bool:
    """Whether `enable_determinism` was called in this process."""
    return _enabled


def enable_determinism() -> None:
    """Switches the current Keras backend to deterministic kernels.

    * TensorFlow: ``tf.config.experimental.enable_op_determinism()``.
    * JAX: ``--xla_gpu_deterministic_ops=true`` in ``XLA_FLAGS``. XLA reads
      it when JAX first uses a device, so call this before any computation;
      on a GPU it raises when that moment has passed.
    * PyTorch: ``torch.use_deterministic_algorithms(True)``, cuDNN benchmark
      off and deterministic, and ``CUBLAS_WORKSPACE_CONFIG`` set.
    * Our `keras.ops` k-means sums each cluster's points with a matrix
      product over one-hot labels instead of a scatter-add.

    It does not change precision: on NVIDIA GPUs JAX still multiplies float32
    matrices in TF32, deterministically.

    Raises:
        RuntimeError: on JAX with a GPU, when XLA had started before the flag
            was set (call it first thing, or set ``XLA_FLAGS`` yourself).

    Examples:
        >>> import keras_deepcluster as kdc
        >>> kdc.enable_determinism()   # before building the model
    """
    global _enabled
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")
    flag_was_set = XLA_FLAG in os.environ.get("XLA_FLAGS", "")
    if not flag_was_set:
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {XLA_FLAG}".strip()
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    elif backend == "torch":
        import torch

        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    elif backend == "jax" and not flag_was_set:
        _check_xla_not_started()
    _enabled = True


def set_random_seed(seed: int) -> None:
    """Seeds Python, NumPy, Keras and the backend, as `keras.utils.set_random_seed` does.

    Keras's function seeds TensorFlow too whenever it is installed (for
    ``tf.data`` pipelines); on the other backends that imports TensorFlow for
    nothing, as no pipeline here uses ``tf.data`` there (`without_tensorflow`).

    Args:
        seed: the seed, an int.
    """
    with without_tensorflow():
        keras.utils.set_random_seed(seed)


def _check_xla_not_started() -> None:
    from jax._src import xla_bridge

    from keras_deepcluster.platform.devices import accelerator_available

    # XLA:CPU is deterministic without the flag; only a started GPU client misses it.
    if xla_bridge.backends_are_initialized() and accelerator_available():
        raise RuntimeError(
            "Deterministic mode on JAX needs XLA_FLAGS=--xla_gpu_deterministic_ops=true "
            "before JAX first uses the GPU, and JAX had already started. Call "
            "keras_deepcluster.enable_determinism() before building any model, or start "
            "Python with that XLA_FLAGS."
        )
