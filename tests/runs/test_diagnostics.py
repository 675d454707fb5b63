"""Clustering diagnostics while training: TensorBoard event files and metrics.jsonl."""

import collections
import os

import keras
import numpy as np
import pytest
from conftest import invoke

import keras_deepcluster as kdc
from keras_deepcluster.runs.diagnostics import (
    CLUSTER_SIZES_TAG,
    EVENT_FILE_SUFFIX,
    METRICS_FILE,
    ClusteringDiagnostics,
    check_log_dir,
    read_metrics,
    scalar_tag,
)
from keras_deepcluster.runs.recipe import RecipeError
from keras_deepcluster.runs.run_directory import RunDirectory

# A tiny `train digits`: two epochs, so that NMI(t, t-1) has a value in the second.
RECIPE = dict(limit=60, epochs=2, clusters=5)


def read_tensorboard(folder):
    """What TensorBoard shows of `folder`: {tag: [(step, value)]} and {tag: [(step, histogram)]}."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "histograms": 0})
    events.Reload()
    tags = events.Tags()
    scalars = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in tags["scalars"]}
    histograms = {
        tag: [(e.step, e.histogram_value) for e in events.Histograms(tag)]
        for tag in tags["histograms"]
    }
    return scalars, histograms


def written_steps(folder):
    """Every (tag, step) written to the event files in `folder`, as many times as written."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    steps = collections.Counter()
    for path in folder.glob(f"events.out.tfevents.*{EVENT_FILE_SUFFIX}"):
        for event in LegacyEventFileLoader(str(path)).Load():
            steps.update((value.tag, event.step) for value in event.summary.value)
    return steps


def check_against_history(run, tensorboard):
    """The event files and metrics.jsonl hold history.csv's epochs and values, each once."""
    history = run.read_history()
    rows = read_metrics(run.path / METRICS_FILE)
    assert [row["epoch"] for row in rows] == [row["epoch"] for row in history]
    scalars, histograms = read_tensorboard(tensorboard)
    expected_tags = set()
    for row, past in zip(rows, history, strict=True):
        epoch = row["epoch"]
        for key, value in row.items():
            if key in ("epoch", "wall_time", "cluster_sizes"):
                continue
            np.testing.assert_equal(np.nan if value is None else value, past[key], key)
            if value is not None:
                expected_tags.add(scalar_tag(key))
                assert (epoch, pytest.approx(value, rel=1e-6)) in scalars[scalar_tag(key)]
        sizes = row["cluster_sizes"]
        assert len(sizes) == 5 and sum(sizes) == 60
        assert (min(sizes), max(sizes)) == (past["cluster_min"], past["cluster_max"])
        step, histogram = histograms[CLUSTER_SIZES_TAG][int(epoch)]
        assert step == epoch and histogram.num == 5 and histogram.sum == 60
        assert (histogram.min, histogram.max) == (min(sizes), max(sizes))
    assert set(scalars) == expected_tags
    for tag, values in scalars.items():
        assert [step for step, _ in values] == sorted({step for step, _ in values}), tag
    for tag in {"training/loss", "clustering/nmi_previous", "clustering/empty_clusters"}:
        assert tag in scalars
    for tag in {"clustering/kmeans_objective", "labels/nmi_labels", "time/seconds_train"}:
        assert tag in scalars
    nmi_previous = [step for step, _ in scalars["clustering/nmi_previous"]]
    assert nmi_previous == [row["epoch"] for row in rows[1:]]  # NaN, so left out, in epoch 0
    assert set(written_steps(tensorboard).values()) == {1}  # no epoch twice


def test_train_writes_the_history_for_tensorboard_and_as_json_lines(tmp_path):
    recipe = kdc.load_recipe("digits").replace(tensorboard=str(tmp_path / "tb"), **RECIPE)
    run = kdc.train(recipe, tmp_path / "run")
    check_against_history(run, tmp_path / "tb" / "run")


