"""After training: export (clusters by file), show (figures and report.html), probe --knn."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import invoke

import keras_deepcluster as kdc
from keras_deepcluster.data.synthetic import write_image_folder
from keras_deepcluster.runs.export import read_table
from keras_deepcluster.runs.run_directory import FILE_MODE


@pytest.fixture(scope="module")
def photos_run(tmp_path_factory):
    """A finished run on a folder of mixed synthetic photos (two of them broken)."""
    root = tmp_path_factory.mktemp("results")
    write_image_folder(root / "photos", 96, classes=3, sizes=(36, 90), corrupt=2, seed=1)
    saved = os.environ.get("KERAS_DEEPCLUSTER_CACHE")
    os.environ["KERAS_DEEPCLUSTER_CACHE"] = str(root / "caches")
    try:
        result = invoke(
            "train", "cifar10", "--min-steps", "none", "--source", "folder", "--data-dir",
            root / "photos",
            "-k", "3", "--pca", "8", "--epochs", "1", "--batch-size", "32", "--out", root / "run",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        yield root
    finally:
        if saved is None:
            os.environ.pop("KERAS_DEEPCLUSTER_CACHE", None)
        else:
            os.environ["KERAS_DEEPCLUSTER_CACHE"] = saved


def test_export_names_every_file_with_its_cluster_as_assign_does(photos_run, tmp_path):
    run = photos_run / "run"
    result = invoke("export", run)
    assert result.exit_code == 0, result.output
    table = read_table(run / "clusters_train.parquet")
    mode = os.stat(run / "clusters_train.parquet").st_mode & 0o777
    assert mode == FILE_MODE  # as `open` would make it, not mkstemp's private 0600
    assert len(table["file"]) == 96  # the two broken files are not rows
    assert set(np.unique(table["label"])) == {0, 1, 2}
    assert [f"class_{label}" for label in table["label"]] == list(table["label_name"])
    for name, label in zip(table["file"][:10], table["label"][:10]):
        assert (photos_run / "photos" / name).is_file() and name.startswith(f"class_{label}/")
    opened = kdc.Run.open(run)
    clusters, distances = opened.assign(opened.data().x_train)
    np.testing.assert_array_equal(table["cluster"], clusters)
    np.testing.assert_allclose(table["distance"], distances, rtol=1e-5)

    out = tmp_path / "rows.csv"
    result = invoke(
        "export", run, "--format", "csv", "--embeddings", "--out", out
    )  # the embeddings of the recipe's probe layer
    assert result.exit_code == 0, result.output
    csv_table = read_table(out)
    np.testing.assert_array_equal(csv_table["cluster"], table["cluster"])
    assert list(csv_table["file"]) == list(table["file"])
    vectors = np.load(tmp_path / "rows.npy")
    layer = opened.recipe.probe_layer
    assert layer and vectors.shape == (
        96,
        np.prod(opened.backbone.get_layer(layer).output.shape[1:]),
    )
    np.testing.assert_allclose(vectors[:4], opened.embed(opened.data().x_train[:4]), atol=1e-5)
    result = invoke("export", run, "--embeddings", "--layer", "output", "--out", tmp_path / "o.csv")
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "o.npy").shape == (96, opened.backbone.output.shape[-1])


def test_link_clusters_puts_the_most_typical_first(photos_run, tmp_path):
    run = photos_run / "run"
    links = tmp_path / "by-cluster"
    result = invoke("export", run, "--link-clusters", links)
    assert result.exit_code == 0, result.output
    table = read_table(run / "clusters_train.parquet")
    folders = sorted(links.iterdir())
    assert [f.name for f in folders] == [f"cluster_{c}" for c in sorted(set(table["cluster"]))]
    for folder in folders:
        cluster = int(folder.name.split("_")[1])
        entries = sorted(folder.iterdir())
        assert all(entry.is_symlink() and entry.resolve().is_file() for entry in entries)
        members = table["cluster"] == cluster
        assert len(entries) == members.sum()
        nearest = table["file"][members][np.argmin(table["distance"][members])]
        assert entries[0].resolve() == (photos_run / "photos" / nearest).resolve()
    # Into a folder that is not empty: refused, the folder untouched.
    result = invoke("export", run, "--link-clusters", links)
    assert result.exit_code == 1 and "is not an empty folder" in result.output
    assert sorted(links.iterdir()) == folders
    copies = tmp_path / "copies"
    result = invoke("export", run, "--link-clusters", copies, "--copy")
    assert result.exit_code == 0, result.output
    first = next(copies.rglob("*.*"))
    assert not first.is_symlink() and first.stat().st_size > 0


def test_export_bad_input_is_refused_before_anything_is_written(photos_run, tmp_path):
    run = photos_run / "run"
    result = invoke("export", run, "--split", "test")
    assert result.exit_code == 1 and "has no 'test' split" in result.output
    assert not (run / "clusters_test.parquet").exists()
    result = invoke(
        "export", run, "--embeddings", "--layer", "conv_9", "--out", tmp_path / "x.parquet"
    )
    assert result.exit_code == 1 and "has no layer 'conv_9'" in result.output
    assert list(tmp_path.iterdir()) == []
    unfinished = tmp_path / "unfinished"
    kdc.RunDirectory(unfinished).create(kdc.load_recipe("digits").to_toml())
    result = invoke("export", unfinished)
    assert result.exit_code == 1 and "has not finished" in result.output
    result = invoke("export", run, "--copy")
    assert result.exit_code == 2 and "--copy goes with --link-clusters" in result.output
    full = tmp_path / "links"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    out = tmp_path / "refused.csv"
    result = invoke("export", run, "--link-clusters", full, "--format", "csv", "--out", out)
    assert result.exit_code == 1 and "is not an empty folder" in result.output
    assert not out.exists() and [p.name for p in full.iterdir()] == ["keep.txt"]


def test_a_full_disk_during_export_leaves_nothing_behind(photos_run, tmp_path, monkeypatch):
    import errno

    from keras_deepcluster.runs import export

    written = []

    def fill_up(writer, table, file_format, rows, vector):
        written.append(len(rows["cluster"]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export, "_write", fill_up)
    opened = kdc.Run.open(photos_run / "run")
    out = tmp_path / "out" / "clusters.parquet"
    with pytest.raises(OSError, match="No space left on the disk of .* nothing was written"):
        export.export_assignments(opened, opened.data(), out, embeddings=True)
    assert written and list((tmp_path / "out").iterdir()) == []  # no table, no .partial-*


def test_moved_data_is_named_and_can_be_pointed_at(photos_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(photos_run / "run", copy)
    record = json.loads((copy / "data.json").read_text())
    record["cache"] = str(tmp_path / "gone")  # the cache was deleted
    (copy / "data.json").write_text(json.dumps(record))
    config = (copy / "config.toml").read_text()
    (copy / "config.toml").write_text(
        config.replace(str(photos_run / "photos"), str(tmp_path / "x"))
    )
    moved = tmp_path / "moved"
    shutil.copytree(photos_run / "photos", moved)
    result = invoke("export", copy)
    assert result.exit_code == 1 and "are not where they were" in result.output
    assert "point at them with --data-dir" in " ".join(result.output.split())
    result = invoke("export", copy, "--data-dir", moved)
    assert result.exit_code == 0, result.output
    (moved / "class_0" / "extra.png").write_bytes(
        (moved / "class_1").iterdir().__next__().read_bytes()
    )
    result = invoke("export", copy, "--data-dir", moved)
    assert result.exit_code == 1 and "changed since training" in result.output
    assert "--data-dir" in result.output


def test_knn_probe(photos_run):
    run = photos_run / "run"
    result = invoke("probe", run, "--knn", "--epochs", "1")
    assert result.exit_code == 0, result.output
    report = json.loads((run / "knn.json").read_text())
    assert set(report["accuracy"]) == {"20", "200"} and report["temperature"] == 0.07
    assert "weighted kNN" in result.output
    # The same numbers from the library: the recipe's probe layer, a seeded 20 % of the
    # folder's images held out (it has no test split).
    from keras_deepcluster.evaluation import weighted_knn

    opened = kdc.Run.open(run)
    data = opened.data()
    images, labels = data.x_train[:], np.asarray(data.y_train)
    order = np.random.default_rng(opened.recipe.seed).permutation(len(images))
    cut = round(0.2 * len(order))
    held, kept = np.sort(order[:cut]), np.sort(order[cut:])
    assert report["layer"] == opened.embedding_layer and report["test_images"] == len(held)
    features = opened.embed(images)
    expected = weighted_knn(
        features[kept], labels[kept], features[held], labels[held], k=(20, 200), temperature=0.07
    )
    assert report["accuracy"] == pytest.approx({str(k): v for k, v in expected.items()}, abs=1e-6)


@pytest.mark.backend_independent  # one backend: a real browser is slow to start
def test_show_writes_figures_and_a_report_that_opens_in_a_browser(photos_run):
    run = photos_run / "run"
    result = invoke("show", run, "--map-images", "60")
    assert result.exit_code == 0, result.output
    figures = sorted(p.name for p in (run / "figures").iterdir())
    assert figures == ["confusion.png", "curves.png", "filters.png", "map.png"]
    page = (run / "report.html").read_text()
    assert "src='figures" not in page  # self-contained
    thumbnails = page.count("class='thumb'")
    assert page.count("<img") == len(figures) + thumbnails
    assert thumbnails == 3 * (8 + 8)  # 3 clusters of >= 8 images: 8 nearest, 8 random each
    assert "Galleries of all 3 clusters." in page
    assert "majority label class_" in page  # the class folders' names, not label numbers
    hovers = re.findall(r"title='([^']*)'", page)
    assert len(hovers) == thumbnails
    assert all((photos_run / "photos" / hover.split(" · ")[0]).is_file() for hover in hovers)
    assert all(" · label class_" in hover and " · distance " in hover for hover in hovers)
    assert "untrained → trained" in page  # the scores beside the untrained network's
    result = invoke("show", run, "--clusters", "7")
    assert result.exit_code == 1 and "out of range" in result.output
    (run / "figures" / "cluster_5.png").write_bytes(b"an earlier version's gallery")
    result = invoke("show", run, "--clusters", "0,1", "--map-images", "60")
    assert result.exit_code == 0, result.output
    page = (run / "report.html").read_text()
    assert "Galleries of the clusters asked for: 0, 1." in page
    assert page.count("<figcaption>Cluster ") == 2
    assert sorted(p.name for p in (run / "figures").iterdir()) == figures  # only what it shows
    images = page.count("<img")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (.ci/setup installs it)")
    dom = subprocess.run(
        [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={photos_run / 'chromium'}",
            "--virtual-time-budget=10000", "--dump-dom", (run / "report.html").as_uri(),
        ],
        capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    assert f'data-images-total="{images}"' in dom
    assert f'data-images-loaded="{images}"' in dom


def test_history_and_report_carry_the_fields_metrics(photos_run, tmp_path):
    import csv

    run = kdc.RunDirectory(photos_run / "run")
    last = run.history[-1]
    labels = np.asarray(kdc.Run.open(run.path).data().y_train)
    from keras_deepcluster.evaluation import ari, hungarian_accuracy

    pseudo = run.read_pseudo_labels(int(last["epoch"]))
    assert last["acc_labels"] == pytest.approx(hungarian_accuracy(pseudo, labels))
    assert last["ari_labels"] == pytest.approx(ari(pseudo, labels))
    invoke("probe", run.path, "--knn", "--epochs", "1")
    result = invoke("report", photos_run, "--out", tmp_path / "report")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((tmp_path / "report" / "runs.csv").open()))
    assert len(rows) == 1
    knn = json.loads((run.path / "knn.json").read_text())["accuracy"]
    assert float(rows[0]["knn_20"]) == pytest.approx(knn["20"])
    assert float(rows[0]["last_acc"]) == pytest.approx(last["acc_labels"])
    assert rows[0]["test_acc"] == ""  # a folder without a test split


@pytest.mark.backend_independent
def test_link_clusters_without_symbolic_links_refuses_and_leaves_nothing(tmp_path, monkeypatch):
    import errno

    from keras_deepcluster.runs import export

    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "b.png").write_bytes(b"y")
    table = {"file": np.array(["a.png", "b.png"]), "cluster": np.array([1, 0]),
             "distance": np.array([0.1, 0.2])}  # fmt: skip

    def no_links(source, target):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(export.os, "symlink", no_links)
    with pytest.raises(ValueError, match=r"Cannot make symbolic links .* \(`copy=True`\)"):
        export.link_clusters(table, tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".partial-*"))
    assert export.link_clusters(table, tmp_path, tmp_path / "out", copy=True) == 2
    assert (tmp_path / "out" / "cluster_1" / "000000_a.png").read_bytes() == b"x"


@pytest.mark.backend_independent
def test_write_report_says_what_it_draws(photos_run):
    from keras_deepcluster.runs.visualize import write_report

    opened = kdc.Run.open(photos_run / "run")
    steps = []
    report = write_report(opened, opened.data(), map_images=40, on_figure=steps.append)
    assert steps[0] == "embeddings of 96 images" and "t-SNE map of 40 images" in steps
    assert [s for s in steps if s.startswith("gallery")] == [
        f"gallery of cluster {c}" for c in range(3)
    ]
    assert [Path(f).name for f in report["figures"]] == [
        "filters.png",
        "map.png",
        "confusion.png",
        "curves.png",
    ]
