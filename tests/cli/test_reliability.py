"""Resume after a crash, interrupts, NaN safety and degenerate features.

The kill/interrupt tests run `deepcluster train` in a subprocess (current
KERAS_BACKEND) that sends itself the signal at a known point of the run, and
compare the resumed run with an uninterrupted one.
"""

import csv
import errno
import signal
import sys

import numpy as np
import pytest
from conftest import invoke, signalled_run

from keras_deepcluster import data
from keras_deepcluster.evaluation import nmi
from keras_deepcluster.method import clustering
from keras_deepcluster.runs.recipe import load_recipe
from keras_deepcluster.runs.run_directory import RunDirectory

independent = pytest.mark.backend_independent


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    """300 digits, 4 epochs of 600 draws (19 steps of 32 images)."""
    path = tmp_path_factory.mktemp("recipe") / "slow_digits.toml"
    path.write_text(
        load_recipe("digits")
        .replace(name="slow_digits", limit=300, epochs=4, clusters=5, epoch_multiplier=2)
        .to_toml()
    )
    return path


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, recipe):
    out = tmp_path_factory.mktemp("runs") / "whole"
    result = invoke("train", recipe, "--out", out)
    assert result.exit_code == 0, result.output
    return RunDirectory(out)


def history_csv_last_row(run: RunDirectory) -> dict:
    """history.csv's last line, read as text (not through RunDirectory)."""
    with open(run.path / "history.csv", newline="") as f:
        return list(csv.DictReader(f))[-1]


def assert_same_run(resumed: RunDirectory, whole: RunDirectory, resumed_at: int) -> None:
    """The resumed run's files equal the uninterrupted run's, epoch by epoch."""
    for epoch in range(4):
        np.testing.assert_array_equal(
            resumed.read_pseudo_labels(epoch), whole.read_pseudo_labels(epoch)
        )
    a, b = resumed.read_history(), whole.read_history()
    assert [r["epoch"] for r in a] == [0, 1, 2, 3]
    for key in ("nmi_labels", "nmi_previous", "label_entropy", "kmeans_objective", "loss"):
        np.testing.assert_allclose([r[key] for r in a], [r[key] for r in b], rtol=1e-6, err_msg=key)
    # The summary is the resumed run's: its final row is the last line of its history.csv,
    # equal to the uninterrupted run's, and it says where it was resumed.
    summary = resumed.read_json("summary.json")
    last, whole_last = history_csv_last_row(resumed), history_csv_last_row(whole)
    assert summary["final"]["epoch"] == int(last["epoch"]) == int(whole_last["epoch"]) == 3
    for key in ("loss", "nmi_labels", "nmi_previous", "kmeans_objective"):
        assert summary["final"][key] == pytest.approx(float(last[key]), rel=1e-6), key
        assert float(last[key]) == pytest.approx(float(whole_last[key]), rel=1e-6), key
    # ... and its NMI that of the last pseudo-labels file with the digits' labels.
    truth = data.load("digits").y_train[:300]
    assert summary["final"]["nmi_labels"] == pytest.approx(
        nmi(resumed.read_pseudo_labels(3), truth), rel=1e-6
    )
    assert summary["resumed_at_epoch"] == resumed_at
    assert whole.read_json("summary.json")["resumed_at_epoch"] is None


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path, recipe, uninterrupted):
    run = RunDirectory(tmp_path / "killed")
    code, output = signalled_run("training", 2, signal.SIGKILL, "train", recipe, "--out", run.path)
    assert code == -signal.SIGKILL, f"exit code {code}:\n{output[-4000:]}"
    # Killed in epoch 2's training: epochs 0 and 1 are written, and the checkpoint of 1.
    assert not run.is_finished and [r["epoch"] for r in run.read_history()] == [0, 1]
    assert run.read_checkpoint()["epoch"] == 1
    refused = invoke("train", recipe, "--out", run.path)
    assert refused.exit_code == 1, refused.output
    assert "holds an unfinished run" in refused.output and "--resume" in refused.output
    result = invoke("train", recipe, "--resume", run.path)
    assert result.exit_code == 0, result.output
    assert "resuming" in result.output
    assert_same_run(run, uninterrupted, resumed_at=2)
    # The wall time counts the killed process's epochs too.
    epochs = sum(row["seconds_epoch"] for row in run.read_history())
    assert run.read_json("summary.json")["wall_seconds"] >= epochs


