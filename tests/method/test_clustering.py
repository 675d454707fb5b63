import keras
import numpy as np
import pytest
from conftest import MATMUL_ATOL

from keras_deepcluster.method import clustering
from keras_deepcluster.platform import accelerated_kmeans, devices, feature_routes


def blobs(n=300, k=3, d=16, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 5, (k, d))
    y = rng.integers(k, size=n)
    return (centres[y] + rng.normal(0, 1, (n, d))).astype(np.float32), y


@pytest.mark.backend_independent
@pytest.mark.parametrize("backend", ["faiss", "sklearn"])
def test_pca_whitening_gives_unit_variance(backend):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(2000, 32)) * np.linspace(0.1, 10, 32)).astype(np.float32)
    out = clustering.pca_whiten(x, 8, backend)
    assert out.shape == (2000, 8) and out.dtype == np.float32
    cov = np.cov(out.T)
    # Whitened: uncorrelated with equal variances (faiss and sklearn differ in scale only).
    np.testing.assert_allclose(np.diag(cov) / np.diag(cov).mean(), 1, atol=0.02)
    assert np.abs(cov - np.diag(np.diag(cov))).max() < 0.02 * np.diag(cov).mean()


@pytest.mark.backend_independent
def test_pca_whitening_of_dead_units_is_finite():
    x = np.zeros((500, 20), np.float32)
    x[:, :3] = np.random.default_rng(0).normal(size=(500, 3))  # rank 3, 17 dead units
    for backend in clustering.PCA_BACKENDS:
        assert np.isfinite(clustering.pca_whiten(x, 10, backend)).all()


@pytest.mark.backend_independent
def test_l2_normalize_rows_and_zero_rows():
    x = np.array([[3, 4], [0, 0], [1e-30, 0]], np.float32)
    out = clustering.l2_normalize(x)
    np.testing.assert_allclose(out[0], [0.6, 0.8], rtol=1e-6)
    np.testing.assert_array_equal(out[1], [0, 0])
    assert np.isfinite(out).all()


@pytest.mark.backend_independent
def test_l2_normalize_in_blocks_equals_the_whole_array_in_float64():
    x = np.random.default_rng(0).normal(size=(103, 7)).astype(np.float32)
    x[5] = 0
    whole = x / np.maximum(np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True), 1e-12)
    out = feature_routes.HostRoute(block_rows=10).l2_normalize(x)
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_array_equal(out, whole.astype(np.float32))


@pytest.mark.backend_independent
@pytest.mark.parametrize("backend", ["faiss", "sklearn"])
def test_kmeans_finds_blobs_and_is_seeded(backend):
    from keras_deepcluster.evaluation import nmi

    x, y = blobs()
    runs = [clustering.kmeans(x, 3, seed=s, backend=backend) for s in range(5)]
    labels, objective = runs[1]
    again, _ = clustering.kmeans(x, 3, seed=1, backend=backend)
    assert labels.shape == (300,) and set(labels) <= {0, 1, 2}
    np.testing.assert_array_equal(labels, again)
    # One k-means run can stop in a local minimum; the best of five finds the blobs.
    best_labels, _ = min(runs, key=lambda run: run[1])
    assert nmi(best_labels, y) > 0.95
    # The objective is the mean squared distance to the assigned centroid.
    centroids = np.stack([x[labels == c].mean(0) for c in range(3)])
    expected = np.mean(np.sum((x - centroids[labels]) ** 2, axis=1))
    assert objective == pytest.approx(expected, rel=1e-3)


@pytest.mark.backend_independent
def test_fill_empty_clusters_splits_the_largest():
    x, _ = blobs(n=100, k=2)
    labels = np.zeros(100, np.int64)
    labels[:30] = 3  # clusters 1 and 2 empty
    repaired, empty = clustering.fill_empty_clusters(labels, x, 4)
    assert empty == 2
    counts = np.bincount(repaired, minlength=4)
    assert (counts > 0).all() and counts.sum() == 100
    assert counts[3] == 30  # untouched clusters keep their points


@pytest.mark.backend_independent
def test_fill_empty_clusters_with_identical_points():
    x = np.ones((10, 4), np.float32)
    repaired, empty = clustering.fill_empty_clusters(np.zeros(10, np.int64), x, 5)
    assert empty == 4 and sorted(set(repaired)) == [0, 1, 2, 3, 4]


def test_cluster_features_gives_contiguous_nonempty_labels():
    x, _ = blobs(n=200, k=4, d=32)
    result = clustering.cluster_features(x, 20, seed=0, pca_dim=8)
    assert np.array_equal(np.unique(result.labels), np.arange(20))
    assert result.seconds_pca > 0 and result.seconds_kmeans > 0
    # The objective: mean squared distance to the centroid, of the whitened, normalised points.
    points = clustering.l2_normalize(clustering.pca_whiten(x, 8))
    centroids = np.stack([points[result.labels == c].mean(0) for c in range(20)])
    expected = np.mean(np.sum((points - centroids[result.labels]) ** 2, axis=1))
    assert result.objective == pytest.approx(expected, rel=1e-3)


