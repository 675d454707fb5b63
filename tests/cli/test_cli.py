"""The `deepcluster` command, through click's CliRunner (in process, current backend)."""

import csv
import json
import os

import keras
import numpy as np
import pytest
import tomllib
from conftest import invoke

from keras_deepcluster import data
from keras_deepcluster.evaluation import label_entropy, nmi
from keras_deepcluster.runs.run_directory import RunDirectory

# Refused before Keras runs (options, recipes, data sources, listings): on one backend.
independent = pytest.mark.backend_independent

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
# A small, quick digits run: 300 images, 2 epochs of 1,200 draws.
SMALL = ["--limit", "300", "--epochs", "2", "-k", "5"]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "digits"
    result = invoke("train", "digits", *SMALL, "--out", out)
    assert result.exit_code == 0, result.output
    return out, result.output


def test_train_writes_a_complete_run(digits_run):
    out, output = digits_run
    assert "digits on " + keras.backend.backend() in output and "NMI labels" in output
    config = tomllib.loads((out / "config.toml").read_text())
    assert config["model"]["clusters"] == 5 and config["data"]["limit"] == 300
    run = RunDirectory(out)
    rows = run.read_history()
    assert [r["epoch"] for r in rows] == [0, 1]
    for key in (
        "loss",
        "cross_entropy",
        "weight_decay",
        "nmi_labels",
        "nmi_previous",
        "label_entropy",
        "kmeans_objective",
        "seconds_features",
        "seconds_kmeans",
        "seconds_train",
        "seconds_epoch",
    ):
        assert key in rows[0], key
    assert 0 < rows[1]["nmi_labels"] <= 1 and 0 < rows[1]["nmi_previous"] <= 1
    assert rows[0]["seconds_epoch"] >= rows[0]["seconds_train"] > 0
    for epoch in (0, 1):
        labels = run.read_pseudo_labels(epoch)
        assert labels.shape == (300,) and set(np.unique(labels)) <= set(range(5))
    # The metrics, recomputed from the files: the pseudo-labels and the digits' own labels
    # (the run's images are the first 300).
    truth = data.load("digits").y_train[:300]
    first, last = run.read_pseudo_labels(0), run.read_pseudo_labels(1)
    assert rows[1]["nmi_labels"] == pytest.approx(nmi(last, truth), rel=1e-6)
    assert rows[1]["nmi_previous"] == pytest.approx(nmi(last, first), rel=1e-6)
    assert rows[1]["label_entropy"] == pytest.approx(label_entropy(last, truth), rel=1e-6)
    # The summary's final row is history.csv's last line, read as text.
    with open(out / "history.csv", newline="") as f:
        last_line = list(csv.DictReader(f))[-1]
    summary = run.read_json("summary.json")
    assert summary["images"] == 300 and summary["epochs"] == 2
    assert summary["final"]["epoch"] == int(last_line["epoch"]) == 1
    for key in ("loss", "nmi_labels", "nmi_previous", "kmeans_objective"):
        assert summary["final"][key] == pytest.approx(float(last_line[key]), rel=1e-6), key
    assert summary["final"]["nmi_labels"] == pytest.approx(nmi(last, truth), rel=1e-6)
    model = keras.saving.load_model(out / "model.keras")
    assert model.num_clusters == 5 and model.backbone.input_shape == (None, 32, 32, 1)


def test_same_seed_same_run(digits_run, tmp_path):
    out, _ = digits_run
    result = invoke("train", "digits", *SMALL, "--out", tmp_path / "again")
    assert result.exit_code == 0, result.output
    first, again = RunDirectory(out), RunDirectory(tmp_path / "again")
    for epoch in (0, 1):
        np.testing.assert_array_equal(
            first.read_pseudo_labels(epoch), again.read_pseudo_labels(epoch)
        )
    assert [r["nmi_labels"] for r in first.read_history()] == [
        r["nmi_labels"] for r in again.read_history()
    ]


