"""One model from image to cluster: `Run.to_model`, `Run.export_model` and `export --model`.

The exported model must give `Run.assign`'s clusters and distances, and the
clustering's embedding, in every format the backend writes: the `.keras`
file in a Python where this package cannot be imported, ONNX in
onnxruntime, LiteRT in the LiteRT interpreter, the SavedModel in TensorFlow.
"""

import json
import os

import keras
import numpy as np
import pytest
from conftest import MATMUL_ATOL, invoke, make_shapes
from plain_keras import run_in_plain_keras

import keras_deepcluster as kdc
from keras_deepcluster.runs import deployment
from keras_deepcluster.runs.run_directory import RunDirectory

BACKEND = keras.backend.backend()
# What the images go through: a network then float32 maths, against `assign`'s float64.
TOLERANCE = 10 * MATMUL_ATOL


@pytest.fixture(scope="module")
def sobel_run(tmp_path_factory):
    """A finished AlexNet-micro run (Sobel, PCA-whitening to 16) of one epoch on 96 RGB shapes."""
    folder = tmp_path_factory.mktemp("sobel-run")
    images = np.repeat(make_shapes(96, seed=1, size=32)[0][..., None], 3, axis=-1)
    np.savez(folder / "shapes.npz", x=images)
    recipe = kdc.load_recipe("cifar10").replace(
        source="npz",
        data_dir=str(folder / "shapes.npz"),
        epochs=1,
        clusters=4,
        batch_size=32,
        min_steps=None,
        pca=16,
    )
    os.environ["KERAS_DEEPCLUSTER_CACHE"] = str(folder / "caches")
    try:
        kdc.train(recipe, folder / "run")
    finally:
        del os.environ["KERAS_DEEPCLUSTER_CACHE"]
    return kdc.Run.open(folder / "run")


def shapes_rgb(n=64, seed=9):
    return np.repeat(make_shapes(n, seed=seed, size=32)[0][..., None], 3, axis=-1)


def assert_matches_assign(outputs: dict, run: kdc.Run, images: np.ndarray) -> None:
    """`outputs` (cluster, distance, embedding) are what `run` gives for `images`."""
    outputs = {key: keras.ops.convert_to_numpy(value) for key, value in outputs.items()}
    clusters, distances = run.assign(images)
    embedding = run.cluster_model.transform(run.embed(images, layer="output"))
    np.testing.assert_allclose(outputs["embedding"], embedding, atol=TOLERANCE)
    np.testing.assert_allclose(np.ravel(outputs["distance"]), distances, atol=TOLERANCE)
    # The same ids wherever the two nearest centroids are not tied within the tolerance.
    to_centroids = np.linalg.norm(embedding[:, None] - run.cluster_model.centroids, axis=-1)
    nearest_two = np.sort(to_centroids, axis=1)[:, :2]
    clear = nearest_two[:, 1] - nearest_two[:, 0] > 2 * TOLERANCE
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(np.ravel(outputs["cluster"])[clear], clusters[clear])


def test_the_model_holds_the_pipeline_as_keras_layers_and_gives_assigns_clusters(sobel_run):
    model = sobel_run.to_model()
    names = [layer.name for layer in model.layers]
    assert names[:5] == ["images", "view_scale", "view_rows", "view_cols", "view_normalise"]
    assert {"alexnet_micro", "whitening", "l2_normalise", "centroids"} <= set(names)
    assert model.input.shape == (None, 32, 32, 3) and model.input.dtype == "uint8"
    assert not model.trainable_weights  # frozen, for inference
    images = shapes_rgb()
    outputs = {key: keras.ops.convert_to_numpy(value) for key, value in model(images).items()}
    assert sorted(outputs) == ["cluster", "distance", "embedding"]
    assert outputs["embedding"].shape == (64, 16)
    assert_matches_assign(outputs, sobel_run, images)
    # Float images in [0, 1] through a float32 model give the same.
    floats = sobel_run.to_model(dtype="float32")(images.astype("float32") / 255)
    assert_matches_assign(floats, sobel_run, images)