def test_cluster_features_rejects_nan_and_bad_arguments():
    x, _ = blobs()
    bad = x.copy()
    bad[5, 2] = np.nan
    with pytest.raises(FloatingPointError, match="1 of 300 feature rows contain NaN"):
        clustering.cluster_features(bad, 3, seed=0)
    with pytest.raises(ValueError, match="2 <= k <= N=300"):
        clustering.kmeans(x, 301, seed=0)
    with pytest.raises(ValueError, match="between 1 and the feature dimension 16"):
        clustering.pca_whiten(x, 17)
    with pytest.raises(ValueError, match="Unknown k-means backend 'gpu'"):
        clustering.kmeans(x, 3, seed=0, backend="gpu")


@pytest.mark.backend_independent
def test_auto_backend_falls_back_to_sklearn_without_faiss(monkeypatch):
    x, _ = blobs()
    expected, _ = clustering.kmeans(x, 3, seed=4, backend="sklearn")
    monkeypatch.setattr(devices, "accelerator_available", lambda: False)
    monkeypatch.setattr(feature_routes, "faiss", None)
    labels, _ = clustering.kmeans(x, 3, seed=4, backend="auto")
    np.testing.assert_array_equal(labels, expected)
    with pytest.raises(ImportError, match="'faiss' asked for, but faiss cannot be imported"):
        clustering.kmeans(x, 3, seed=4, backend="faiss")
    assert np.isfinite(clustering.pca_whiten(x, 4, "faiss")).all()  # sklearn PCA instead


@pytest.mark.parametrize("gpu", [False, True])
def test_auto_backend_is_keras_on_a_gpu_and_faiss_elsewhere(monkeypatch, gpu):
    x, _ = blobs(n=1000, k=8)
    monkeypatch.setattr(devices, "accelerator_available", lambda: gpu)
    auto = clustering.kmeans(x, 8, seed=5, backend="auto")
    # faiss and our k-means pick different initial centroids from one seed.
    expected = clustering.kmeans(x, 8, seed=5, backend="keras" if gpu else "faiss")
    other = clustering.kmeans(x, 8, seed=5, backend="faiss" if gpu else "keras")
    np.testing.assert_array_equal(auto[0], expected[0])
    assert not np.array_equal(auto[0], other[0])


@pytest.mark.parametrize("deterministic", [False, True])
def test_keras_kmeans_matches_faiss_objective_and_is_seeded(deterministic):
    x, _ = blobs(n=3000, k=8)
    labels, objective = accelerated_kmeans.keras_kmeans(x, 8, 3, deterministic=deterministic)
    _, faiss_objective = clustering.kmeans(x, 8, seed=3, backend="faiss")
    assert (
        labels.shape == (3000,)
        and labels.dtype == np.int64
        and set(np.unique(labels)) <= set(range(8))
    )
    assert objective == pytest.approx(faiss_objective, rel=0.01) or objective < faiss_objective
    # The objective is the mean squared distance to the mean of each cluster.
    centroids = np.stack([x[labels == c].mean(0) for c in range(8)])
    expected = np.mean(np.sum((x - centroids[labels]) ** 2, axis=1))
    assert objective == pytest.approx(expected, rel=1e-3)
    again, _ = accelerated_kmeans.keras_kmeans(x, 8, 3, deterministic=deterministic)
    # A GPU's scatter-add adds in no fixed order.
    if deterministic or not devices.accelerator_available():
        np.testing.assert_array_equal(labels, again)
    # Chunking changes the matrix products' shapes, not the clustering: 64 points at a time.
    chunked, chunked_objective = accelerated_kmeans.keras_kmeans(
        x, 8, 3, chunk_rows=64, deterministic=deterministic
    )
    assert np.mean(chunked == labels) > 0.999
    assert chunked_objective == pytest.approx(objective, rel=1e-4)
    assert not np.array_equal(labels, accelerated_kmeans.keras_kmeans(x, 8, 4)[0])


def test_deterministic_sums_give_the_scatter_add_clustering():
    x = clustering.l2_normalize(blobs(n=2000, k=30, d=24)[0])
    fast, fast_objective = accelerated_kmeans.keras_kmeans(x, 30, 7, deterministic=False)
    fixed, fixed_objective = accelerated_kmeans.keras_kmeans(x, 30, 7, deterministic=True)
    assert np.mean(fast == fixed) > 0.999
    assert fixed_objective == pytest.approx(fast_objective, rel=1e-4)