# A signal in training lands in the backend's compiled steps (each backend's own case);
# one in the k-means lands in Python and faiss, the same on every backend.
@pytest.mark.parametrize(
    "signal_number, phase",
    [
        pytest.param(signal.SIGINT, "training", id="SIGINT-in-training"),
        pytest.param(signal.SIGTERM, "clustering", marks=independent, id="SIGTERM-in-clustering"),
    ],
)
def test_interrupt_leaves_a_resumable_run(tmp_path, recipe, uninterrupted, signal_number, phase):
    run = RunDirectory(tmp_path / "interrupted")
    code, output = signalled_run(phase, 1, signal_number, "train", recipe, "--out", run.path)
    assert code == 130, f"exit code {code}:\n{output[-4000:]}"
    assert "Traceback" not in output and "interrupted" in output and "--resume" in output
    # Stopped in epoch 1 (its clustering or its training): only epoch 0 is written.
    assert not run.is_finished and run.has_checkpoint
    assert [r["epoch"] for r in run.read_history()] == [0]
    assert run.read_checkpoint()["epoch"] == 0
    result = invoke("train", recipe, "--resume", run.path)
    assert result.exit_code == 0, result.output
    assert_same_run(run, uninterrupted, resumed_at=1)


@independent
def test_an_interrupt_swallowed_by_a_callback_prints_no_traceback(monkeypatch):
    """A signal inside a hook Python cannot raise from (JAX's GC callback) is
    re-raised by the flag, not reported as an ignored exception."""
    from rich.console import Console

    from keras_deepcluster_cli.options import interruptible

    class RaisesWhenCollected:
        def __init__(self, error):
            self.error = error

        def __del__(self):
            raise self.error

    reported = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: reported.append(type(u.exc_value)))
    with interruptible(Console(), "again"):
        RaisesWhenCollected(KeyboardInterrupt())
        RaisesWhenCollected(ValueError("a real bug"))
    assert reported == [ValueError]  # other swallowed errors are still reported
    RaisesWhenCollected(KeyboardInterrupt())
    assert reported == [ValueError, KeyboardInterrupt]  # the usual hook is back outside


@independent
def test_resume_refuses_what_it_cannot_continue(tmp_path, shared_digits_run, copy_of_shared_run):
    result = invoke(
        "train", "digits", "--limit", "100", "--epochs", "1", "--resume", shared_digits_run
    )
    assert result.exit_code == 1 and "already finished" in result.output
    (tmp_path / "empty").mkdir()
    result = invoke("train", "digits", "--resume", tmp_path / "empty")
    assert result.exit_code == 1 and "holds no run" in result.output
    other = copy_of_shared_run  # `train digits --limit 100 --epochs 1`
    (other / "summary.json").unlink()  # pretend it never finished
    result = invoke("train", "mnist", "--resume", other)
    assert result.exit_code == 1 and "a run of recipe 'digits', not 'mnist'" in result.output
    result = invoke("train", "digits", "--limit", "100", "--epochs", "3", "--resume", other)
    assert result.exit_code == 1 and "epochs=3 differs from the run's epochs=1" in result.output


def test_nan_loss_stops_with_the_epoch_and_step(tmp_path):
    out = tmp_path / "nan"
    result = invoke(
        "train", "digits", "--limit", "300", "--epochs", "3", "--lr", "1e30", "--out", out
    )
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "is NaN or inf at epoch 0, step" in text and "Traceback" not in text
    run = RunDirectory(out)
    assert run.is_run and not run.is_finished and not run.has_checkpoint


def test_degenerate_features_fall_back_to_split_clusters():
    identical = np.ones((50, 8), np.float32)
    result = clustering.cluster_features(identical, num_clusters=5, seed=0)
    assert sorted(np.unique(result.labels)) == [0, 1, 2, 3, 4]
    assert result.empty_clusters >= 1
    few = np.repeat(np.eye(3, 8, dtype=np.float32), 10, axis=0)  # 3 distinct points, k=5
    result = clustering.cluster_features(few, num_clusters=5, seed=0)
    assert sorted(np.unique(result.labels)) == [0, 1, 2, 3, 4]