@pytest.mark.long_running
def test_the_keras_file_loads_without_the_package(sobel_run, shared_digits_run, tmp_path):
    digits = kdc.Run.open(shared_digits_run)
    runs = {"sobel": (sobel_run, shapes_rgb()), "digits": (digits, digits.data().x_train[:64])}
    for name, (run, images) in runs.items():
        run.export_model(tmp_path / f"{name}.keras")
        np.save(tmp_path / f"{name}.npy", images)
    stdout = run_in_plain_keras(
        f"""
import keras, numpy as np
for name in {list(runs)!r}:
    model = keras.saving.load_model(name + ".keras")
    outputs = model(np.load(name + ".npy"))
    outputs = {{key: keras.ops.convert_to_numpy(value) for key, value in outputs.items()}}
    np.savez(name + "-outputs.npz", **outputs)
print(keras.backend.backend())
""",
        tmp_path,
    )
    assert stdout.split()[-1] == BACKEND
    for name, (run, images) in runs.items():
        with np.load(tmp_path / f"{name}-outputs.npz") as outputs:
            assert_matches_assign(dict(outputs), run, images)


def _writes(file_format):
    if BACKEND not in deployment.PRODUCERS[file_format]:
        return pytest.mark.skip(f"the {BACKEND} backend does not write {file_format}")
    needs = deployment.PRODUCERS[file_format][BACKEND]
    missing = [name for name in needs if __import__("importlib").util.find_spec(name) is None]
    return pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)}")


