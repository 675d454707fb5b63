"""Resident memory of one process that trains and probes run after run, as `sweep` does.

A sweep trains and probes its runs one after another in one process, so
whatever a run leaves behind adds up: resident memory should stay flat from
run to run. This script repeats `sweep`'s steps for each seed (a fresh Keras
session, `train_unless_finished`, `probe`) on the recipe's data and records
the RSS after each training and each probe.

    KERAS_BACKEND=tensorflow python benchmarks/sweep_memory.py --runs 5 --limit 20000 \\
        --source idx --data-dir /usr/share/datasets/fashion-mnist \\
        --out docs/benchmarks/sweep_memory_tensorflow.json

To measure another checkout (for instance the commit before a fix), put its
package first on PYTHONPATH; the JSON records which code ran.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="fashion_mnist")
    parser.add_argument("--runs", type=int, default=5, help="Runs (seeds 0..runs-1).")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--probe-epochs", type=int, default=1)
    parser.add_argument("--limit", type=int, default=20000, help="Training images of each run.")
    parser.add_argument("--source", default=None)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import keras

    import keras_deepcluster
    from keras_deepcluster.runs import pretraining, probes, recipe_data
    from keras_deepcluster.runs.recipe import load_recipe
    from keras_deepcluster.runs.run_directory import RunDirectory

    data_settings = {"source": args.source, "data_dir": args.data_dir}
    base = load_recipe(args.recipe).replace(
        limit=args.limit,
        epochs=args.epochs,
        probe_epochs=args.probe_epochs,
        **{key: value for key, value in data_settings.items() if value},
    )
    data = recipe_data.load_data(base)
    rows = [{"after": "loading the data", "rss_mib": round(rss_mib(), 1)}]
    with tempfile.TemporaryDirectory() as work:
        for seed in range(args.runs):
            recipe = base.replace(seed=seed)
            run = RunDirectory(Path(work) / f"seed{seed}")
            keras.utils.clear_session()
            pretraining.train_unless_finished(recipe, data, run)
            trained = rss_mib()
            probes.probe(recipe, data, run)
            rows.append(
                {
                    "seed": seed,
                    "after_training_mib": round(trained, 1),
                    "rss_mib": round(rss_mib(), 1),
                }
            )
            print(rows[-1], flush=True)
    growth = (rows[-1]["rss_mib"] - rows[1]["rss_mib"]) / max(args.runs - 1, 1)
    result = {
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "python": platform.python_version(),
        "code": str(Path(keras_deepcluster.__file__).parent.resolve()),
        "settings": vars(args) | {"out": str(args.out)},
        "images": len(data.x_train),
        "rows": rows,
        "growth_mib_per_run": round(growth, 1),
    }
    print(json.dumps({"growth_mib_per_run": result["growth_mib_per_run"]}))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
