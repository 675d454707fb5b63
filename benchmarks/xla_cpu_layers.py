"""Where XLA:CPU loses time on the recipes' small networks: a plain fit, pooling, Sobel.

Three measurements, milliseconds:

* ``plain_fit_ms_per_step``: `keras.Model.fit` of LeNet and a 5-way head on
  precomputed 32 x 32 views, batch 128, the recipe's ``steps_per_execution``
  (no DeepCluster, no random view): on any backend, for comparing backends'
  convolution kernels alone.
* ``pool_gradient_ms`` (JAX): the gradient of LeNet's two 2 x 2 pools at batch
  128, through Keras's `MaxPooling2D` (a window reduction, select-and-scatter
  gradient) and through `max_pool_by_slices`.
* ``sobel_ms`` (JAX): the Sobel front end as a one-channel convolution (`ops.conv`
  with its kernels) and as the package runs it (`sobel_by_slices`, shifted
  differences), batch 128 of 32 x 32 RGB.

Run it on both cores and on one (``taskset -c 0``) to see how the kernels use
the second core:

    KERAS_BACKEND=jax python benchmarks/xla_cpu_layers.py \
        --out docs/benchmarks/xla_cpu_layers/jax.json
    KERAS_BACKEND=jax taskset -c 0 python benchmarks/xla_cpu_layers.py \
        --out docs/benchmarks/xla_cpu_layers/jax_one_core.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import keras
import numpy as np

from keras_deepcluster.backbones import lenet
from keras_deepcluster.backbones.pooling import max_pool_by_slices
from keras_deepcluster.backbones.sobel import SOBEL_KERNELS, sobel_by_slices
from keras_deepcluster.platform.layer_acceleration import accelerate

BATCH, STEPS = 128, 40


def best_ms(run, calls: int, repeats: int = 5) -> float:
    """Least ms per call of `run()` (which makes `calls` calls) over `repeats`, after one."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000 * min(times) / calls


def plain_fit_ms_per_step() -> float:
    rng = np.random.default_rng(0)
    views = rng.normal(size=(BATCH * STEPS, 32, 32, 1)).astype("float32")
    labels = rng.integers(0, 5, len(views))
    keras.utils.set_random_seed(0)
    model = keras.Sequential([accelerate(lenet(seed=0)), keras.layers.Dense(5)])
    model.compile(
        keras.optimizers.SGD(0.01, momentum=0.1),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        steps_per_execution=1 if keras.backend.backend() == "torch" else 8,
    )
    fit = lambda: model.fit(views, labels, batch_size=BATCH, epochs=1, verbose=0, shuffle=False)  # noqa: E731
    return best_ms(fit, STEPS, repeats=3)


def jax_layers() -> dict:
    import jax

    rng = np.random.default_rng(0)

    def timed(f, *args):
        return best_ms(lambda: [jax.block_until_ready(f(*args)) for _ in range(50)], 50)

    pools = {}
    for name, shape in (("max_pool_1", (BATCH, 28, 28, 6)), ("max_pool_2", (BATCH, 10, 10, 16))):
        x = rng.normal(size=shape).astype("float32")
        keras_pool = keras.layers.MaxPooling2D(2, 2)
        by_keras = jax.jit(jax.grad(lambda x: keras_pool(x).sum()))
        by_slices = jax.jit(jax.grad(lambda x: max_pool_by_slices(x, (2, 2), (2, 2)).sum()))
        pools[name] = {"keras": timed(by_keras, x), "slices": timed(by_slices, x)}
    images = rng.uniform(size=(BATCH, 32, 32, 3)).astype("float32")
    kernel = keras.ops.convert_to_tensor(SOBEL_KERNELS)
    as_conv = jax.jit(
        lambda x: keras.ops.conv(keras.ops.mean(x, -1, keepdims=True), kernel, padding="same")
    )
    as_differences = jax.jit(sobel_by_slices)
    sobel = {"convolution": timed(as_conv, images), "differences": timed(as_differences, images)}
    return {"pool_gradient_ms": pools, "sobel_ms": sobel}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    report = {
        "backend": keras.backend.backend(),
        "cores": len(os.sched_getaffinity(0)),
        "plain_fit_ms_per_step": plain_fit_ms_per_step(),
    }
    if keras.backend.backend() == "jax":
        report.update(jax_layers())
    print(json.dumps(report, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
