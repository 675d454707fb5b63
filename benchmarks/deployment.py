"""Size and latency of a run exported as one model (`Run.export_model`), per format.

For every format the current backend writes (`keras_deepcluster.runs.deployment.PRODUCERS`),
exports the run, then runs the file in its own runtime, as a deployment would: the `.keras`
file through `keras.saving.load_model` and `predict_on_batch`, ONNX in onnxruntime, LiteRT
in the LiteRT interpreter, the SavedModel through `tf.saved_model.load`. Measures the file's
size (a SavedModel: its folder's) and the median milliseconds per image at batch 1 and at
batch 256, after warm-up calls; `Run.assign`, the package's own route, is the first row.
Without a run, trains one: the `cifar10` recipe (AlexNet-micro with Sobel, PCA 256) for one
epoch, k = 100, on 2,000 synthetic photos (`kdc.data.synthetic`), whose size and speed are
those of any run of that recipe.

    KERAS_BACKEND=jax python benchmarks/deployment.py --out deployment_jax.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import keras
import numpy as np

import keras_deepcluster as kdc
from keras_deepcluster.data.synthetic import write_image_folder
from keras_deepcluster.runs import deployment

BATCHES = (1, 256)
# Timed calls per batch size (after 3 warm-up calls): the median is reported.
REPEATS = {1: 200, 256: 10}


def trained_run(folder: Path) -> kdc.Run:
    """A one-epoch `cifar10` run on 2,000 synthetic photos, in `folder`."""
    write_image_folder(folder / "photos", 2000, seed=0)
    recipe = kdc.load_recipe("cifar10").replace(
        source="folder", data_dir=str(folder / "photos"), epochs=1, clusters=100, min_steps=None
    )
    os.environ["KERAS_DEEPCLUSTER_CACHE"] = str(folder / "caches")
    return kdc.Run.open(kdc.train(recipe, folder / "run").path)


def runner(file_format: str, path: Path):
    """A function running the exported file on a batch of images, in its own runtime."""
    if file_format == "keras":
        model = keras.saving.load_model(path)
        return model.predict_on_batch
    if file_format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(path)
        return lambda images: session.run(None, {"images": images})
    if file_format == "litert":
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            import tensorflow as tf

            Interpreter = tf.lite.Interpreter
        interpreter = Interpreter(model_path=str(path))
        signature = interpreter.get_signature_runner()
        (name,) = interpreter.get_signature_list()["serving_default"]["inputs"]
        if interpreter.get_input_details()[0]["shape_signature"][0] == 1:
            # litert-torch's file takes one image per call (its batch is fixed at one).
            return lambda images: [signature(**{name: image[None]}) for image in images]
        return lambda images: signature(**{name: images})
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    return lambda images: loaded.serve(images)


def milliseconds_per_image(run_batch, images: np.ndarray) -> dict[str, float]:
    result = {}
    for batch in BATCHES:
        chunk = images[:batch]
        for _ in range(3):
            run_batch(chunk)
        times = []
        for _ in range(REPEATS[batch]):
            start = time.perf_counter()
            run_batch(chunk)
            times.append(time.perf_counter() - start)
        result[f"ms_per_image_batch_{batch}"] = 1000 * statistics.median(times) / batch
    return result


def size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(each.stat().st_size for each in path.rglob("*") if each.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="A finished run (default: train one).")
    parser.add_argument("--out", type=Path, help="Write the results as JSON here.")
    args = parser.parse_args()
    backend = keras.backend.backend()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        run = kdc.Run.open(args.run) if args.run else trained_run(folder)
        images = run.data().x_train[: max(BATCHES)]
        rows = [
            {
                "format": "Run.assign (the package)",
                "bytes": size_of(run.directory.path / "model.keras")
                + size_of(run.directory.path / "clustering.npz"),
                **milliseconds_per_image(lambda batch: run.assign(batch), images),
            }
        ]
        for file_format, suffix in deployment.SUFFIXES.items():
            if backend not in deployment.PRODUCERS[file_format]:
                continue
            path = run.export_model(folder / f"model{suffix or ''}", file_format)
            timing = milliseconds_per_image(runner(file_format, path), images)
            rows.append({"format": file_format, "bytes": size_of(path), **timing})
    result = {
        "backend": backend,
        "keras": keras.__version__,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "image_shape": list(run.image_shape),
        "clusters": run.num_clusters,
        "rows": rows,
    }
    print(f"{'format':<26} {'MB':>7} {'ms/image, batch 1':>18} {'ms/image, batch 256':>20}")
    for row in rows:
        print(
            f"{row['format']:<26} {row['bytes'] / 1e6:>7.2f} "
            f"{row['ms_per_image_batch_1']:>18.3f} {row['ms_per_image_batch_256']:>20.4f}"
        )
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