# The bad-input catalogue of docs/reliability.md: cases not covered by the other test files.


def test_full_disk_keeps_the_finished_epochs_resumable(tmp_path, monkeypatch, recipe):
    out, two_epochs = tmp_path / "full", tmp_path / "two_epochs.toml"
    two_epochs.write_text(load_recipe(recipe).replace(epochs=2).to_toml())
    write_history = RunDirectory.write_history

    def disk_full_at_second_epoch(self, rows):
        if len(rows) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        write_history(self, rows)

    monkeypatch.setattr(RunDirectory, "write_history", disk_full_at_second_epoch)
    result = invoke("train", two_epochs, "--out", out)
    assert result.exit_code == 1 and "No space left on device" in result.output
    assert f"--resume {out}" in " ".join(result.output.split())
    run = RunDirectory(out)
    assert len(run.read_history()) == 1 and run.read_checkpoint()["epoch"] == 0
    assert not list(out.rglob(".partial-*"))
    monkeypatch.undo()
    assert invoke("train", two_epochs, "--resume", out).exit_code == 0
    assert run.is_finished and [row["epoch"] for row in run.read_history()] == [0, 1]


def test_an_rgb_folder_is_converted_for_a_grayscale_recipe(tmp_path, shapes, write_pngs):
    gray = shapes(12)[0]
    write_pngs(tmp_path / "rgb", np.repeat(gray[..., None], 3, axis=-1))
    # A folder is converted to the recipe's channels in its image cache.
    result = invoke(
        "train",
        "digits",
        "--source",
        "folder",
        "--data-dir",
        tmp_path / "rgb",
        "-k",
        "2",
        "--epochs",
        "1",
        "--out",
        tmp_path / "a",
    )
    assert result.exit_code == 0, result.output
    assert "12 train images (44, 44, 1)" in result.output  # the mnist views resize to 44


@independent
def test_rgb_images_for_a_grayscale_recipe_and_the_reverse(tmp_path, shapes, write_pngs):
    gray = shapes(12)[0]
    write_pngs(tmp_path / "rgb", np.repeat(gray[..., None], 3, axis=-1))
    # A prepared cache is used as it is: its channels must fit the recipe.
    prepared = invoke(
        "prepare", "folder", "--data-dir", tmp_path / "rgb", "--size", "28", "--out", tmp_path / "c"
    )
    assert prepared.exit_code == 0, prepared.output
    result = invoke(
        "train",
        "digits",
        "--source",
        "cache",
        "--data-dir",
        tmp_path / "c",
        "-k",
        "2",
        "--out",
        tmp_path / "b",
    )
    assert result.exit_code == 1 and "have 3 channel(s) (RGB) but recipe 'digits'" in result.output
    assert "svhn or cifar10" in result.output and not (tmp_path / "b").exists()
    gray_cache = invoke(
        "prepare",
        "folder",
        "--data-dir",
        tmp_path / "rgb",
        "--size",
        "28",
        "--channels",
        "1",
        "--out",
        tmp_path / "g",
    )
    assert gray_cache.exit_code == 0, gray_cache.output
    result = invoke(
        "train",
        "cifar10",
        "--source",
        "cache",
        "--data-dir",
        tmp_path / "g",
        "-k",
        "2",
        "--out",
        tmp_path / "d",
    )
    assert (
        result.exit_code == 1 and "1 channel(s) (grayscale) but recipe 'cifar10'" in result.output
    )
    assert not (tmp_path / "d").exists()


@independent
@pytest.mark.parametrize(
    "args, code, message",
    [
        (
            ["--limit", "20", "-k", "50"],
            1,
            "num_clusters=50 is larger than the number of images (20)",
        ),
        (
            ["--limit", "1", "-k", "2", "--batch-size", "2"],
            1,
            "The data has 1 image; clustering needs at least two",
        ),
        (["--epochs", "-1"], 2, "'--epochs': must be >= 1; got -1"),
        (["--limit", "0"], 2, "'--limit': must be >= 1; got 0"),
        (["--halt-when-stable", "1.5"], 2, "must be in (0, 1]; got 1.5"),
        # Was an abort (std::bad_alloc) leaving a half-made run directory.
        (
            ["--batch-size", "100000", "--epochs", "1"],
            1,
            "batch_size=100000 is larger than the 7188 images an epoch draws (1797 images x 4);"
            " use a batch size of at most 7188",
        ),
    ],
)
def test_more_bad_training_options(tmp_path, args, code, message):
    result = invoke("train", "digits", *args, "--out", tmp_path / "run")
    assert result.exit_code == code and message in " ".join(result.output.split()), result.output
    assert not (tmp_path / "run").exists()


