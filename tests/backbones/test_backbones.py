import keras
import numpy as np
import pytest

from keras_deepcluster import backbones
from keras_deepcluster.backbones.pooling import max_pool_by_slices


@pytest.mark.parametrize(
    "name, shape, features, probe_layer, probe_shape",
    [
        ("lenet", (32, 32, 1), 84, "conv_2", (10, 10, 16)),
        ("alexnet_micro", (32, 32, 3), 1024, "relu_5", (2, 2, 128)),
    ],
)
def test_paper_backbones(name, shape, features, probe_layer, probe_shape):
    model = backbones.get(name, seed=0)
    assert model.input_shape[1:] == shape
    assert model.output_shape == (None, features)
    assert model.get_layer(probe_layer).output.shape[1:] == probe_shape
    out = model.predict_on_batch(
        np.random.default_rng(0).normal(size=(2,) + shape).astype("float32")
    )
    assert out.shape == (2, features) and np.isfinite(out).all()


def test_imagenet_alexnet_layout():
    model = backbones.alexnet(seed=0)
    assert model.output_shape == (None, 4096)
    assert model.get_layer("relu_5").output.shape[1:] == (13, 13, 256)
    assert model.get_layer("max_pool_3").output.shape[1:] == (6, 6, 256)


def test_seed_fixes_the_weights_and_init_follows_the_paper():
    a, b, c = (backbones.lenet(seed=s) for s in (7, 7, 8))
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    kernel = lambda m: keras.ops.convert_to_numpy(m.get_layer("conv_2").kernel)  # noqa: E731
    assert not np.array_equal(kernel(a), kernel(c))
    big = backbones.alexnet_micro(seed=0)
    conv = keras.ops.convert_to_numpy(big.get_layer("conv_3").kernel)  # 3x3x126 -> 192
    assert np.std(conv) == pytest.approx(np.sqrt(2 / (3 * 3 * 192)), rel=0.02)
    dense = keras.ops.convert_to_numpy(big.get_layer("linear_1").kernel)
    assert np.std(dense) == pytest.approx(0.01, rel=0.02)
    assert not keras.ops.convert_to_numpy(big.get_layer("linear_1").bias).any()


@pytest.mark.parametrize(
    "pool_size, strides, size",
    [((2, 2), (2, 2), (28, 28)), ((2, 2), (1, 1), (9, 7)), ((3, 3), (2, 2), (13, 14))],
)
def test_max_pool_by_slices_equals_keras_pooling(pool_size, strides, size):
    images = np.random.default_rng(0).normal(size=(2, *size, 3)).astype("float32")
    expected = keras.ops.max_pool(images, pool_size, strides, padding="valid")
    pooled = max_pool_by_slices(keras.ops.convert_to_tensor(images), pool_size, strides)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(pooled), keras.ops.convert_to_numpy(expected)
    )


@pytest.mark.backend_independent
def test_unknown_backbone():
    with pytest.raises(
        ValueError,
        match="Unknown backbone 'resnet'; known backbones: alexnet, alexnet_micro, lenet",
    ):
        backbones.get("resnet")

    with pytest.raises(
        ValueError, match="Backbone 'lenet' has no option 'sobel'; its options: input_shape"
    ):
        backbones.get("lenet", sobel=True)
