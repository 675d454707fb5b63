import keras
import numpy as np
import pytest

from keras_deepcluster import DeepCluster, ImageViews, PseudoLabelDataset, Reclustering, backbones
from keras_deepcluster.method.pseudo_label_dataset import uniform_cluster_sample


@pytest.mark.backend_independent
def test_sampler_draws_clusters_equally_often():
    labels = np.array([0] * 900 + [1] * 90 + [2] * 10)
    picks = uniform_cluster_sample(labels, 1000, np.random.default_rng(0))
    counts = np.bincount(labels[picks])
    assert len(picks) == 1000 and counts.max() - counts.min() <= 1
    # Large clusters are drawn without replacement, small ones with.
    assert len(set(picks[labels[picks] == 0])) == counts[0]
    assert len(set(picks[labels[picks] == 2])) == 10


@pytest.mark.backend_independent
def test_sampler_skips_empty_cluster_ids():
    labels = np.array([0] * 50 + [5] * 50)
    picks = uniform_cluster_sample(labels, 100, np.random.default_rng(0))
    assert sorted(set(labels[picks])) == [0, 5]


@pytest.mark.backend_independent
def test_batches_have_fixed_shapes_and_constant_length():
    images = np.random.default_rng(0).integers(0, 255, (103, 28, 28), dtype=np.uint8)
    data = PseudoLabelDataset(images, ImageViews.for_dataset("mnist"), batch_size=16, seed=0)
    assert len(data) == 7  # ceil(103 / 16), a constant epoch length of ~N
    for epoch, k in enumerate([3, 10]):
        data.set_pseudo_labels(np.arange(103) % k, epoch)
        assert len(data) == 7
        batches = [data[i] for i in range(len(data))]
        shapes = {(x["images"].shape, x["boxes"].shape, y.shape) for x, y in batches}
        assert shapes == {((16, 28, 28, 1), (16, 5), (16,))}
        assert all(x["images"].dtype == np.uint8 for x, _ in batches)  # a quarter of float32


@pytest.mark.backend_independent
def test_batches_pair_images_with_their_pseudo_labels():
    # Image i is constant with value i, its label is i % 4.
    images = np.repeat(np.arange(40, dtype=np.uint8)[:, None, None], 28, 1).repeat(28, 2)
    views = ImageViews(size=32, resize=44, mean=(0.0,), std=(1.0,))
    data = PseudoLabelDataset(images, views, batch_size=8, seed=3)
    data.set_pseudo_labels(np.arange(40) % 4, epoch=0)
    x, y = data[2]
    np.testing.assert_array_equal(y, x["images"][:, 0, 0, 0] % 4)


@pytest.mark.backend_independent
def test_boxes_are_crops_inside_the_image():
    images = np.zeros((200, 28, 20), np.uint8)
    data = PseudoLabelDataset(images, ImageViews.for_dataset("mnist", flip=True), batch_size=100)
    data.set_pseudo_labels(np.arange(200) % 4, epoch=0)
    boxes = np.concatenate([data[i][0]["boxes"] for i in range(2)])
    top, left, height, width, flip = boxes.T
    assert (top >= 0).all() and (top + height <= 28).all() and (height >= 1).all()
    assert (left >= 0).all() and (left + width <= 20).all() and (width >= 1).all()
    assert set(flip) == {0.0, 1.0} and 0.3 < flip.mean() < 0.7
    area = height * width / (28 * 20)
    assert area.min() >= 0.08 - 0.01 and area.max() <= 1.0  # RandomResizedCrop's scale


@pytest.mark.backend_independent
def test_batches_depend_only_on_seed_epoch_and_index():
    images = np.random.default_rng(0).integers(0, 255, (50, 28, 28), dtype=np.uint8)
    views = ImageViews.for_dataset("mnist")
    a, b = (PseudoLabelDataset(images, views, batch_size=10, seed=1) for _ in range(2))
    a.set_pseudo_labels(np.arange(50) % 5, 2)
    b.set_pseudo_labels(np.arange(50) % 5, 2)
    np.testing.assert_array_equal(a[3][0]["boxes"], b[3][0]["boxes"])
    np.testing.assert_array_equal(a[3][0]["images"], b[3][0]["images"])
    b.set_pseudo_labels(np.arange(50) % 5, 3)
    assert not np.array_equal(a[3][0]["boxes"], b[3][0]["boxes"])


@pytest.mark.backend_independent
def test_epoch_length_multiplies_steps():
    images = np.zeros((100, 28, 28), np.uint8)
    data = PseudoLabelDataset(
        images, ImageViews.for_dataset("mnist"), batch_size=32, epoch_length=400
    )
    assert len(data) == 13


@pytest.mark.backend_independent
@pytest.mark.parametrize(
    "images, message",
    [
        (np.zeros((4, 28), np.uint8), r"shape \(N, H, W\) or \(N, H, W, C\); got shape \(4, 28\)"),
        (np.zeros((4, 28, 28), np.int64), "uint8 in \\[0, 255\\] or floating point"),
        (np.zeros((0, 28, 28), np.uint8), "at least one image"),
        (np.zeros((4, 28, 28, 3), np.uint8), "3 channels but the views normalise 1-channel"),
    ],
)
def test_bad_images(images, message):
    with pytest.raises(ValueError, match=message):
        PseudoLabelDataset(images, ImageViews.for_dataset("mnist"))


@pytest.mark.backend_independent
def test_bad_labels_and_batch_size():
    views = ImageViews.for_dataset("mnist")
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        PseudoLabelDataset(np.zeros((4, 28, 28), np.uint8), views, batch_size=0)
    with pytest.raises(
        ValueError, match=r"batch_size=8 is larger than the 4 images an epoch draws"
    ):
        PseudoLabelDataset(np.zeros((4, 28, 28), np.uint8), views, batch_size=8)
    with pytest.raises(ValueError, match=r"than the 12 images an epoch draws \(4 images x 3\)"):
        PseudoLabelDataset(np.zeros((4, 28, 28), np.uint8), views, batch_size=16, epoch_length=12)
    data = PseudoLabelDataset(np.zeros((4, 28, 28), np.uint8), views, batch_size=2)
    with pytest.raises(
        ValueError, match=r"one pseudo-label per image, shape \(4,\); got shape \(3,\)"
    ):
        data.set_pseudo_labels(np.zeros(3), 0)


@pytest.mark.parametrize("given", [None, 1, 3])
def test_fit_chooses_workers_only_when_not_given(shapes, given):
    images, _ = shapes(64)
    kwargs = {} if given is None else {"workers": given}
    data = PseudoLabelDataset(images, ImageViews.for_dataset("mnist"), batch_size=32, **kwargs)
    model = DeepCluster(backbones.lenet(seed=0), num_clusters=4)
    model.compile(optimizer="sgd")
    model.fit(data, epochs=1, callbacks=[Reclustering(data)], verbose=0)
    # Two threads on TensorFlow with one device (see `choose_workers`), else one.
    chosen = 2 if keras.backend.backend() == "tensorflow" else 1
    assert data.workers == (chosen if given is None else given)


@pytest.mark.backend_independent
def test_cluster_members_group_indices_by_cluster_in_one_sort():
    from keras_deepcluster.method.clustering import cluster_members

    labels = np.random.default_rng(0).integers(0, 30, 5000)
    labels[labels == 7] = 3  # an empty cluster
    groups = cluster_members(labels)
    expected = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    assert len(groups) == len(expected) == 29
    for got, want in zip(groups, expected):
        np.testing.assert_array_equal(got, want)
