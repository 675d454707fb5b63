"""Feature extraction of the 60,000 Fashion-MNIST training images, and the training input.

Times, with LeNet:
- the fixed views alone, computed on the host (NumPy, 1,024 images per call);
- the former extraction path: host views, then the network (`predict_on_batch`), batch 256;
- `FeatureExtractor` (the view inside the compiled network), at several batch sizes; on
  PyTorch also through Keras's layer calls (``direct_torch=False``) at batch 256;
- the training input alone: every batch of one `PseudoLabelDataset` epoch (random views);
- with `--jit-compile`, also `FeatureExtractor(jit_compile=True)` at batch 256 and its first
  call (the compile: `torch.compile` on PyTorch, XLA on TensorFlow).
Each network is compiled by a first call before timing; each time is the best of `--repeats`.

    KERAS_BACKEND=jax python benchmarks/feature_extraction.py \
        --out docs/benchmarks/feature_extraction_jax.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import keras
import numpy as np

import keras_deepcluster as kdc

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def best_of(repeats, function):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def host_views_then_network(backbone, images, views, batch_size):
    for start in range(0, len(images), batch_size):
        batch = views.fixed(images[start : start + batch_size])
        if len(batch) == batch_size:  # the timing skips the padded tail
            keras.ops.convert_to_numpy(backbone.predict_on_batch(batch))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jit-compile", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    images = kdc.data.load("idx", "fashion_mnist", FASHION_MNIST).x_train
    views = kdc.ImageViews.for_dataset("fashion_mnist")
    backbone = kdc.backbones.lenet(seed=61)
    seconds = {}

    def host_views():
        for i in range(0, len(images), 1024):
            views.fixed(images[i : i + 1024])

    seconds["host_fixed_views"] = best_of(args.repeats, host_views)
    host_views_then_network(backbone, images[:256], views, 256)  # compile
    seconds["host_views_then_network_256"] = best_of(
        args.repeats, lambda: host_views_then_network(backbone, images, views, 256)
    )
    extractor = kdc.FeatureExtractor(backbone, views)
    for batch_size in (256, 1024, 4096):
        extractor(images[:batch_size], batch_size)  # compile this batch size
        seconds[f"feature_extractor_{batch_size}"] = best_of(
            args.repeats, lambda: extractor(images, batch_size)
        )
    if keras.backend.backend() == "torch":
        keras_calls = kdc.FeatureExtractor(backbone, views, direct_torch=False)
        keras_calls(images[:256], 256)
        seconds["feature_extractor_keras_calls_256"] = best_of(
            args.repeats, lambda: keras_calls(images, 256)
        )
    if args.jit_compile:
        compiled = kdc.FeatureExtractor(backbone, views, jit_compile=True)
        start = time.perf_counter()
        compiled(images[:256], 256)
        seconds["jit_compile_first_call"] = time.perf_counter() - start
        seconds["feature_extractor_jit_256"] = best_of(args.repeats, lambda: compiled(images, 256))
    dataset = kdc.PseudoLabelDataset(images, views, batch_size=128, seed=61)
    dataset.set_pseudo_labels(np.arange(len(images)) % 10, epoch=0)
    seconds["training_input_epoch"] = best_of(
        args.repeats, lambda: [dataset[i] for i in range(len(dataset))]
    )
    for name, value in seconds.items():
        print(f"{name}: {value:.2f} s ({len(images) / value:,.0f} images/s)")
    if args.out:
        args.out.write_text(
            json.dumps(
                {"backend": keras.backend.backend(), "images": len(images), "seconds": seconds},
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
