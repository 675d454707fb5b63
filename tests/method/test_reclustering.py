import dataclasses

import keras
import numpy as np
import pytest
from conftest import MATMUL_ATOL

from keras_deepcluster import (
    DeepCluster,
    FeatureExtractor,
    ImageViews,
    PseudoLabelDataset,
    RandomView,
    Reclustering,
    backbones,
    extract_features,
)
from keras_deepcluster.evaluation import nmi
from keras_deepcluster.method.clustering import HEAD_STREAM, derive_seed
from keras_deepcluster.method.reclustering import ReclusteringSettings
from keras_deepcluster.platform import feature_routes


class Recorder(keras.callbacks.Callback):
    """Keeps each epoch's pseudo-labels and the head kernel at the epoch's start."""

    def __init__(self, data):
        super().__init__()
        self.data, self.labels, self.heads = data, [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.labels.append(self.data.pseudo_labels.copy())
        self.heads.append(keras.ops.convert_to_numpy(self.model.head.kernel).copy())


def run(
    images,
    labels=None,
    k=4,
    epochs=2,
    lr=0.01,
    seed=0,
    epoch_length=None,
    scale=(0.08, 1.0),
    **kwargs,
):
    views = ImageViews.for_dataset("mnist", scale=scale)
    data = PseudoLabelDataset(images, views, batch_size=32, seed=seed, epoch_length=epoch_length)
    model = DeepCluster(backbones.lenet(seed=seed), num_clusters=k, weight_decay=1e-4)
    model.compile(optimizer=keras.optimizers.SGD(lr, momentum=0.9))
    callback = Reclustering(data, labels=labels, seed=seed, **kwargs)
    recorder = Recorder(data)
    history = model.fit(data, epochs=epochs, callbacks=[callback, recorder], verbose=0)
    return history.history, recorder, callback, model


def test_training_raises_nmi_with_the_true_classes(shapes):
    images, labels = shapes(600)
    history, *_ = run(images, labels, k=8, epochs=5, lr=0.05, epoch_length=2400, scale=(0.3, 1.0))
    nmis = history["nmi_labels"]
    assert nmis[0] < 0.25  # random filters see position and size more than shape
    assert nmis[-1] > nmis[0] + 0.1, nmis


def test_same_seed_gives_identical_pseudo_labels_and_metrics(shapes):
    images, labels = shapes(160)
    first, rec1, *_ = run(images, labels, epochs=3)
    second, rec2, *_ = run(images, labels, epochs=3)
    for a, b in zip(rec1.labels, rec2.labels):
        np.testing.assert_array_equal(a, b)
    for key in ("loss", "nmi_labels", "nmi_previous", "kmeans_objective", "cluster_min"):
        np.testing.assert_array_equal(first[key], second[key])


def test_history_records_the_clustering_of_each_epoch(shapes):
    images, labels = shapes(160)
    history, recorder, callback, _ = run(images, labels, k=5, epochs=3)
    expected_keys = {
        "loss",
        "nmi_previous",
        "nmi_labels",
        "label_entropy",
        "clusters",
        "cluster_min",
        "cluster_max",
        "empty_clusters",
        "kmeans_objective",
        "seconds_features",
        "seconds_pca",
        "seconds_kmeans",
        "clustered",
    }
    assert expected_keys <= set(history)
    assert all(len(v) == 3 for v in history.values())
    assert np.isnan(history["nmi_previous"][0])
    for t in range(3):
        sizes = np.bincount(recorder.labels[t], minlength=5)
        assert history["clusters"][t] == 5 == np.count_nonzero(sizes)
        assert (history["cluster_min"][t], history["cluster_max"][t]) == (sizes.min(), sizes.max())
        assert history["nmi_labels"][t] == pytest.approx(nmi(recorder.labels[t], labels))
        assert 0 <= history["label_entropy"][t] <= np.log(4) + 1e-9
        assert history["seconds_features"][t] > 0 and history["kmeans_objective"][t] > 0
        if t:
            assert history["nmi_previous"][t] == pytest.approx(
                nmi(recorder.labels[t], recorder.labels[t - 1])
            )
    np.testing.assert_array_equal(callback.pseudo_labels, recorder.labels[-1])


def test_no_labels_means_no_label_metrics(shapes):
    images, _ = shapes(96)
    history, *_ = run(images, None, epochs=1)
    assert "nmi_labels" not in history and "label_entropy" not in history


def test_progress_reports_each_phase(shapes):
    images, _ = shapes(96)
    calls = []
    run(
        images,
        None,
        epochs=2,
        halt_after=1,
        feature_batch_size=40,
        on_progress=lambda *call: calls.append(call),
    )
    # Epoch 0 extracts 96 images in batches of 40 and clusters; halted epoch 1 reports nothing.
    assert calls == [
        ("features", 40, 96),
        ("features", 80, 96),
        ("features", 96, 96),
        ("clustering", 0, 1),
        ("clustering", 1, 1),
    ]


def test_halting_freezes_labels_but_renews_the_head(shapes):
    images, labels = shapes(160)
    history, recorder, *_ = run(images, labels, epochs=4, halt_after=2)
    assert history["clustered"] == [1.0, 1.0, 0.0, 0.0]
    np.testing.assert_array_equal(recorder.labels[2], recorder.labels[1])
    np.testing.assert_array_equal(recorder.labels[3], recorder.labels[1])
    assert history["nmi_previous"][2:] == [1.0, 1.0]
    assert history["seconds_features"][2:] == [0.0, 0.0]
    assert not np.allclose(recorder.heads[2], recorder.heads[3])


def test_clusters_left_empty_by_kmeans_are_refilled(shapes):
    # Two distinct images, so two distinct features for k = 4: k-means must leave clusters
    # empty, and the repair must give every cluster images before the sampler sees them.
    images, _ = shapes(96)
    images[:48], images[48:] = images[0], images[1]
    history, recorder, *_ = run(images, k=4, epochs=1)
    assert history["empty_clusters"][0] >= 2
    assert history["clusters"][0] == 4 and history["cluster_min"][0] >= 1
    assert sorted(np.unique(recorder.labels[0])) == [0, 1, 2, 3]


def test_head_reset_reaches_the_trainer_on_every_backend(shapes):
    # With lr = 0 nothing trains, so the head at the end of each epoch must be
    # exactly that epoch's fresh draw; a trainer that kept stale state (JAX)
    # would write back the previous epoch's head instead.
    images, _ = shapes(96)
    _, recorder, _, model = run(images, epochs=2, lr=0.0, seed=5)
    expected = np.random.default_rng(derive_seed(5, 1, HEAD_STREAM)).normal(0, 0.01, (84, 4))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model.head.kernel), expected.astype("float32")
    )
    np.testing.assert_allclose(recorder.heads[1], expected.astype("float32"))


