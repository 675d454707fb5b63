"""Seconds per DeepCluster cycle of a CLI recipe run, per backend, from its history.csv.

Runs ``deepcluster train RECIPE --epochs E`` once per backend (one after the
other: never two backends at once on a small machine) and reports the mean
over epochs 1..E-1 (epoch 0 compiles) of feature extraction, k-means,
training and the whole epoch. ``--cli`` runs another checkout's command
line instead, for side-by-side comparisons on one machine.

    python benchmarks/cycle.py --out docs/benchmarks/cycle_cpu.json \\
        -- --source idx --data-dir /usr/share/datasets/fashion-mnist
    python benchmarks/cycle.py --backends jax --cli "python /path/to/old/cli.py" -- --source idx ...
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COLUMNS = ("seconds_features", "seconds_kmeans", "seconds_train", "seconds_epoch")


def run(cli: list[str], backend: str, recipe: str, epochs: int, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "run"
        command = [*cli, "train", recipe, "--backend", backend, "--epochs", str(epochs)]
        command += ["--out", str(out), *extra]
        start = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if result.returncode != 0:
            return {"error": result.stderr[-2000:] or result.stdout[-2000:]}
        with open(out / "history.csv") as file:
            rows = list(csv.DictReader(file))
    later = rows[1:] or rows
    summary = {key: statistics.mean(float(r[key]) for r in later) for key in COLUMNS}
    summary["per_epoch"] = {key: [round(float(r[key]), 3) for r in rows] for key in COLUMNS}
    summary["nmi_labels"] = [round(float(r["nmi_labels"]), 4) for r in rows if r.get("nmi_labels")]
    summary["wall_seconds"] = wall
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="fashion_mnist")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--backends", default="tensorflow,jax,torch")
    parser.add_argument("--cli", default=f"{sys.executable} -m keras_deepcluster_cli.main")
    parser.add_argument("--out", type=Path)
    parser.add_argument("extra", nargs="*", help="more `deepcluster train` options, after --")
    args = parser.parse_args()
    results = {}
    for backend in args.backends.split(","):
        results[backend] = run(shlex.split(args.cli), backend, args.recipe, args.epochs, args.extra)
        shown = {k: round(v, 2) for k, v in results[backend].items() if k in COLUMNS}
        print(backend, shown or results[backend], flush=True)
    report = {
        "recipe": args.recipe,
        "epochs": args.epochs,
        "options": args.extra,
        "cli": args.cli,
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "results": results,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
