"""Speed of what comes after training, against feature extraction on the same backend.

On a finished run (e.g. one of benchmarks/results_metrics.py): images per second of plain
feature extraction (`FeatureExtractor`), of `Run.assign` and of `deepcluster export`'s
`export_assignments` over the training split; seconds of the weighted kNN over train x test
on the probe layer; seconds of `deepcluster show`'s `write_report`; peak RSS. Writes JSON.

    KERAS_BACKEND=tensorflow python benchmarks/after_training.py runs/results/metrics/seed61 \
        --out docs/benchmarks/after_training_tensorflow.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import tempfile
import time
from pathlib import Path

import keras

import keras_deepcluster as kdc
from keras_deepcluster.method.features import layer_model
from keras_deepcluster.runs.export import export_assignments
from keras_deepcluster.runs.visualize import write_report


def timed(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    run = kdc.Run.open(args.run)
    data = run.data()
    images = data.x_train
    n = len(images)
    extractor = kdc.FeatureExtractor(run.backbone, run.model.views)
    extractor(images[:512])  # compile once, as every timed call below finds it compiled
    run.assign(images[:512])
    _, extract_s = timed(lambda: extractor(images))
    _, assign_s = timed(lambda: run.assign(images))
    with tempfile.TemporaryDirectory() as folder:
        _, export_s = timed(
            lambda: export_assignments(run, data, Path(folder) / "clusters.parquet")
        )
    layer = run.recipe.probe_layer
    probe = kdc.FeatureExtractor(layer_model(run.backbone, layer), run.model.views)
    train, test = probe(images), probe(data.x_test)
    _, knn_s = timed(lambda: kdc.evaluation.weighted_knn(train, data.y_train, test, data.y_test))
    _, show_s = timed(lambda: write_report(run, data))
    result = {
        "backend": keras.backend.backend(),
        "run": str(args.run),
        "images": n,
        "extract_images_per_s": n / extract_s,
        "assign_images_per_s": n / assign_s,
        "export_images_per_s": n / export_s,
        "knn_seconds": knn_s,
        "knn_shape": [len(train), len(test), int(train.shape[1])],
        "show_seconds": show_s,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "machine": platform.processor() or platform.machine(),
    }
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