def test_extract_features_pads_the_last_batch(shapes):
    images, _ = shapes(37)
    views = ImageViews.for_dataset("mnist")
    backbone = backbones.lenet(seed=0)
    features = extract_features(backbone, images, views, batch_size=16)
    assert features.shape == (37, 84) and features.dtype == np.float32
    direct = keras.ops.convert_to_numpy(backbone(views.fixed(images), training=False))
    np.testing.assert_allclose(features, direct, atol=MATMUL_ATOL)


def test_fewer_images_than_a_batch_are_padded_to_a_power_of_two(shapes):
    images, _ = shapes(5)
    views = ImageViews.for_dataset("mnist")
    backbone = backbones.lenet(seed=0)
    extractor = FeatureExtractor(backbone, views)
    network, forward = extractor._network(images.shape[1:] + (1,), "uint8")
    rows = []

    def counting(*args):
        rows.append(int(args[-1].shape[0]))
        return forward(*args)

    extractor._networks[(images.shape[1:] + (1,), "uint8")] = (network, counting)
    features = extractor(images, batch_size=256)
    assert rows == [8]  # not a whole batch of 256
    direct = keras.ops.convert_to_numpy(backbone(views.fixed(images), training=False))
    np.testing.assert_allclose(features, direct, atol=MATMUL_ATOL)
    extractor(shapes(300)[0], batch_size=256)
    assert rows[1:] == [256, 256]  # a batch and the padded rest


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(k=200), r"num_clusters=200 is larger than the number of images \(96\)"),
        (dict(pca_dim=100), "pca_dim=100 exceeds the feature dimension 84"),
        (dict(rgb=True), r"takes images of shape \(32, 32, 1\) .* gives \(32, 32, 3\)"),
    ],
)
def test_bad_combinations_fail_before_training(shapes, change, message):
    images, _ = shapes(96)
    views = ImageViews.for_dataset("mnist")
    if change.get("rgb"):
        images = np.repeat(images[..., None], 3, axis=-1)
        views = ImageViews.for_dataset("cifar10")
    data = PseudoLabelDataset(images, views, batch_size=32)
    model = DeepCluster(backbones.lenet(), num_clusters=change.get("k", 4))
    model.compile()
    callback = Reclustering(data, pca_dim=change.get("pca_dim"))
    with pytest.raises(ValueError, match=message):
        model.fit(data, epochs=1, callbacks=[callback], verbose=0)
    assert data.pseudo_labels is None  # nothing ran


