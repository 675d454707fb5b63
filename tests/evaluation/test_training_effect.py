"""Whether training helped: before/after scores, the best epoch kept, the steps per clustering."""

import re

import keras
import numpy as np
import pytest

import keras_deepcluster as kdc
from keras_deepcluster import RunDirectory
from keras_deepcluster.runs.callbacks import training_effect
from keras_deepcluster.runs.recipe import load_recipe

# The training images of each bundled recipe's dataset, as the authors ran them.
FULL_SIZES = {
    "mnist": 60_000,
    "fashion_mnist": 60_000,
    "svhn": 73_257,
    "cifar10": 50_000,
    "imagenet": 1_281_167,
    "digits": 1_797,
}


@pytest.mark.backend_independent
@pytest.mark.parametrize("name", sorted(FULL_SIZES))
def test_the_step_floor_changes_nothing_on_the_full_datasets(name):
    recipe = load_recipe(name)
    n = FULL_SIZES[name]
    length = kdc.epoch_length(n, recipe.batch_size, recipe.epoch_multiplier, recipe.min_steps)
    assert length == n * recipe.epoch_multiplier


@pytest.mark.backend_independent
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "svhn"])
def test_small_data_train_at_least_min_steps_per_clustering(name):
    recipe = load_recipe(name)
    length = kdc.epoch_length(3000, recipe.batch_size, recipe.epoch_multiplier, recipe.min_steps)
    assert recipe.min_steps == 469
    assert length == 469 * recipe.batch_size > 3000
    data = kdc.PseudoLabelDataset(
        np.zeros((3000, 8, 8), np.uint8),
        kdc.ImageViews(size=8, resize=8),
        batch_size=recipe.batch_size,
        epoch_length=length,
    )
    assert len(data) == 469


def _fit(directory, images, labels, epochs, lr, keep_best):
    keras.utils.clear_session()
    views = kdc.ImageViews.for_dataset("mnist", scale=(0.6, 1.0))
    data = kdc.PseudoLabelDataset(images, views, batch_size=32, seed=5)
    model = kdc.DeepCluster(kdc.backbones.lenet(seed=5), num_clusters=4)
    model.compile(optimizer=keras.optimizers.SGD(lr, momentum=0.9))
    reclustering = kdc.Reclustering(data, labels=labels, seed=5)
    recorder = kdc.RunRecorder(directory, reclustering, keep_best=keep_best)
    model.fit(data, epochs=epochs, verbose=0, callbacks=[reclustering, recorder])
    return model, reclustering


def test_a_worse_later_epoch_leaves_the_best_one_kept(tmp_path, shapes):
    images, _ = shapes(96)
    # Planted: the "labels" are the untrained network's own clustering, so epoch 0
    # scores NMI 1 and every later clustering, of a network trained away, less.
    _, first = _fit(tmp_path / "probe", images, None, epochs=1, lr=0.5, keep_best=False)
    planted = first.pseudo_labels.copy()
    untrained = kdc.backbones.lenet(seed=5).get_weights()
    model, _ = _fit(tmp_path / "run", images, planted, epochs=3, lr=0.5, keep_best=True)
    run = RunDirectory(tmp_path / "run")
    summary = run.summary
    np.testing.assert_array_equal(run.read_pseudo_labels(0), planted)
    assert summary["kept"]["epoch"] == 0 and summary["kept"]["nmi"] == pytest.approx(1.0)
    assert summary["kept"]["last_nmi"] < 1.0
    assert summary["final_clustering"]["train"]["nmi"] == pytest.approx(1.0)
    # model.keras holds the untrained network (the weights epoch 0 clustered).
    kept = run.load_model().backbone.get_weights()
    for saved, initial in zip(kept, untrained, strict=True):
        np.testing.assert_allclose(saved, initial, atol=1e-6)
    assert not (run.path / RunDirectory.BEST).exists()
    effect = summary["training_effect"]["train"]
    assert effect["nmi"]["change"] == pytest.approx(0.0) and effect["verdict"] == "unchanged"


def test_without_keep_best_the_last_epoch_and_the_change_are_recorded(tmp_path, shapes):
    images, labels = shapes(96)
    _fit(tmp_path / "run", images, labels, epochs=2, lr=0.05, keep_best=False)
    summary = RunDirectory(tmp_path / "run").summary
    history = RunDirectory(tmp_path / "run").history
    assert summary["kept"] is None and summary["labelled_images"] == 96
    untrained = summary["untrained_clustering"]["train"]
    assert untrained["nmi"] == pytest.approx(history[0]["nmi_labels"])
    assert untrained["acc"] == pytest.approx(history[0]["acc_labels"])
    effect = summary["training_effect"]["train"]
    final = summary["final_clustering"]["train"]
    for metric in ("nmi", "acc", "ari"):
        assert effect[metric]["change"] == pytest.approx(final[metric] - untrained[metric])


def test_keep_best_needs_labels(shapes):
    images, _ = shapes(32)
    data = kdc.PseudoLabelDataset(images, kdc.ImageViews.for_dataset("mnist"), batch_size=8)
    reclustering = kdc.Reclustering(data, labels=np.full(32, -1))
    with pytest.raises(ValueError, match="keep_best=True .* has no labels"):
        kdc.RunRecorder("run", reclustering, keep_best=True)


