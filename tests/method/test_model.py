import keras
import numpy as np
import pytest
from conftest import MATMUL_ATOL

from keras_deepcluster import (
    DeepCluster,
    ImageViews,
    PseudoLabelDataset,
    RandomView,
    Reclustering,
    backbones,
)


def to_np(x):
    return keras.ops.convert_to_numpy(x)


def trained_model(k=5, momentum=0.9):
    model = DeepCluster(backbones.lenet(seed=0), num_clusters=k, weight_decay=1e-3)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=momentum))
    x = np.random.default_rng(0).normal(size=(64, 32, 32, 1)).astype("float32")
    keras.Model.fit(model, x, np.arange(64) % k, batch_size=16, epochs=1, verbose=0)
    return model


def test_head_is_relu_dense_k_and_features_are_the_backbone_output():
    model = DeepCluster(backbones.lenet(seed=0), num_clusters=7)
    assert model(np.zeros((2, 32, 32, 1), "float32")).shape == (2, 7)
    assert model.feature_dim == 84
    assert model.head.kernel.shape == (84, 7)
    tapped = DeepCluster(backbones.lenet(seed=0), num_clusters=7, feature_layer="conv_2")
    assert tapped.feature_dim == 1600 and tapped.head.kernel.shape == (1600, 7)


def test_reset_head_redraws_weights_and_zeroes_only_the_head_momentum():
    model = trained_model()
    slots = {v.name: v for v in model.optimizer.variables}
    head_slots = [v for n, v in slots.items() if "head" in n and "momentum" in n]
    body_slots = [v for n, v in slots.items() if "conv_1" in n and "momentum" in n]
    assert len(head_slots) == 2 and body_slots
    assert all(np.abs(to_np(v)).sum() > 0 for v in head_slots + body_slots)
    before = to_np(model.head.kernel).copy()
    model.reset_head(seed=3)
    kernel = to_np(model.head.kernel)
    assert not np.allclose(kernel, before)
    assert np.std(kernel) == pytest.approx(0.01, rel=0.1)
    assert not to_np(model.head.bias).any()
    assert all(not to_np(v).any() for v in head_slots)
    assert all(np.abs(to_np(v)).sum() > 0 for v in body_slots)
    model.reset_head(seed=3)
    np.testing.assert_array_equal(to_np(model.head.kernel), kernel)


def test_weight_decay_is_coupled_l2_on_every_trainable_variable():
    model = trained_model()
    x = np.zeros((2, 32, 32, 1), "float32")
    y = np.array([0, 1])
    y_pred = model(x)
    plain = to_np(keras.Model.compute_loss(model, x, y, y_pred, training=True))
    decayed = to_np(model.compute_loss(x, y, y_pred, training=True))
    squares = sum(float(np.sum(to_np(w) ** 2)) for w in model.trainable_variables)
    assert decayed - plain == pytest.approx(0.5 * 1e-3 * squares, rel=1e-4)
    names = {w.path for w in model.trainable_variables}
    assert any("batch_norm" in n for n in names) and any("bias" in n for n in names)


def test_cross_entropy_and_weight_decay_are_logged_apart(shapes):
    images, _ = shapes(128)
    data = PseudoLabelDataset(images, ImageViews.for_dataset("mnist"), batch_size=32)
    model = DeepCluster(backbones.lenet(seed=0), num_clusters=4, weight_decay=1e-2)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    history = model.fit(data, epochs=2, callbacks=[Reclustering(data)], verbose=0).history
    loss, entropy, decay = (np.array(history[k]) for k in ("loss", "cross_entropy", "weight_decay"))
    np.testing.assert_allclose(entropy + decay, loss, rtol=1e-5)  # loss is their sum
    squares = sum(float(np.sum(to_np(w) ** 2)) for w in model.trainable_variables)
    assert decay[-1] == pytest.approx(0.5 * 1e-2 * squares, rel=0.05)  # the epoch's mean penalty
    assert entropy[0] == pytest.approx(np.log(4), abs=0.2)  # a fresh head: about chance


def test_save_and_load_round_trip(tmp_path):
    model = trained_model(k=6)
    path = tmp_path / "run.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, DeepCluster)
    assert loaded.num_clusters == 6 and loaded.weight_decay == pytest.approx(1e-3)
    names = [layer.name for layer in model.backbone.layers]
    assert [layer.name for layer in loaded.backbone.layers] == names
    x = np.random.default_rng(1).normal(size=(4, 32, 32, 1)).astype("float32")
    np.testing.assert_allclose(
        to_np(loaded.predict_on_batch(x)), to_np(model.predict_on_batch(x)), atol=1e-6
    )
    assert isinstance(loaded.optimizer, keras.optimizers.SGD)


def test_random_views_are_made_inside_the_model_and_saved_with_it(tmp_path):
    views = ImageViews.for_dataset("fashion_mnist", flip=True)
    model = DeepCluster(backbones.lenet(seed=0), num_clusters=4, views=views)
    images = np.random.default_rng(0).integers(0, 256, (6, 28, 28, 1), dtype=np.uint8)
    boxes = views.random_boxes(6, 28, 28, np.random.default_rng(1))
    from_boxes = to_np(model({"images": images, "boxes": boxes}))
    from_views = to_np(model(RandomView(views)(images, boxes)))
    np.testing.assert_allclose(from_boxes, from_views, atol=MATMUL_ATOL)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.views == views
    np.testing.assert_allclose(
        to_np(loaded({"images": images, "boxes": boxes})), from_boxes, atol=1e-5
    )
    with pytest.raises(ValueError, match="has no views to make them with"):
        DeepCluster(backbones.lenet(), num_clusters=3)({"images": images, "boxes": boxes})


def test_fit_refuses_data_with_other_views(shapes):
    images, _ = shapes(32)
    model = DeepCluster(
        backbones.lenet(), num_clusters=3, views=ImageViews.for_dataset("fashion_mnist")
    )
    model.compile()
    data = PseudoLabelDataset(images, ImageViews.for_dataset("mnist"), batch_size=8)
    with pytest.raises(ValueError, match="built for the views .* but the data has"):
        model.fit(data, epochs=1, callbacks=[Reclustering(data)])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_clusters=1), "num_clusters must be >= 2; got 1"),
        (dict(num_clusters=2.5), "num_clusters must be an integer; got 2.5"),
        (
            dict(num_clusters=5, feature_layer="conv_9"),
            "has no layer 'conv_9'; its layers are: image, conv_1",
        ),
        (dict(num_clusters=5, weight_decay=-1.0), "weight_decay must be >= 0"),
    ],
)
def test_bad_model_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DeepCluster(backbones.lenet(), **kwargs)


def test_backbone_must_be_a_functional_model():
    with pytest.raises(ValueError, match="functional keras.Model"):
        DeepCluster(keras.layers.Dense(3), num_clusters=3)


def test_fit_on_pseudo_labels_needs_reclustering():
    model = DeepCluster(backbones.lenet(), num_clusters=3)
    model.compile()
    data = PseudoLabelDataset(
        np.zeros((8, 28, 28), np.uint8), ImageViews.for_dataset("mnist"), batch_size=4
    )
    with pytest.raises(ValueError, match="needs a Reclustering callback"):
        model.fit(data, epochs=1)