@pytest.mark.backend_independent
@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(labels=np.zeros(5)), r"one label per image, shape \(96,\); got shape \(5,\)"),
        (dict(halt_after=0), "halt_after must be >= 1 or None; got 0"),
        (dict(pca_dim=-3), "pca_dim must be >= 1 or None; got -3"),
        (dict(kmeans_backend="cuda"), "kmeans_backend = 'cuda' is not one of auto, faiss, "),
        (dict(halt_when_stable=1.5), r"halt_when_stable must be in \(0, 1\] or None; got 1.5"),
        # None is no default here: it was a TypeError once halt_when_stable asked for it.
        (dict(halt_patience=None), "halt_patience must be an integer; got None"),
        (dict(seed=-1), "seed must be >= 0; got -1"),
        (dict(feature_jit_compile=1), "feature_jit_compile = 1 is not one of auto, True, False"),
    ],
)
def test_bad_callback_arguments(shapes, kwargs, message):
    images, _ = shapes(96)
    data = PseudoLabelDataset(images, ImageViews.for_dataset("mnist"), batch_size=32)
    with pytest.raises(ValueError, match=message):
        Reclustering(data, **kwargs)


@pytest.mark.backend_independent
def test_settings_are_one_checked_object_and_record_what_decides_the_labels(shapes):
    images, _ = shapes(32)
    data = PseudoLabelDataset(images, ImageViews.for_dataset("mnist"), batch_size=8)
    callback = Reclustering(data, pca_dim=16, halt_when_stable=0.9, seed=7, feature_batch_size=8)
    assert callback.config == ReclusteringSettings(
        pca_dim=16, halt_when_stable=0.9, seed=7, feature_batch_size=8
    )
    assert (callback.pca_dim, callback.seed, callback.kmeans_backend) == (16, 7, "auto")
    assert callback.settings() == {
        "pca_dim": 16,
        "pca_backend": "faiss",
        "kmeans_backend": "auto",
        "kmeans_iterations": 20,
        "halt_after": None,
        "halt_when_stable": 0.9,
        "halt_patience": 3,
        "seed": 7,
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        callback.config.seed = 8
    with pytest.raises(AttributeError, match="no attribute 'pca'"):
        callback.pca


def test_reclustering_needs_a_deepcluster_model(shapes):
    images, _ = shapes(32)
    data = PseudoLabelDataset(images, ImageViews.for_dataset("mnist"), batch_size=8)
    views = data.views
    # A model of views only: refused by the callback or, on backends where
    # Keras traces the model on a batch first, by Keras itself.
    plain = backbones.lenet()
    plain.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    refused = r"trains a keras_deepcluster.DeepCluster model|data dictionary with keys \['"
    with pytest.raises(ValueError, match=refused):
        plain.fit(data, epochs=1, callbacks=[Reclustering(data)], verbose=0)
    # A model that takes them but is no DeepCluster: the callback refuses it.
    inputs = {
        "images": keras.Input((28, 28, 1), dtype="uint8", name="images"),
        "boxes": keras.Input((5,), name="boxes"),
    }
    views_model = keras.Model(inputs, backbones.lenet()(RandomView(views)(*inputs.values())))
    views_model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="trains a keras_deepcluster.DeepCluster model"):
        views_model.fit(data, epochs=1, callbacks=[Reclustering(data)], verbose=0)


