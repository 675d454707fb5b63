"""A finished run used from Python: `kdc.Run` (embed, assign, data) and its final clustering."""

import json

import numpy as np
import pytest

import keras_deepcluster as kdc
from keras_deepcluster import ClusterModel, RunDirectory
from keras_deepcluster.evaluation import cluster_scores


def test_summary_has_the_final_clusterings_scores_on_train_and_test(trained):
    run, (images, labels), (test_images, test_labels) = trained
    final = run.summary["final_clustering"]
    assert final["clusters"] == 4
    opened = kdc.Run.open(run.path)
    assert opened.num_clusters == 4 and opened.recipe.name == "mnist"
    train_clusters, distances = opened.assign(images)
    assert train_clusters.shape == (240,) and distances.dtype == np.float32
    assert np.all(distances >= 0) and np.all(distances <= 2)  # unit vectors
    # The train scores are the final k-means labels; nearest-centroid ids agree with most.
    assert final["train"]["acc"] == pytest.approx(
        cluster_scores(train_clusters, labels)["acc"], abs=0.05
    )
    test_clusters, _ = opened.assign(test_images)
    assert final["test"] == pytest.approx(cluster_scores(test_clusters, test_labels))


def test_data_is_the_recorded_cache_and_embed_matches_assign(trained):
    run, (images, _), _ = trained
    recorded = json.loads((run.path / RunDirectory.DATA).read_text())
    assert recorded["source"] == "npz" and recorded["image_shape"] == [28, 28, 1]
    opened = kdc.Run.open(run.path)
    data = opened.data()  # the cache the run read, though the cache folder is not the default
    assert data.origin == recorded
    np.testing.assert_array_equal(data.x_train[:][..., 0], images)
    assert opened.embedding_layer == opened.recipe.probe_layer == "conv_2"
    np.testing.assert_array_equal(opened.embed(images[:3]), opened.embed(images[:3], "conv_2"))
    features = opened.embed(images[:10], layer="output")
    assert features.shape == (10, 84)
    clusters, _ = opened.cluster_model.assign(features)
    np.testing.assert_array_equal(clusters, opened.assign(images[:10])[0])
    assert opened.embed(images[:3], layer="conv_2").shape == (3, 16 * 10 * 10)
    with pytest.raises(ValueError, match="has no layer 'conv_9'"):
        opened.embed(images[:3], layer="conv_9")
    with pytest.raises(ValueError, match="channels"):
        opened.assign(np.zeros((2, 28, 28, 3), np.uint8))
    holes = np.full((3, 28, 28, 1), 0.5, np.float32)
    holes[1, 4, 4] = np.nan
    with pytest.raises(ValueError, match=r"1 of 3 images hold NaN or inf values \(first: row 1\)"):
        opened.assign(holes)
    with pytest.raises(
        ValueError, match="are 2 pixels on their shorter side; the run trained on 28"
    ):
        opened.assign(np.zeros((2, 2, 2, 1), np.uint8))


@pytest.mark.backend_independent
def test_cluster_model_round_trip_and_whitening(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 6)) * 4
    truth = rng.integers(0, 3, 300)
    features = (centres[truth] + rng.normal(size=(300, 6))).astype(np.float32)
    model, labels = ClusterModel.fit(features, 3, seed=0, pca_dim=4)
    assert model.projection.shape == (6, 4) and model.centroids.shape == (3, 4)
    assert cluster_scores(labels, truth)["acc"] > 0.9
    # Whitened: unit variance along each kept axis (faiss's eigen_power = -0.5 with N scaling).
    whitened = (features - model.mean) @ model.projection
    np.testing.assert_allclose(np.var(whitened, axis=0) * len(features), 1.0, rtol=1e-3)
    assigned, distances = model.assign(features)
    assert np.mean(assigned == labels) > 0.95
    model.save(tmp_path / "c.npz")
    again = ClusterModel.load(tmp_path / "c.npz")
    np.testing.assert_array_equal(again.assign(features)[0], assigned)
    with pytest.raises(ValueError, match="dimensions"):
        model.assign(features[:, :5])


@pytest.mark.backend_independent
@pytest.mark.parametrize("dim", [5, 12])  # within the rank of 12 centred images, and beyond
def test_whitening_of_fewer_images_than_features_is_the_scatter_matrixs(dim):
    # N < d takes the N x N Gram matrix; the d x d scatter matrix gives the same axes.
    rng = np.random.default_rng(1)
    features = (rng.normal(size=(12, 40)) * rng.uniform(0.5, 3, 40)).astype(np.float32)
    model, _ = ClusterModel.fit(features, 2, seed=0, pca_dim=dim)
    centred = (features - features.mean(axis=0)).astype(np.float64)
    eigenvalues, vectors = np.linalg.eigh(centred.T @ centred)
    rank = 11  # 12 centred rows
    top = np.argsort(eigenvalues)[::-1][: min(dim, rank)]
    expected = centred @ vectors[:, top] / np.sqrt(eigenvalues[top] + 1e-5)
    whitened = (features - model.mean) @ model.projection
    # Each axis up to its sign; axes beyond the rank project to zero.
    np.testing.assert_allclose(np.abs(whitened[:, : len(top)]), np.abs(expected), atol=1e-4)
    np.testing.assert_array_equal(whitened[:, len(top) :], 0)


@pytest.mark.backend_independent
def test_open_refuses_what_is_not_a_finished_run(tmp_path):
    with pytest.raises(kdc.runs.run_directory.RunDirectoryError, match="holds no run"):
        kdc.Run.open(tmp_path)
    run = RunDirectory(tmp_path / "run")
    run.create(kdc.load_recipe("digits").to_toml())
    with pytest.raises(kdc.runs.run_directory.RunDirectoryError, match="has not finished"):
        kdc.Run.open(run.path)
    run.write_json(RunDirectory.SUMMARY, {})
    with pytest.raises(kdc.runs.run_directory.RunDirectoryError, match="no final clustering"):
        kdc.Run.open(run.path)


def test_train_returns_with_the_run_unlocked_for_other_processes(trained):
    """A notebook's `kdc.train`, then `deepcluster show` in a terminal, on the same run."""
    import subprocess
    import sys

    from keras_deepcluster.platform.directory_lock import is_held

    run = trained[0]
    assert not is_held(run.path)
    code = (
        "import sys; from keras_deepcluster.platform.directory_lock import lock_folder; "
        "lock_folder(sys.argv[1])"
    )
    other = subprocess.run(
        [sys.executable, "-c", code, str(run.path)], capture_output=True, text=True
    )
    assert other.returncode == 0, other.stderr
