"""Seconds `deepcluster show` takes on a run of N Fashion-MNIST images, whole and per figure.

For each size, a one-epoch run on the first N training images (Debian's
dataset-fashion-mnist, the `idx` source) is trained first (not timed); then `deepcluster
show RUN` runs as a user runs it, a fresh process, timed from start to exit; then
`visualize.write_report` runs in this process with a timestamp per figure, for the
breakdown. The 2-D map is drawn from a 3,000-image subsample (show's default) at every N.

    KERAS_BACKEND=jax python benchmarks/show.py --sizes 3000,60000 --out docs/benchmarks/show.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


def train(out: Path, images: int) -> None:
    import keras_deepcluster as kdc

    recipe = kdc.load_recipe("fashion_mnist").replace(
        source="idx", data_dir=FASHION_MNIST, limit=images, epochs=1
    )
    kdc.train(recipe, out)


def command_seconds(run: Path) -> float:
    script = str(Path(sys.executable).with_name("deepcluster"))
    start = time.perf_counter()
    done = subprocess.run([script, "show", str(run)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"deepcluster show failed:\n{done.stdout}\n{done.stderr}")
    return time.perf_counter() - start


def figure_seconds(run: Path) -> dict[str, float]:
    """Seconds from one `on_figure` step to the next (the last: to the page written)."""
    import keras_deepcluster as kdc
    from keras_deepcluster.runs.visualize import write_report

    opened = kdc.Run.open(run)
    data = opened.data()
    marks = []
    write_report(opened, data, on_figure=lambda what: marks.append((what, time.perf_counter())))
    marks.append(("end", time.perf_counter()))
    return {what: round(later - now, 2) for (what, now), (_, later) in zip(marks, marks[1:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="3000,60000")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    import keras

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for size in map(int, args.sizes.split(",")):
            run = Path(folder) / f"fmnist{size}"
            train(run, size)
            row = {
                "images": size,
                "backend": keras.backend.backend(),
                "command_seconds": round(command_seconds(run), 2),
                "figures_seconds": figure_seconds(run),
            }
            rows.append(row)
            print(json.dumps(row))
    if args.out:
        machine = next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            os.uname().machine,
        )
        args.out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
