"""Runs from Python: a `fit` recorded by `RunRecorder`, killed, and resumed to the same result."""

import json

import keras
import numpy as np
import pytest

import keras_deepcluster as kdc
from keras_deepcluster import RunDirectory


class Crash(keras.callbacks.Callback):
    """Loses the process's state after an epoch, as a dead notebook kernel does."""

    def __init__(self, after_epoch):
        super().__init__()
        self.after_epoch = after_epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.after_epoch:
            raise SystemExit("the kernel died")


def fit(directory, images, labels, epochs=4, crash_after=None):
    """A user's notebook cell: everything built from scratch, then fit with a recorder."""
    keras.utils.clear_session()
    views = kdc.ImageViews.for_dataset("mnist", scale=(0.6, 1.0))
    data = kdc.PseudoLabelDataset(images, views, batch_size=32, seed=3)
    model = kdc.DeepCluster(kdc.backbones.lenet(seed=3), num_clusters=4, weight_decay=1e-4)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    reclustering = kdc.Reclustering(data, labels=labels, seed=3)
    callbacks = [reclustering, kdc.RunRecorder(directory, reclustering), kdc.StopOnNaN()]
    if crash_after is not None:
        callbacks.append(Crash(crash_after))
    return model.fit(data, epochs=epochs, verbose=0, callbacks=callbacks)


def test_a_killed_fit_resumes_to_the_uninterrupted_result(tmp_path, shapes):
    images, labels = shapes(96)
    fit(tmp_path / "whole", images, labels)
    whole = RunDirectory(tmp_path / "whole")

    with pytest.raises(SystemExit):
        fit(tmp_path / "killed", images, labels, crash_after=1)
    killed = RunDirectory(tmp_path / "killed")
    assert not killed.is_finished and killed.read_checkpoint()["epoch"] == 1
    assert [row["epoch"] for row in killed.history] == [0.0, 1.0]

    history = fit(tmp_path / "killed", images, labels)  # the same cell, run again
    assert history.epoch == [2, 3]  # only the epochs that had not finished
    assert killed.is_finished and not killed.has_checkpoint
    assert killed.summary["resumed_at_epoch"] == 2 and whole.summary["resumed_at_epoch"] is None
    for epoch in range(4):
        np.testing.assert_array_equal(
            killed.read_pseudo_labels(epoch), whole.read_pseudo_labels(epoch), f"epoch {epoch}"
        )
    for resumed, uninterrupted in zip(killed.history, whole.history, strict=True):
        for key in ("loss", "nmi_labels", "nmi_previous", "kmeans_objective", "cluster_max"):
            np.testing.assert_equal(resumed[key], uninterrupted[key], f"{resumed['epoch']} {key}")
    a = keras.saving.load_model(killed.path / RunDirectory.MODEL)
    b = keras.saving.load_model(whole.path / RunDirectory.MODEL)
    for x, y in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.backend_independent
def test_recorder_refuses_another_runs_directory(tmp_path, shapes):
    images, labels = shapes(64)
    fit(tmp_path / "run", images, labels, epochs=1)
    config = (tmp_path / "run" / RunDirectory.CONFIG).read_text()
    assert "[fit]" in config and "seed = 3" in config and "images = 64" in config
    error = kdc.runs.run_directory.RunDirectoryError
    with pytest.raises(error, match="already holds this run"):
        fit(tmp_path / "run", images, labels, epochs=1)
    error = kdc.runs.run_directory.RunDirectoryError
    with pytest.raises(error, match="a run of other settings"):
        fit(tmp_path / "run", images[:48], labels[:48], epochs=1)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep me")
    with pytest.raises(
        kdc.runs.run_directory.RunDirectoryError, match="not empty and holds no run"
    ):
        fit(tmp_path / "notes", images, labels, epochs=1)
    assert (tmp_path / "notes" / "mine.txt").read_text() == "keep me"


def test_train_runs_a_recipe_end_to_end_and_resumes(tmp_path, monkeypatch):
    recipe = kdc.load_recipe("digits").replace(limit=200, epochs=3, clusters=5, batch_size=32)
    run = kdc.train(recipe, tmp_path / "run")
    assert run.is_finished and len(run.history) == 3
    summary = json.loads((tmp_path / "run" / RunDirectory.SUMMARY).read_text())
    assert summary["recipe"] == "digits" and summary["images"] == 200
    assert summary["final"] == run.history[-1] | {"epoch": 2.0}
    error = kdc.runs.run_directory.RunDirectoryError
    with pytest.raises(error, match="already holds a finished"):
        kdc.train(recipe, tmp_path / "run")
    error = kdc.runs.run_directory.RunDirectoryError
    with pytest.raises(error, match="already finished"):
        kdc.train(None, tmp_path / "run", resume=True)

    # Killed after epoch 0, then resumed with the run's own settings.
    monkeypatch.setattr(
        kdc.runs.callbacks.RunRecorder,
        "on_epoch_end",
        _then_die(kdc.runs.callbacks.RunRecorder.on_epoch_end, after_epoch=0),
    )
    with pytest.raises(SystemExit):
        kdc.train(recipe, tmp_path / "again")
    monkeypatch.undo()
    error = kdc.runs.run_directory.RunDirectoryError
    with pytest.raises(error, match="a run of other settings"):
        kdc.train(recipe.replace(seed=1), tmp_path / "again", resume=True)
    notes = []
    again = kdc.train(None, tmp_path / "again", resume=True, on_note=notes.append)
    assert "resuming after epoch 0" in notes
    for epoch in range(3):
        np.testing.assert_array_equal(
            again.read_pseudo_labels(epoch), run.read_pseudo_labels(epoch)
        )


def _then_die(on_epoch_end, after_epoch):
    def wrapped(self, epoch, logs=None):
        on_epoch_end(self, epoch, logs)
        if epoch == after_epoch:
            raise SystemExit("killed")

    return wrapped
