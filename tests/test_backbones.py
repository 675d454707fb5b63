import keras
import numpy as np
import pytest
from conftest import MATMUL_ATOL
from scipy.signal import correlate2d

from keras_deepcluster import backbones
from keras_deepcluster.backbones.pooling import MaxPooling2D, max_pool_by_slices


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


def test_sobel_filter_computes_sobel():
    image = np.random.default_rng(0).uniform(size=(1, 9, 11, 3)).astype("float32")
    out = keras.ops.convert_to_numpy(backbones.SobelFilter()(image))[0]
    gray = np.pad(image[0].mean(-1), 1)
    gx = correlate2d(gray, np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]]), mode="valid")
    gy = correlate2d(gray, np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]]), mode="valid")
    np.testing.assert_allclose(out[..., 0], gx, atol=4 * MATMUL_ATOL)
    np.testing.assert_allclose(out[..., 1], gy, atol=4 * MATMUL_ATOL)
    model = backbones.alexnet_micro(seed=0)
    assert model.get_layer("sobel").weights == []  # frozen: nothing to train or re-draw


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
    layer = MaxPooling2D(pool_size, strides)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(layer(images)), keras.ops.convert_to_numpy(expected)
    )
    assert MaxPooling2D.from_config(layer.get_config()).get_config() == layer.get_config()


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="the slices route is JAX's")
def test_backbones_pool_by_slices_on_jax_cpu_with_keras_gradient():
    import jax

    # Few values, many equal maxima in a window: of those the first gets the gradient.
    images = np.random.default_rng(0).integers(0, 3, (2, 9, 9, 4)).astype("float32")
    weights = np.random.default_rng(1).normal(size=(2, 8, 8, 4)).astype("float32")

    def loss(layer):
        return lambda x: (layer(x) * weights).sum()

    ours, keras_pool = MaxPooling2D(2, 1), keras.layers.MaxPooling2D(2, 1)
    np.testing.assert_array_equal(jax.grad(loss(ours))(images), jax.grad(loss(keras_pool))(images))
    # XLA:CPU's select-and-scatter is what the slices avoid, in the backbones' pools too.
    assert "reduce_window" in str(jax.make_jaxpr(jax.grad(loss(keras_pool)))(images))
    assert "reduce_window" not in str(jax.make_jaxpr(jax.grad(loss(ours)))(images))
    lenet = backbones.lenet(seed=0)
    assert "reduce_window" not in str(jax.make_jaxpr(lenet)(np.zeros((1, 32, 32, 1), "float32")))


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
