"""Memory checked before it is allocated: estimates from shapes against what is free.

A setting whose arrays cannot fit should be refused with a message that says
what to change, before a run directory exists, rather than end in an
allocator's abort (``std::bad_alloc``) half-way through. The estimates count
what DeepCluster allocates per epoch: the (N, D) float32 features with their
normalised copy on the host (or the device, when k-means runs there), and a
training batch's activations (forward, backward and the optimizer's working
copies: three floats per activation) where the network runs.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np

from keras_deepcluster.platform import devices

# Floats a training step holds per activation: the forward value, its
# gradient, and a working copy (ReLU masks, batch-norm statistics, ...).
_TRAINING_COPIES = 3


def available_host_bytes() -> int | None:
    """Memory this process may still allocate: MemAvailable, capped by a cgroup limit."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        pass
    if available is None and hasattr(os, "sysconf"):
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            return None
    limit = _cgroup_room()
    return available if limit is None or available is None else min(available, limit)


def activation_floats(model: keras.Model) -> int:
    """Floats of all layer outputs of `model` for one image (nested models included)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += activation_floats(layer)
        elif not isinstance(layer, keras.layers.InputLayer):
            for output in keras.tree.flatten(layer.output):
                total += int(np.prod([d for d in output.shape[1:] if d is not None]))
    return total


def check_fits(what: str, needed: int, available: int | None, remedy: str) -> None:
    """Raises ValueError when `needed` bytes exceed `available` (None: unknown, no check)."""
    if available is not None and needed > available:
        raise ValueError(
            f"{what} needs about {_size(needed)}, but {_size(available)} is free; {remedy}."
        )


def training_batch_bytes(model: keras.Model, batch_size: int) -> int:
    """Estimated bytes of one training step's activations for `batch_size` images."""
    return 4 * _TRAINING_COPIES * batch_size * activation_floats(model)


def device_or_host_bytes() -> int | None:
    """Free memory where the network runs: the GPU's if the backend says, else the host's."""
    free = devices.free_memory_bytes()
    if free is not None:
        return free
    return None if devices.accelerator_available() else available_host_bytes()


def _cgroup_room() -> int | None:
    """What a cgroup (v2 or v1) memory limit leaves, if one is set."""
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 1 << 60:
            return max(0, int(limit) - usage)
    return None


def _size(nbytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes / 1e3:.1f} kB"
