"""The collectives of a several-process job, timed: what one k-means iteration exchanges.

Starts `--processes` JAX CPU processes on localhost (Gloo over TCP) and times,
in each, `processes.all_sum` of a (k, d) float array (the per-cluster sums of
one k-means iteration), `gather_shards` of N int64 labels (once per epoch)
and `all_sum` of a d x d matrix (PCA's scatter, once per epoch); median of
`--repeats`. Process 0 writes the JSON.

    python benchmarks/process_collectives.py --out docs/benchmarks/process_collectives.json
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path


def one_process(args) -> None:
    os.environ["JAX_PLATFORMS"] = "cpu"
    import numpy as np

    import keras_deepcluster as kdc

    kdc.platform.processes.initialize(args.coordinator, args.processes, args.process_id)
    rng = np.random.default_rng(args.process_id)
    all_sum = kdc.platform.processes.all_sum
    cases = {
        "kmeans_sums_k10000_d256": lambda: all_sum(rng.random((10_000, 256))),
        "kmeans_sums_k1000_d256": lambda: all_sum(rng.random((1_000, 256))),
        "labels_n1281167": lambda: kdc.platform.processes.gather_shards(
            np.zeros(1_281_167 // args.processes, np.int64)
        ),
        "pca_scatter_d4096": lambda: all_sum(rng.random((4096, 4096))),
    }
    seconds = {}
    for name, collective in cases.items():
        collective()  # the first call sets up the connections
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            collective()
            times.append(time.perf_counter() - start)
        seconds[name] = float(np.median(times))
    if args.process_id == 0:
        result = {"processes": args.processes, "repeats": args.repeats, "seconds": seconds}
        print(json.dumps(result, indent=1))
        if args.out:
            args.out.write_text(json.dumps(result, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--coordinator")
    parser.add_argument("--process-id", type=int)
    args = parser.parse_args()
    if args.process_id is not None:
        return one_process(args)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        coordinator = f"127.0.0.1:{s.getsockname()[1]}"
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [sys.executable, __file__, "--processes", str(args.processes)]
    command += ["--repeats", str(args.repeats), "--coordinator", coordinator]
    command += ["--out", str(args.out)] if args.out else []
    workers = [
        subprocess.Popen(command + ["--process-id", str(i)], env=env) for i in range(args.processes)
    ]
    sys.exit(max(worker.wait() for worker in workers))


if __name__ == "__main__":
    main()
