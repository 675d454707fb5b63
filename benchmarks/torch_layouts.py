"""`TorchNetwork`'s memory layouts: a training forward and backward pass in each.

For each recipe network (LeNet on 32 x 32 grayscale, the AlexNet-micro on
32 x 32 RGB) and batch size, milliseconds of one forward pass in training mode
plus its backward pass, in each of `torch_network.LAYOUTS`, alternating
between layouts `--rounds` times (the least of the rounds' medians), and the
layout `preferred_layout` chooses: what its rule was decided by, to re-run
on another CPU or a GPU (the images on Keras's default device).

    KERAS_BACKEND=torch python benchmarks/torch_layouts.py --out docs/benchmarks/torch_layouts.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import keras
import numpy as np
from step_overhead import machine

from keras_deepcluster import backbones
from keras_deepcluster.platform.torch_network import LAYOUTS, TorchNetwork

NETWORKS = {"lenet": (32, 32, 1), "alexnet_micro": (32, 32, 3)}


def pass_seconds(network: TorchNetwork, images, repeats: int) -> float:
    """Median seconds of a training forward pass and its backward, after 3 untimed."""
    import torch

    seconds = []
    for _ in range(3 + repeats):
        start = time.perf_counter()
        network(images, training=True).square().sum().backward()
        if images.is_cuda:  # the kernels run asynchronously
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds[3:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", default="8,128")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if keras.backend.backend() != "torch":
        raise SystemExit("Run with KERAS_BACKEND=torch: the layouts are PyTorch's.")
    results = {}
    for name, shape in NETWORKS.items():
        backbone = backbones.get(name, input_shape=shape, seed=0)
        for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
            images = np.random.default_rng(0).random((batch_size, *shape), np.float32)
            images = keras.ops.convert_to_tensor(images)
            repeats = max(20, 1600 // batch_size)
            rounds = {layout: [] for layout in LAYOUTS}
            for _ in range(args.rounds):
                for layout in LAYOUTS:
                    network = TorchNetwork.of(backbone, layout=layout)
                    rounds[layout].append(1000 * pass_seconds(network, images, repeats))
            ms = {layout: min(values) for layout, values in rounds.items()}
            results[f"{name}/{batch_size}"] = {
                "ms": ms,
                "rounds_ms": rounds,
                "preferred": TorchNetwork.of(backbone).layout,
            }
            shown = ", ".join(f"{layout} {value:.2f} ms" for layout, value in ms.items())
            print(f"{name} batch {batch_size}: {shown}", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        report = {"keras": keras.__version__, "machine": machine(), "results": results}
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