@pytest.mark.backend_independent
@pytest.mark.parametrize(
    ("before", "after", "verdict"),
    [(0.5, 0.6, "better"), (0.5, 0.3, "worse"), (0.5, 0.505, "unchanged")],
)
def test_the_verdict_follows_the_change_of_nmi(before, after, verdict):
    scores = lambda nmi: {"train": {"nmi": nmi, "acc": nmi, "ari": nmi}}  # noqa: E731
    summary = {"untrained_clustering": scores(before), "final_clustering": scores(after)}
    effect = training_effect(summary, "train")
    assert effect["verdict"] == verdict
    assert effect["nmi"]["change"] == pytest.approx(after - before)


def _unlabelled_folder(root):
    """Photos in one flat folder (no class folders), and each file's class."""
    kdc.data.write_image_folder(root / "classes", 48, classes=2, sizes=(20, 40))
    flat = root / "photos"
    flat.mkdir()
    classes = {}
    for path in sorted((root / "classes").glob("class_*/*")):
        name = f"{path.parent.name}_{path.name}"
        path.rename(flat / name)
        classes[name] = path.parent.name
    return flat, classes


TRAIN = ["train", "cifar10", "--source", "folder", "--min-steps", "none", "--epochs", "2"]
TRAIN += ["-k", "2", "--pca", "4", "--batch-size", "8"]


def test_check_labels_score_an_unlabelled_folder(tmp_path):
    from conftest import invoke

    flat, classes = _unlabelled_folder(tmp_path)
    check = tmp_path / "check.csv"
    rows = sorted(classes.items())[::4]  # 12 of the 48 images
    check.write_text("file,label\n" + "".join(f"{name},{label}\n" for name, label in rows))
    out = tmp_path / "run"
    result = invoke(*TRAIN, "--data-dir", flat, "--check-labels", check, "--out", out)
    assert result.exit_code == 0, result.output
    assert "12 check labels in 2 classes from check.csv" in result.output
    assert "untrained -> trained on train (12 check labels" in result.output
    run = RunDirectory(out)
    summary = run.summary
    assert summary["labelled_images"] == 12 and summary["check_labels"].startswith("12 check")
    assert "nmi_labels" in run.history[0]
    assert summary["training_effect"]["train"]["verdict"] in ("better", "worse", "unchanged")


@pytest.mark.backend_independent
def test_a_bad_check_label_file_is_refused_before_anything_is_written(tmp_path):
    from conftest import invoke

    flat, _ = _unlabelled_folder(tmp_path)
    check = tmp_path / "check.csv"
    check.write_text("file,label\nclass_0_000000.png,a\nnot_there.png,b\n")
    out = tmp_path / "run"
    result = invoke(*TRAIN, "--data-dir", flat, "--check-labels", check, "--out", out)
    assert result.exit_code != 0
    assert "check.csv: line 3" in result.output and "not_there.png" in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


@pytest.mark.backend_independent
def test_the_report_page_shows_before_after_and_the_kept_epoch(tmp_path):
    from keras_deepcluster.runs.visualize import _effect_html, _probes_html

    scores = lambda nmi: {"nmi": nmi, "acc": nmi / 2, "ari": nmi / 4}  # noqa: E731
    summary = {
        "untrained_clustering": {"train": scores(0.5), "test": scores(0.4)},
        "final_clustering": {"train": scores(0.6), "test": scores(0.3)},
        "kept": {"epoch": 3, "nmi": 0.61, "last_nmi": 0.55},
        "check_labels": "12 check labels in 2 classes from check.csv",
    }
    summary["training_effect"] = {s: training_effect(summary, s) for s in ("train", "test")}
    page = _effect_html(summary)
    assert "0.500 → 0.600 (+0.100)" in page and "0.400 → 0.300 (-0.100)" in page
    assert "better" in page and "worse" in page and "kept epoch 3" in page
    assert "12 check labels" in page and "worse than the untrained" in page
    run = RunDirectory(tmp_path)
    run.path.mkdir(exist_ok=True)
    run.write_json("probe.json", {"accuracy": 0.8})
    run.write_json("probe_random.json", {"accuracy": 0.75})
    run.write_json("knn.json", {"accuracy": {"20": 0.7, "200": 0.65}})
    probes = _probes_html(run)
    assert "<td>75.0 %</td><td>80.0 %</td>" in probes
    assert "kNN (k = 20)</th><td>–</td><td>70.0 %</td>" in probes


@pytest.mark.backend_independent
def test_label_free_signals_separate_structure_from_noise():
    from keras_deepcluster.evaluation.label_free import label_free_scores
    from keras_deepcluster.method.clustering import l2_normalize

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16)) * 5
    truth = np.repeat(np.arange(4), 100)
    blobs = l2_normalize((centres[truth] + rng.normal(size=(400, 16))).astype(np.float32))
    noise = l2_normalize(rng.normal(size=(400, 16)).astype(np.float32))
    separated = label_free_scores(blobs, truth)
    random = label_free_scores(noise, rng.integers(4, size=400))
    assert separated["silhouette"] > 0.5 > random["silhouette"]
    assert separated["seed_agreement"] > 0.95
    assert separated["cluster_generalization"] > 0.95 > 0.5 > random["cluster_generalization"]


def test_train_verbose_shows_progress_and_the_effect(tmp_path, capsys):
    recipe = kdc.load_recipe("digits").replace(limit=64, epochs=1, clusters=4)
    kdc.train(recipe, out=tmp_path / "run", verbose=2)
    printed = capsys.readouterr().out
    assert "data: 64 training images" in printed
    assert re.search(r"\d+/\d+ - .*loss: [\d.]+", printed)  # Keras's line per epoch
    assert "untrained -> trained on train (64 labelled images): NMI " in printed
    kdc.train(recipe, out=tmp_path / "quiet")
    assert capsys.readouterr().out == ""