def test_probe_trained_and_random(digits_run):
    out, _ = digits_run
    # 240 images are one step per epoch: after two steps the classifier can still put
    # every image in one class (10 %, seen with one thread), after five it cannot.
    result = invoke("probe", out, "--epochs", "5")
    assert result.exit_code == 0, result.output
    trained = json.loads((out / "probe.json").read_text())
    assert trained["model"] == "trained" and trained["layer"] == "conv_2"
    assert trained["feature_dim"] == 1600 and len(trained["epoch_accuracies"]) == 5
    assert trained["test_images"] == 60 and trained["train_images"] == 240  # 20 % held out
    assert 0.15 < trained["accuracy"] <= 1  # 10 classes: chance is 0.1
    result = invoke("probe", out, "--epochs", "1", "--random", "--layer", "linear_1")
    assert result.exit_code == 0, result.output
    random = json.loads((out / "probe_random.json").read_text())
    assert random["model"] == "random" and random["feature_dim"] == 120
    assert "accuracy" in result.output


def test_refuses_to_overwrite_a_run(digits_run, copy_of_shared_run):
    out, _ = digits_run
    before = (out / "history.csv").read_bytes()
    result = invoke("train", "digits", *SMALL, "--out", out)
    assert result.exit_code == 1
    assert "already holds a finished run; pass --overwrite" in result.output
    assert (out / "history.csv").read_bytes() == before
    copy = copy_of_shared_run  # a finished `train digits --limit 100 --epochs 1`
    result = invoke(
        "train",
        "digits",
        "--limit",
        "100",
        "--epochs",
        "1",
        "-k",
        "4",
        "--out",
        copy,
        "--overwrite",
    )
    assert result.exit_code == 0, result.output
    assert tomllib.loads((copy / "config.toml").read_text())["model"]["clusters"] == 4


@independent
@pytest.mark.parametrize(
    "args, message",
    [
        (["-k", "1"], "'--clusters' / '-k': must be >= 2; got 1"),
        (["--lr", "-0.1"], "'--lr': must be > 0; got -0.1"),
        (["--epochs", "0"], "'--epochs': must be >= 1; got 0"),
        (["--epochs", "two"], "'two' is not a valid integer"),
        (["--pca", "wide"], "'wide' is neither an integer nor 'none'"),
        (["--epochs", "2", "--halt-after", "5"], "halt_after=5 is larger than epochs=2"),
        (["--backend", "theano"], "'theano' is not one of"),
        (["--data-dir", "/no/such/dir"], "'/no/such/dir' does not exist"),
    ],
)
def test_bad_options(tmp_path, args, message):
    result = invoke("train", "digits", *args, "--out", tmp_path / "run")
    assert result.exit_code == 2
    assert message in " ".join(result.output.split()), result.output
    assert not (tmp_path / "run").exists()


@independent
def test_unknown_recipe_lists_known_ones(tmp_path):
    result = invoke("train", "fmnist", "--out", tmp_path / "run")
    assert result.exit_code == 2
    assert "Unknown recipe 'fmnist'; known recipes: cifar10, digits, fashion_mnist" in " ".join(
        result.output.split()
    )


