"""Peak memory (RSS) of a DeepCluster epoch read from an image cache, against the number of images.

For each N, a fresh process opens an image cache of N synthetic 48 x 48 RGB
images (built once under --work through the IDX source, whose files are
written a chunk at a time) and runs one DeepCluster epoch on it: the
re-clustering of all N images (LeNet features, k-means with k = 100) and
training on --epoch-length images drawn uniformly over the clusters. Its
peak RSS (``ru_maxrss``) should not grow with N beyond the N x d float32
features. With --limit-mib, the largest N runs once more inside a cgroup
whose memory limit (page cache included) is below the cache's size.

    KERAS_BACKEND=jax python benchmarks/memory.py --sizes 20000,200000 \\
        --limit-mib 1200 --out docs/benchmarks/memory_cache_jax.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

SIDE = 48


def write_idx(folder: Path, n: int) -> None:
    """N grayscale 48 x 48 images (discs of 10 sizes on noise) as gzipped IDX, a chunk at a time."""
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:SIDE, :SIDE]
    with gzip.open(folder / "train-images-idx3-ubyte.gz", "wb", compresslevel=1) as images:
        images.write(bytes([0, 0, 8, 3]) + b"".join(v.to_bytes(4, "big") for v in (n, SIDE, SIDE)))
        labels = []
        for start in range(0, n, 10000):
            count = min(10000, n - start)
            classes = rng.integers(0, 10, count)
            centres = rng.uniform(12, 36, (count, 2, 1, 1))
            radius = (4 + 1.6 * classes)[:, None, None]
            disc = (x - centres[:, 0]) ** 2 + (y - centres[:, 1]) ** 2 < radius**2
            noise = rng.integers(0, 60, (count, SIDE, SIDE))
            images.write(np.where(disc, 220, noise).astype(np.uint8).tobytes())
            labels.append(classes)
    with gzip.open(folder / "train-labels-idx1-ubyte.gz", "wb") as file:
        file.write(bytes([0, 0, 8, 1]) + n.to_bytes(4, "big"))
        file.write(np.concatenate(labels).astype(np.uint8).tobytes())


def measure(folder: Path, epoch_length: int) -> dict:
    """One DeepCluster epoch from the cache of `folder`; peak RSS and the phases' seconds."""
    import keras
    import numpy as np

    import keras_deepcluster as kdc

    start = time.perf_counter()
    cached = kdc.data.prepare("idx", path=folder, channels=3, out=folder / "cache").data()
    baseline = peak_mib()
    views = kdc.ImageViews(size=32, resize=SIDE, mean=(0.5,) * 3, std=(0.25,) * 3)
    dataset = kdc.PseudoLabelDataset(
        cached.x_train, views, batch_size=256, seed=0, epoch_length=epoch_length
    )
    model = kdc.DeepCluster(kdc.backbones.lenet((32, 32, 3), seed=0), num_clusters=100)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    reclustering = kdc.Reclustering(dataset, labels=cached.y_train, seed=0)
    history = model.fit(dataset, epochs=1, callbacks=[reclustering], verbose=0).history
    n, dim = len(cached.x_train), model.feature_dim
    return {
        "n": n,
        "cache_mib": cached.x_train.nbytes / 2**20,
        "features_mib": n * dim * 4 / 2**20,
        "after_opening_cache_mib": baseline,
        "peak_mib": peak_mib(),
        "nmi_labels": float(history["nmi_labels"][0]),
        "seconds_features": float(history["seconds_features"][0]),
        "seconds": time.perf_counter() - start,
        "mean_pixel": float(np.mean(cached.x_train[:1000])),
    }


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def limited(limit_mib: int):
    """A function that moves the calling process into a new cgroup with that memory limit."""
    for root in (Path("/sys/fs/cgroup/memory"), Path("/sys/fs/cgroup")):
        v1 = (root / "memory.limit_in_bytes").exists()
        if v1 or (root / "cgroup.subtree_control").exists():
            group = root / f"kdc_memory_benchmark_{os.getpid()}"
            group.mkdir(exist_ok=True)
            (group / ("memory.limit_in_bytes" if v1 else "memory.max")).write_text(
                str(limit_mib * 2**20)
            )
            return group, lambda: (group / "cgroup.procs").write_text(str(os.getpid()))
    raise SystemExit("No writable cgroup memory controller here; run without --limit-mib.")


def run_child(folder: Path, args, group=None, enter=None) -> dict:
    command = [
        sys.executable,
        __file__,
        "--one",
        str(folder),
        "--epoch-length",
        str(args.epoch_length),
    ]
    child = subprocess.run(command, capture_output=True, text=True, preexec_fn=enter)
    if child.returncode != 0:
        return {"error": f"exit {child.returncode}", "stderr": child.stderr[-1500:]}
    row = json.loads(child.stdout.strip().splitlines()[-1])
    if group is not None:
        for name in ("memory.max_usage_in_bytes", "memory.peak"):
            if (group / name).exists():
                row["cgroup_peak_mib"] = int((group / name).read_text()) / 2**20
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="20000,200000")
    parser.add_argument("--epoch-length", type=int, default=20000)
    parser.add_argument("--limit-mib", type=int, help="Also run the largest N under this limit.")
    parser.add_argument("--work", type=Path, default=Path("/tmp/kdc_memory_benchmark"))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.epoch_length)))
        return
    rows = []
    sizes = [int(n) for n in args.sizes.split(",")]
    for n in sizes:
        folder = args.work / f"n{n}"
        if not (folder / "train-labels-idx1-ubyte.gz").exists():
            write_idx(folder, n)
        run_child(folder, args)  # builds the cache (not measured)
        rows.append({"limit_mib": None, **run_child(folder, args)})
        print(rows[-1], flush=True)
    if args.limit_mib:
        group, enter = limited(args.limit_mib)
        # Drop the cache's pages from the page cache, so the limited run reads from disk.
        subprocess.run(["sh", "-c", "sync; echo 1 > /proc/sys/vm/drop_caches"], check=False)
        row = run_child(args.work / f"n{max(sizes)}", args, group, enter)
        rows.append({"limit_mib": args.limit_mib, **row})
        print(rows[-1], flush=True)
        group.rmdir()
    if args.out:
        import keras

        args.out.write_text(
            json.dumps(
                {
                    "backend": keras.backend.backend(),
                    "python": platform.python_version(),
                    "epoch_length": args.epoch_length,
                    "rows": rows,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