@pytest.mark.backend_independent
def test_chunk_plan_fits_the_free_memory(monkeypatch):
    monkeypatch.setattr(devices, "free_memory_bytes", lambda: None)
    monkeypatch.setattr(devices, "accelerator_available", lambda: False)
    assert accelerated_kmeans.chunk_plan(1_000_000, 256, 1000) == (16777, True)
    assert accelerated_kmeans.chunk_plan(1_000, 256, 1000) == (1000, True)
    gib = 1 << 30
    monkeypatch.setattr(devices, "free_memory_bytes", lambda: 80 * gib)
    rows, resident = accelerated_kmeans.chunk_plan(1_000_000, 256, 10_000)
    # 1 GB of points stay; half of the other 79 GB holds the chunk's distances (the
    # 523,766 rows that fit, rounded down to a power of two).
    fitting = int(0.5 * (80 * gib - 1_024_000_000)) // (4 * 20_256)
    assert resident and rows == 2**18 <= fitting < 2**19
    rows, _ = accelerated_kmeans.chunk_plan(1_000_000, 256, 10_000, deterministic=True)
    assert rows == 2**18 <= int(0.5 * (80 * gib - 1_024_000_000)) // (4 * 30_256) < 2**19
    # Points larger than a quarter of the free memory are streamed from the host.
    rows, resident = accelerated_kmeans.chunk_plan(30_000_000, 256, 10_000)
    assert not resident and rows == 2**19 <= int(0.5 * 80 * gib) // (4 * 20_256) < 2**20
    # A few MB more or less free (other arrays alive) plan the same chunks, so no new
    # shape is compiled; all points in one chunk when they fit.
    for free in (80 * gib - 3_000_000, 80 * gib + 5_000_000):
        monkeypatch.setattr(devices, "free_memory_bytes", lambda free=free: free)
        assert accelerated_kmeans.chunk_plan(1_000_000, 256, 10_000) == (2**18, True)
    assert accelerated_kmeans.chunk_plan(60_000, 256, 100) == (60_000, True)


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="jax.jit compiles per shape")
def test_kmeans_calls_with_other_free_memory_compile_nothing_new(monkeypatch):
    x, _ = blobs(n=3000, k=7)
    step = accelerated_kmeans._lloyd_step("jax", 7, False)
    # A GPU whose free memory changes between calls by other arrays' 40 KB, as a real one
    # does: a chunk of 2,048 rows, then the rest.
    for free in (900_000, 860_000, 940_000):
        monkeypatch.setattr(devices, "free_memory_bytes", lambda free=free: free)
        assert accelerated_kmeans.chunk_plan(3000, 16, 7) == (2048, True)
        accelerated_kmeans.keras_kmeans(x, 7, seed=1, iterations=2, deterministic=False)
        if free == 900_000:
            compiled_shapes = step._cache_size()
    assert compiled_shapes == step._cache_size()


def test_streamed_points_give_the_resident_clustering(monkeypatch):
    x, _ = blobs(n=1000, k=5)
    resident = accelerated_kmeans.keras_kmeans(x, 5, 2, chunk_rows=300)
    monkeypatch.setattr(accelerated_kmeans, "chunk_plan", lambda *a, **k: (300, False))
    streamed = accelerated_kmeans.keras_kmeans(x, 5, 2)
    np.testing.assert_array_equal(streamed[0], resident[0])
    assert streamed[1] == pytest.approx(resident[1], rel=1e-6)


@pytest.mark.backend_independent
def test_split_plan_repeats_faiss_splits_on_the_centroids():
    def faiss_split(centroids, counts, rng):  # faiss's loop, on the vectors themselves
        centroids, counts = centroids.copy(), counts.copy()
        sign = np.where(np.arange(centroids.shape[1]) % 2 == 0, 1.0, -1.0)
        for empty in np.flatnonzero(counts == 0):
            while True:
                j = int(rng.integers(len(counts)))
                if rng.random() * (counts.sum() - len(counts)) < counts[j] - 1:
                    break
            centroids[empty] = centroids[j] * (1 + sign / 1024)
            centroids[j] = centroids[j] * (1 - sign / 1024)
            counts[empty] = counts[j] // 2
            counts[j] -= counts[empty]
        return centroids

    centroids = np.random.default_rng(0).normal(size=(6, 5))
    counts = np.array([50.0, 0.0, 1.0, 0.0, 0.0, 49.0])
    source, even, odd = accelerated_kmeans.split_plan(counts, np.random.default_rng(3))
    factors = np.where(np.arange(5) % 2 == 0, even[:, None], odd[:, None])
    expected = faiss_split(centroids, counts, np.random.default_rng(3))
    np.testing.assert_allclose(centroids[source] * factors, expected, rtol=1e-12)
    assert set(source[[1, 3, 4]]) <= {0, 5}  # a one-point cluster is never split
    assert len(set(map(tuple, expected.round(12)))) == 6  # all centroids now differ


