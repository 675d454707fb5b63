"""The floor of an eager PyTorch training step: the recipes' networks in plain PyTorch.

What `benchmarks/step_overhead.py` measures for `DeepCluster.fit`, without
Keras or DeepCluster: LeNet and the AlexNet-micro written as a PyTorch user
writes them (`torch.nn` modules, NCHW, `torch.optim.SGD` with momentum and
weight decay, `F.cross_entropy`), a step on tensors made beforehand (no data
loading, no random view, no metrics). At tiny batches its time is PyTorch's
own cost per operation on this CPU, which no Keras-side change can go below;
``--compile`` adds the same step with the network under `torch.compile`
(compiled once per case, outside the timer).

    python benchmarks/torch_floor.py --out docs/benchmarks/step_overhead/floor/torch_plain.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from step_overhead import machine
from torch import nn

CLUSTERS = 4  # as step_overhead.py's recipes


class Sobel(nn.Module):
    """Grayscale, then the two Sobel kernels (the AlexNets' fixed first layer)."""

    def __init__(self):
        super().__init__()
        dx = torch.tensor([[1.0, 0, -1], [2, 0, -2], [1, 0, -1]])
        self.register_buffer("kernel", torch.stack([dx, dx.T])[:, None])

    def forward(self, x):
        return F.conv2d(x.mean(1, keepdim=True), self.kernel, padding=1)


def conv_block(cin: int, cout: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride), nn.BatchNorm2d(cout, eps=1e-3), nn.ReLU()]


def lenet() -> tuple[nn.Module, tuple[int, ...]]:
    features = nn.Sequential(
        *conv_block(1, 6, 5), nn.MaxPool2d(2, 2), *conv_block(6, 16, 5), nn.MaxPool2d(2, 2)
    )
    head = [nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU()]
    return nn.Sequential(features, *head, nn.Linear(84, CLUSTERS)), (1, 32, 32)


def alexnet_micro() -> tuple[nn.Module, tuple[int, ...]]:
    features = nn.Sequential(
        Sobel(),
        *conv_block(2, 48, 8, 3),
        nn.MaxPool2d(2, 1),
        *conv_block(48, 126, 2),
        nn.MaxPool2d(2, 1),
        *conv_block(126, 192, 3),
        *conv_block(192, 192, 2),
        *conv_block(192, 128, 2),
        nn.MaxPool2d(2, 1),
    )
    width = features(torch.zeros(1, 3, 32, 32)).numel()
    classifier = [nn.Flatten(), nn.Dropout(0.5), nn.Linear(width, 1024), nn.ReLU()]
    classifier += [nn.Dropout(0.5), nn.Linear(1024, 1024), nn.ReLU()]
    return nn.Sequential(features, *classifier, nn.Linear(1024, CLUSTERS)), (3, 32, 32)


NETWORKS = {"lenet": lenet, "alexnet_micro": alexnet_micro}


def step_seconds(network: str, batch_size: int, steps: int, compile_network: bool) -> list[float]:
    """Seconds of each of `steps` training steps, after 20 untimed ones."""
    torch.manual_seed(0)
    model, shape = NETWORKS[network]()
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-5)
    forward = torch.compile(model) if compile_network else model
    batches = [
        (torch.randn(batch_size, *shape), torch.randint(0, CLUSTERS, (batch_size,)))
        for _ in range(16)
    ]
    seconds = []
    for i in range(20 + steps):
        x, y = batches[i % len(batches)]
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(forward(x), y).backward()
        optimizer.step()
        seconds.append(time.perf_counter() - start)
    return seconds[20:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", default="2,8,32")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--compile", action="store_true", help="Also under torch.compile.")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = {}
    for network in NETWORKS:
        for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
            for compiled in (False, True) if args.compile else (False,):
                seconds = step_seconds(network, batch_size, args.steps, compiled)
                median = 1000 * statistics.median(seconds)
                key = f"{network}/{batch_size}" + ("/compiled" if compiled else "")
                results[key] = {"median_step_ms": median, "steps": args.steps}
                print(f"plain torch {key}: {median:.2f} ms", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "machine": machine(),
            "results": results,
        }
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