@_writes("onnx")
def test_onnx_runs_in_onnxruntime_and_gives_assigns_clusters(sobel_run, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    path = sobel_run.export_model(tmp_path / "model.onnx")
    assert os.listdir(tmp_path) == ["model.onnx"]  # one file, the weights inside
    session = onnxruntime.InferenceSession(path)
    assert [each.name for each in session.get_inputs()] == ["images"]
    names = [each.name for each in session.get_outputs()]
    assert names == ["cluster", "distance", "embedding"]
    images = shapes_rgb()
    for batch in (images, images[:1]):  # the batch size is free
        assert_matches_assign(
            dict(zip(names, session.run(None, {"images": batch}))), sobel_run, batch
        )


def _litert_interpreter(path):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    return Interpreter(model_path=str(path))


@_writes("litert")
def test_litert_runs_in_the_interpreter_and_gives_assigns_clusters(sobel_run, tmp_path):
    interpreter = _litert_interpreter(sobel_run.export_model(tmp_path / "model.tflite"))
    # litert-torch names the input after the traced argument and fixes the batch to one image.
    name, batch = ("images", 64) if BACKEND == "tensorflow" else ("args_0", 1)
    assert interpreter.get_signature_list()["serving_default"] == {
        "inputs": [name],
        "outputs": ["cluster", "distance", "embedding"],
    }
    images = shapes_rgb()
    runner = interpreter.get_signature_runner()
    parts = [runner(**{name: images[i : i + batch]}) for i in range(0, len(images), batch)]
    outputs = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
    assert_matches_assign(outputs, sobel_run, images)


@_writes("saved_model")
def test_the_saved_model_gives_assigns_clusters(sobel_run, tmp_path):
    import tensorflow as tf

    path = sobel_run.export_model(tmp_path / "saved")
    images = shapes_rgb()
    loaded = tf.saved_model.load(str(path))  # kept: its functions need its variables
    outputs = {key: value.numpy() for key, value in loaded.serve(images).items()}
    assert_matches_assign(outputs, sobel_run, images)
    # Exported again over itself: replaced whole, nothing left beside it.
    sobel_run.export_model(path)
    assert sorted(os.listdir(tmp_path)) == ["saved"]


def test_a_format_this_backend_cannot_write_is_refused_naming_what_it_can(sobel_run, tmp_path):
    own = [name for name, backends in deployment.PRODUCERS.items() if BACKEND in backends]
    for file_format, suffix in deployment.SUFFIXES.items():
        if BACKEND in deployment.PRODUCERS[file_format]:
            continue
        producers = " or ".join(deployment.PRODUCERS[file_format])
        with pytest.raises(deployment.ExportError) as refusal:
            sobel_run.export_model(tmp_path / f"model{suffix or ''}", file_format)
        assert f"it exports {', '.join(own)}" in str(refusal.value)
        assert f"on the {producers} backend" in str(refusal.value)
    assert os.listdir(tmp_path) == []


def test_a_format_whose_packages_are_missing_is_refused_naming_what_to_install(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    pip_names = {"litert_torch": "litert-torch"}
    needing = {f: p[BACKEND] for f, p in deployment.PRODUCERS.items() if p.get(BACKEND)}
    assert needing  # every backend writes a format that needs packages
    for file_format, packages in needing.items():
        install = " ".join(pip_names.get(name, name) for name in packages)
        with pytest.raises(deployment.ExportError, match=f"pip install {install}\\.$"):
            deployment.check_format(file_format)


def test_bad_paths_and_formats_are_refused_before_anything_is_written(sobel_run, tmp_path):
    refusals = {
        "model.h5": "no model format has the suffix '.h5'",
        sobel_run.directory.path / "model.keras": "is inside the run's folder",
        sobel_run.directory.path: "is inside the run's folder",
    }
    for path, message in refusals.items():
        with pytest.raises(deployment.ExportError, match=message):
            sobel_run.export_model(tmp_path / path)
    with pytest.raises(deployment.ExportError, match="Unknown model format 'tflite'"):
        sobel_run.export_model(tmp_path / "model.tflite", "tflite")
    with pytest.raises(deployment.ExportError, match="The keras format's file name ends in"):
        sobel_run.export_model(tmp_path / "model.onnx", "keras")
    (tmp_path / "folder.keras").mkdir()
    with pytest.raises(deployment.ExportError, match="folder.keras is a folder"):
        sobel_run.export_model(tmp_path / "folder.keras")
    with pytest.raises(ValueError, match=r"image_shape must be \(height, width, 3\)"):
        sobel_run.to_model(image_shape=(32, 32, 1))
    with pytest.raises(ValueError, match="dtype must be 'uint8' or 'float32'"):
        sobel_run.to_model(dtype="int8")
    assert sorted(os.listdir(tmp_path)) == ["folder.keras"]
    if "saved_model" in [f for f, b in deployment.PRODUCERS.items() if BACKEND in b]:
        (tmp_path / "notes").mkdir()
        (tmp_path / "notes" / "todo.txt").write_text("mine")
        with pytest.raises(deployment.ExportError, match="a folder that holds no SavedModel"):
            sobel_run.export_model(tmp_path / "notes")


def test_the_command_exports_the_model_and_replaces_an_existing_one(shared_digits_run, tmp_path):
    out = tmp_path / "clusterer.keras"
    out.write_text("an older export")
    result = invoke("export", shared_digits_run, "--model", out)
    assert result.exit_code == 0, result.output
    assert "the run as a keras model (10 clusters): 8x8x1 uint8 images" in result.output
    assert sorted(os.listdir(tmp_path)) == ["clusterer.keras"]  # no temporary left
    model = keras.saving.load_model(out)
    images = kdc.Run.open(shared_digits_run).data().x_train[:32]
    assert_matches_assign(model(images), kdc.Run.open(shared_digits_run), images)


@pytest.mark.backend_independent
def test_the_command_refuses_bad_model_exports_with_a_message(copy_of_shared_run, tmp_path):
    run = copy_of_shared_run
    refusals = [
        (["--model", tmp_path / "m.keras", "--out", "t.csv"], "--out: for tables, not --model"),
        (["--model", tmp_path / "m.keras", "--format", "csv"], "--format csv: for tables"),
        (["--format", "onnx"], "--format onnx goes with --model"),
        (["--model", tmp_path / "m.bin"], "no model format has the suffix '.bin'"),
        (["--model", run / "deploy.keras"], "is inside the run's folder"),
    ]
    for options, message in refusals:
        result = invoke("export", run, *options)
        assert result.exit_code != 0 and message in result.output, (options, result.output)
    (run / RunDirectory.CLUSTERING).write_bytes(b"PK\x03\x04 cut short")
    result = invoke("export", run, "--model", tmp_path / "m.keras")
    assert result.exit_code != 0
    assert "clustering.npz is damaged" in result.output and "final clustering is lost" in (
        result.output
    )
    (run / RunDirectory.CLUSTERING).unlink()
    result = invoke("export", run, "--model", tmp_path / "m.keras")
    assert result.exit_code != 0 and "has no final clustering (clustering.npz)" in result.output
    assert os.listdir(tmp_path) == ["shared-copy"]
    assert json.loads((run / RunDirectory.SUMMARY).read_text())  # the run is untouched