def test_keras_kmeans_repairs_empty_clusters_like_faiss():
    from keras_deepcluster.evaluation import nmi

    x = np.repeat(np.eye(4, 6, dtype=np.float32), 25, axis=0)  # 4 distinct points
    truth = np.repeat(np.arange(4), 25)
    # Random initial points are duplicates, so clusters start empty; both repairs
    # (faiss's own and ours, which repeats it) end with the four groups.
    for labels, _ in (
        accelerated_kmeans.keras_kmeans(x, 4, seed=0),
        clustering.kmeans(x, 4, seed=0, backend="faiss"),
    ):
        assert nmi(labels, truth) == pytest.approx(1.0)
    result = clustering.cluster_features(x, num_clusters=6, seed=0, kmeans_backend="keras")
    assert sorted(np.unique(result.labels)) == list(range(6))


def test_device_features_are_whitened_normalised_and_clustered_there():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(3000, 32)) * np.linspace(0.1, 10, 32)).astype(np.float32)
    on_device = keras.ops.convert_to_tensor(x)
    # faiss's whitening, up to the sign of each component.
    whitened = keras.ops.convert_to_numpy(clustering.pca_whiten(on_device, 8))
    reference = clustering.pca_whiten(x, 8, "faiss")
    signs = np.sign(np.sum(whitened * reference, axis=0))
    # In units of the whitened spread (faiss scales to 1 / sqrt(N), not to 1).
    unit = np.sqrt(len(x))
    np.testing.assert_allclose(whitened * signs * unit, reference * unit, atol=10 * MATMUL_ATOL)
    normalised = keras.ops.convert_to_numpy(clustering.l2_normalize(on_device))
    np.testing.assert_allclose(normalised, clustering.l2_normalize(x), atol=1e-6)
    host = clustering.cluster_features(x, 12, seed=2, kmeans_backend="keras")
    device = clustering.cluster_features(on_device, 12, seed=2)  # "auto": keras for a tensor
    assert device.labels.dtype == np.int64 and sorted(np.unique(device.labels)) == list(range(12))
    # Up to float rounding: a matrix product's last bits can depend on its buffers' alignment
    # (3 of 3,000 near-tied points flipped once in CI on PyTorch).
    assert np.mean(device.labels == host.labels) > 0.995
    assert device.objective == pytest.approx(host.objective, rel=1e-4)
    bad = x.copy()
    bad[7, 3] = np.inf
    with pytest.raises(FloatingPointError, match="1 of 3000 feature rows"):
        clustering.cluster_features(keras.ops.convert_to_tensor(bad), 3, seed=0)


def test_empty_clusters_of_device_features_are_filled_from_their_rows():
    x = keras.ops.convert_to_tensor(np.ones((10, 4), np.float32))
    repaired, empty = clustering.fill_empty_clusters(np.zeros(10, np.int64), x, 5)
    assert empty == 4 and sorted(set(repaired)) == [0, 1, 2, 3, 4]


def test_the_host_and_device_routes_take_the_same_steps():
    x, _ = blobs(n=200, d=8)
    x[3, 1] = np.nan
    route, host = feature_routes.place(x)
    assert route is feature_routes.HOST and host is x  # a host array is not copied
    route, device = feature_routes.place(keras.ops.convert_to_tensor(x))
    assert route is feature_routes.DEVICE
    for route, features in ((feature_routes.HOST, host), (feature_routes.DEVICE, device)):
        assert (route.count(features), route.count_nonfinite(features)) == (200, 1)
        np.testing.assert_array_equal(route.rows(features, np.array([5, 0])), x[[5, 0]])
        np.testing.assert_array_equal(route.to_host(features), x)
    whitening = feature_routes.Whitening(np.ones(8), np.eye(8, 3))
    assert whitening.mean.dtype == whitening.projection.dtype == np.float32
    on_device = feature_routes.DEVICE.whiten(device, whitening)
    on_host = feature_routes.HOST.whiten(host, whitening)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(on_device), on_host, atol=1e-6)


def test_cluster_features_takes_its_old_keyword_names_with_a_warning():
    x = np.random.default_rng(0).normal(size=(60, 5)).astype("float32")
    new = clustering.cluster_features(x, num_clusters=4, seed=0, kmeans_iterations=3)
    with pytest.warns(
        DeprecationWarning, match=r"k=\.\.\.\) is now cluster_features\(num_clusters"
    ):
        old = clustering.cluster_features(x, k=4, seed=0, iterations=3)
    np.testing.assert_array_equal(old.labels, new.labels)
    with pytest.raises(TypeError, match="got both k= and num_clusters="):
        clustering.cluster_features(x, k=4, num_clusters=4, seed=0)