def test_every_training_batch_is_drawn_after_its_epochs_labels(shapes):
    # A data pipeline that prefetched the next epoch's first batches would
    # train them on the previous clustering.
    drawn = []

    class Logged(PseudoLabelDataset):
        def __getitem__(self, index):
            if self.pseudo_labels is not None:
                drawn.append((self.epoch, index))
            return super().__getitem__(index)

    images, _ = shapes(96)
    data = Logged(images, ImageViews.for_dataset("mnist"), batch_size=32, seed=0)
    model = DeepCluster(backbones.lenet(seed=0), num_clusters=4)
    model.compile(optimizer="sgd")
    model.fit(data, epochs=3, callbacks=[Reclustering(data)], verbose=0)
    assert drawn == [(epoch, index) for epoch in range(3) for index in range(3)]


def test_compiled_feature_extraction_gives_the_same_features(shapes):
    # jit_compile=True: XLA on TensorFlow, torch.compile on PyTorch (slow to compile), jit on
    # JAX; compared with the backbone run eagerly, layer by layer, on the NumPy fixed view.
    images, _ = shapes(37)
    views = ImageViews.for_dataset("mnist")
    backbone = backbones.lenet(seed=0)
    compiled = FeatureExtractor(backbone, views, jit_compile=True)
    eager = keras.ops.convert_to_numpy(backbone(views.fixed(images), training=False))
    np.testing.assert_allclose(compiled(images, 16), eager, atol=MATMUL_ATOL)


@pytest.mark.parametrize(
    "images, message",
    [
        (np.zeros((4, 28, 28, 3), np.uint8), "3 channels but the views normalise 1-channel"),
        (np.zeros((4, 28), np.uint8), r"shape \(N, H, W\) or \(N, H, W, C\)"),
        (np.zeros((4, 28, 28), np.int32), "uint8 in \\[0, 255\\] or floating point"),
    ],
)
def test_feature_extraction_rejects_images_it_cannot_view(images, message):
    extractor = FeatureExtractor(backbones.lenet(seed=0), ImageViews.for_dataset("mnist"))
    with pytest.raises(ValueError, match=message):
        extractor(images)


def test_features_can_stay_on_the_device(shapes):
    images, _ = shapes(37)
    extractor = FeatureExtractor(backbones.lenet(seed=0), ImageViews.for_dataset("mnist"))
    host = extractor(images, 16)
    device = extractor(images, 16, on_device=True)
    assert not isinstance(device, np.ndarray) and tuple(device.shape) == (37, 84)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(device), host, atol=MATMUL_ATOL)
    # Other batch sizes reuse the network (TensorFlow then traces for any batch size).
    for batch_size in (10, 64):
        np.testing.assert_allclose(extractor(images, batch_size), host, atol=MATMUL_ATOL)


def test_keras_kmeans_clusters_features_where_they_were_extracted(shapes, monkeypatch):
    images, labels = shapes(160)
    returned = []
    extract = FeatureExtractor.__call__

    def spy(self, *args, **kwargs):
        features = extract(self, *args, **kwargs)
        returned.append("host" if isinstance(features, np.ndarray) else "device")
        return features

    monkeypatch.setattr(FeatureExtractor, "__call__", spy)
    _, device_run, *_ = run(images, labels, epochs=2, kmeans_backend="keras")
    monkeypatch.setattr(feature_routes, "extract_to_device", lambda *args: False)
    _, host_run, *_ = run(images, labels, epochs=2, kmeans_backend="keras")
    assert returned == ["device", "device", "host", "host"]
    # The first clustering sees the same untrained network: the same clusters.
    assert nmi(device_run.labels[0], host_run.labels[0]) > 0.99