@independent
def test_bad_recipe_file_names_key_and_file(tmp_path):
    recipe = tmp_path / "mine.toml"
    recipe.write_text('[data]\ndataset = "digits"\nsource = "digits"\n[model]\nclusterz = 3\n')
    result = invoke("train", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 2
    assert "mine.toml: unknown key 'clusterz' in [model]" in " ".join(result.output.split())


@independent
def test_unloadable_data_writes_nothing(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke(
        "train", "digits", "--source", "idx", "--data-dir", empty, "--out", tmp_path / "run"
    )
    assert result.exit_code == 1
    assert (
        "No train-images-idx3-ubyte[.gz] in" in result.output and "Traceback" not in result.output
    )
    assert not (tmp_path / "run").exists()
    # The recipe refuses an unknown source when it loads, before any data is read.
    result = invoke("train", "digits", "--source", "pickle", "--out", tmp_path / "run")
    assert result.exit_code == 2
    assert (
        "[data] source = 'pickle' is not one of tfds, idx, npz, folder, digits, cache"
        in " ".join(result.output.split())
    )
    assert not (tmp_path / "run").exists()


@independent
def test_refuses_a_foreign_non_empty_directory(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = invoke("train", "digits", *SMALL, "--out", tmp_path, "--overwrite")
    assert result.exit_code == 1 and "not empty and holds no run" in result.output
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_backend_cannot_change_after_keras_is_imported(tmp_path):
    other = next(b for b in ("tensorflow", "jax", "torch") if b != keras.backend.backend())
    result = invoke("train", "digits", "--backend", other, "--out", tmp_path / "run")
    assert result.exit_code == 2 and f"set KERAS_BACKEND={other}" in result.output
    same = invoke(
        "train",
        "digits",
        "--backend",
        keras.backend.backend(),
        "--limit",
        "64",
        "--epochs",
        "1",
        "--out",
        tmp_path / "run",
    )
    assert same.exit_code == 0, same.output


def test_train_on_an_unlabelled_image_folder(tmp_path, shapes, write_pngs):
    write_pngs(tmp_path / "images", shapes(40)[0])
    out = tmp_path / "run"
    result = invoke(
        "train",
        "digits",
        "--source",
        "folder",
        "--data-dir",
        tmp_path / "images",
        "-k",
        "3",
        "--epochs",
        "2",
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    assert "40 training images" in result.output and "unlabelled" in result.output
    rows = RunDirectory(out).read_history()
    assert len(rows) == 2 and "nmi_labels" not in rows[0] and rows[1]["nmi_previous"] > 0
    result = invoke("probe", out)
    assert (
        result.exit_code == 1
        and "have no labels; the linear probe needs labelled images" in result.output
    )


def test_tfds_recipe_with_mock_data(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=64):
        result = invoke(
            "train",
            "mnist",
            "--min-steps",
            "none",
            "--limit",
            "64",
            "--epochs",
            "1",
            "-k",
            "3",
            "--out",
            tmp_path / "run",
        )
    assert result.exit_code == 0, result.output
    assert RunDirectory(tmp_path / "run").read_pseudo_labels(0).shape == (64,)


@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST), reason="needs Debian's dataset-fashion-mnist")
def test_fashion_mnist_from_idx(tmp_path):
    out = tmp_path / "run"
    result = invoke(
        "train",
        "fashion_mnist",
        "--min-steps",
        "none",
        "--source",
        "idx",
        "--data-dir",
        FASHION_MNIST,
        "--limit",
        "1000",
        "--epochs",
        "1",
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    nmi = RunDirectory(out).read_history()[0]["nmi_labels"]
    assert 0.2 < nmi < 0.7  # random LeNet features, k=5: the authors measure 0.31-0.43


@independent
def test_recipes_and_datasets_commands(tmp_path, shapes, write_pngs):
    result = invoke("recipes")
    assert result.exit_code == 0
    for name in ("cifar10", "digits", "fashion_mnist", "mnist", "svhn", "alexnet_micro", "relu_5"):
        assert name in result.output
    write_pngs(tmp_path / "images", shapes(3)[0])
    result = invoke("datasets", "--data-dir", tmp_path / "images")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    digits = next(line for line in lines if line.strip("│ ").startswith("digits"))
    folder = next(line for line in lines if line.strip("│ ").startswith("folder"))
    idx = [line for line in lines if line.strip("│ ").startswith("idx")][-1]  # --data-dir's
    assert "│ yes " in digits and "│ yes " in folder
    assert "│ no: no train-images-idx3-ubyte[.gz] in" in idx  # and the reason
    # The path is wrapped over lines, never cut short, however long.
    assert str(tmp_path) in "".join(line.split("│")[3].strip() for line in lines if "│" in line)


@independent
@pytest.mark.parametrize("command", [[], ["train"], ["probe"], ["recipes"], ["datasets"]])
def test_help_has_examples(command):
    result = invoke(*command, "--help")
    assert result.exit_code == 0 and "Example" in result.output