def test_sweep_writes_one_tensorboard_folder_per_run(tmp_path):
    result = invoke(
        "sweep", "digits", "-k", "5", "--seeds", "0,1", "--limit", "60", "--epochs", "2",
        "--tensorboard", tmp_path / "tb", "--out", tmp_path / "grid",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    names = ["k5-seed0-haltnone-pcanone", "k5-seed1-haltnone-pcanone"]
    assert sorted(path.name for path in (tmp_path / "tb" / "grid").iterdir()) == names
    for name in names:
        check_against_history(
            RunDirectory(tmp_path / "grid" / name), tmp_path / "tb" / "grid" / name
        )
    # The two seeds' curves differ: each folder holds its own run's record.
    losses = [
        read_tensorboard(tmp_path / "tb" / "grid" / name)[0]["training/loss"] for name in names
    ]
    assert losses[0] != losses[1]


@pytest.mark.backend_independent
def test_sweep_refuses_a_tensorboard_folder_inside_a_file_before_anything(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    result = invoke(
        "sweep", "digits", "--tensorboard", tmp_path / "file" / "tb", "--out", tmp_path / "grid"
    )
    assert result.exit_code == 1, result.output
    assert "cannot be created" in result.output and "(--tensorboard)" in result.output
    assert not (tmp_path / "grid").exists()


def test_a_resumed_run_continues_the_same_record(tmp_path, monkeypatch):
    recipe = kdc.load_recipe("digits").replace(
        tensorboard=str(tmp_path / "tb"), **{**RECIPE, "epochs": 3}
    )
    # Killed at the end of epoch 1 after the diagnostics recorded it, before the
    # checkpoint: the resumed run trains epoch 1 again and must not record it twice.
    on_epoch_end = kdc.runs.callbacks.RunRecorder.on_epoch_end

    def die_at_epoch_1(self, epoch, logs=None):
        if epoch == 1:
            raise SystemExit("killed")
        on_epoch_end(self, epoch, logs)

    monkeypatch.setattr(kdc.runs.callbacks.RunRecorder, "on_epoch_end", die_at_epoch_1)
    with pytest.raises(SystemExit):
        kdc.train(recipe, tmp_path / "run")
    monkeypatch.undo()
    tensorboard = tmp_path / "tb" / "run"
    assert [row["epoch"] for row in read_metrics(tmp_path / "run" / METRICS_FILE)] == [0, 1]
    assert {step for _, step in written_steps(tensorboard)} == {0, 1}

    run = kdc.train(None, tmp_path / "run", resume=True)
    assert run.summary["resumed_at_epoch"] == 1
    check_against_history(run, tensorboard)
    assert len(list(tensorboard.glob(f"*{EVENT_FILE_SUFFIX}"))) == 1  # the earlier one replaced


def test_the_callback_in_a_plain_fit(tmp_path, shapes):
    images, labels = shapes(64)
    views = kdc.ImageViews.for_dataset("mnist")
    data = kdc.PseudoLabelDataset(images, views, batch_size=32, seed=0)
    model = kdc.DeepCluster(kdc.backbones.lenet(seed=0), num_clusters=4)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    reclustering = kdc.Reclustering(data, labels=labels, seed=0)
    diagnostics = ClusteringDiagnostics(reclustering, log_dir=tmp_path / "logs")
    history = model.fit(data, epochs=2, verbose=0, callbacks=[reclustering, diagnostics])
    rows = read_metrics(tmp_path / "logs" / METRICS_FILE)
    assert rows == diagnostics.rows and [row["epoch"] for row in rows] == [0, 1]
    for key in ("loss", "nmi_labels", "kmeans_objective", "seconds_train"):
        assert [row[key] for row in rows] == history.history[key]
    scalars, _ = read_tensorboard(tmp_path / "logs")
    assert [step for step, _ in scalars["labels/acc_labels"]] == [0, 1]


@pytest.mark.backend_independent
def test_a_tensorboard_folder_that_cannot_be_written_stops_train_before_anything(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    recipe = kdc.load_recipe("digits").replace(**RECIPE)
    with pytest.raises(ValueError, match="TensorBoard folder .*file is a file"):
        kdc.train(recipe.replace(tensorboard=str(tmp_path / "file")), tmp_path / "run")
    with pytest.raises(ValueError, match="cannot be created: .*file is a file"):
        kdc.train(recipe.replace(tensorboard=str(tmp_path / "file" / "tb")), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    result = invoke("train", "digits", "--tensorboard", tmp_path / "file" / "tb", "--out", "run")
    assert result.exit_code == 1 and "is a file; give another folder (--tensorboard)" in (
        result.output
    )
    result = invoke("train", "digits", "--tensorboard", tmp_path / "file", "--out", "run")
    assert result.exit_code == 2 and "is a file" in result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.backend_independent
def test_check_log_dir_refuses_a_folder_without_write_permission(tmp_path, monkeypatch):
    check_log_dir(tmp_path / "new" / "tb")  # created when written
    # As root (CI) permissions never refuse; the check asks os.access.
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(ValueError, match=f"no write permission in {tmp_path}"):
        check_log_dir(tmp_path / "new" / "tb")


@pytest.mark.backend_independent
def test_the_recipe_key_is_a_path_checked_on_load(tmp_path):
    recipe = kdc.load_recipe("digits").replace(tensorboard="runs/tensorboard")
    (tmp_path / "r.toml").write_text(recipe.to_toml())
    assert kdc.load_recipe(tmp_path / "r.toml").tensorboard == "runs/tensorboard"
    with pytest.raises(RecipeError, match=r"\[training\] tensorboard must be a string"):
        recipe.replace(tensorboard=3)
    with pytest.raises(ValueError, match="a log_dir, a metrics_file or both"):
        ClusteringDiagnostics(kdc.Reclustering(_tiny_data()))


@pytest.mark.backend_independent
def test_read_metrics_leaves_out_a_line_cut_short_and_refuses_a_garbled_one(tmp_path):
    path = tmp_path / METRICS_FILE
    path.write_text('{"epoch": 0, "loss": null}\n{"epoch": 1, "lo')
    assert read_metrics(path) == [{"epoch": 0, "loss": None}]  # NaN is written as null
    path.write_text('{"epoch": 0}\nnot json\n{"epoch": 2}\n')
    with pytest.raises(ValueError, match="line 2: not a JSON object"):
        read_metrics(path)
    assert read_metrics(tmp_path / "none.jsonl") == []


def _tiny_data():
    images = np.zeros((8, 28, 28), np.uint8)
    return kdc.PseudoLabelDataset(images, kdc.ImageViews.for_dataset("mnist"), batch_size=4)
