"""`compiled`: a `keras.ops` function compiled the way the current backend compiles.

Feature extraction and our k-means run as one compiled, stateless function
fed the current weights, rather than through `Model.predict`.
"""

from __future__ import annotations

import keras

from keras_deepcluster.platform.devices import accelerator_available


def compiled(function, jit_compile: bool | str = "auto"):
    """`function` (written with `keras.ops`, inference only) compiled for the current backend.

    `jax.jit` on JAX; a `tf.function` on TensorFlow, through XLA on a GPU (or
    as `jit_compile` says); on PyTorch eager kernels, which are already large
    for the matrix-sized work this is used for, or `torch.compile` with
    ``jit_compile=True``, and no autograd records. Compiled once per input shape.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.jit(function)
    if backend == "tensorflow":
        import tensorflow as tf

        xla = accelerator_available() if jit_compile == "auto" else bool(jit_compile)
        return tf.function(function, jit_compile=xla, reduce_retracing=True)
    if backend == "torch":
        import torch

        if jit_compile is True:
            function = torch.compile(function)
        return torch.no_grad()(function)
    return function