def test_pca_wider_than_the_number_of_images(tmp_path, write_pngs):
    rng = np.random.default_rng(0)
    write_pngs(tmp_path / "photos", rng.integers(0, 256, (100, 32, 32, 3), dtype=np.uint8))
    args = ["--source", "folder", "--data-dir", tmp_path / "photos", "-k", "3", "--epochs", "1"]
    args += ["--min-steps", "none"]
    result = invoke("train", "cifar10", *args, "--out", tmp_path / "run")
    assert result.exit_code == 1, result.output
    message = " ".join(result.output.split())
    assert "pca_dim=256 needs at least 256 images, but the data has 100" in message
    assert "use at most 100 (--pca 100) or none (--pca none)" in message
    assert not (tmp_path / "run").exists()
    result = invoke("train", "cifar10", *args, "--pca", "8", "--out", tmp_path / "ok")
    assert result.exit_code == 0, result.output


def test_memory_is_checked_before_training(shapes, monkeypatch):
    import keras_deepcluster as kdc
    from keras_deepcluster.platform import memory

    images, _ = shapes(64)
    data = kdc.PseudoLabelDataset(images, kdc.ImageViews.for_dataset("mnist"), batch_size=32)
    model = kdc.DeepCluster(kdc.backbones.lenet(seed=0), num_clusters=4)
    # LeNet's layer outputs for one 32x32 image: 6x28x28 conv/BN/ReLU, 6x14x14 pool, ...
    assert memory.activation_floats(model.backbone) > 3 * 6 * 28 * 28
    reclustering = kdc.Reclustering(data)
    reclustering.check(model)  # fits
    monkeypatch.setattr(memory, "available_host_bytes", lambda: 40_000)
    with pytest.raises(ValueError, match=r"features of 64 images \(84 dimensions\) needs about 43"):
        reclustering.check(model)
    monkeypatch.setattr(memory, "available_host_bytes", lambda: 10**6)
    monkeypatch.setattr(memory, "device_or_host_bytes", lambda: 10**6)
    with pytest.raises(ValueError, match="A training batch of 32 images needs about .* MB, but"):
        reclustering.check(model)


@independent
def test_labels_of_the_wrong_length(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((10, 8, 8), np.uint8), y=np.zeros(9, np.int64))
    result = invoke(
        "train",
        "digits",
        "--source",
        "npz",
        "--data-dir",
        tmp_path / "d.npz",
        "--out",
        tmp_path / "run",
    )
    assert result.exit_code == 1 and "the train split has 10 images but 9 labels" in result.output


def test_probe_bad_layer_and_unfinished_run(tmp_path, copy_of_shared_run):
    out = copy_of_shared_run  # a finished `train digits --limit 100 --epochs 1`
    result = invoke("probe", out, "--layer", "conv_9")
    assert result.exit_code == 1 and "has no layer 'conv_9'; its layers are" in result.output
    (out / "model.keras").unlink()
    result = invoke("probe", out)
    assert result.exit_code == 1 and "holds no trained model" in result.output
    (tmp_path / "empty").mkdir()
    result = invoke("probe", tmp_path / "empty")
    assert result.exit_code == 1 and "holds no run" in result.output


def test_identical_images_train_with_a_warning(tmp_path):
    # 400 equal images: every feature row is the same, k-means fills one cluster of five.
    images = np.full((400, 8, 8), 77, np.uint8)
    np.savez(tmp_path / "same.npz", x_train=images)
    args = ["--source", "npz", "--data-dir", tmp_path / "same.npz", "-k", "5", "--epochs", "1"]
    result = invoke("train", "digits", *args, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert "Warning: Epoch 0: k-means left 4 of 5 clusters empty" in result.output, result.output
    assert "Traceback" not in result.output and "warnings.warn" not in result.output
