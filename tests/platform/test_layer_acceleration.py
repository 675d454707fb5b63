"""`accelerate`: the package's formulas in a live model's layers, at run time only."""

import keras
import numpy as np
import pytest
from conftest import MATMUL_ATOL
from scipy.signal import correlate2d

import keras_deepcluster as kdc
from keras_deepcluster import backbones
from keras_deepcluster.backbones.sobel import is_sobel_front_end, sobel_by_slices
from keras_deepcluster.platform import devices
from keras_deepcluster.platform.layer_acceleration import accelerate
from keras_deepcluster.runs.build import build_backbone

BACKEND = keras.backend.backend()
JAX_CPU = BACKEND == "jax" and not devices.accelerator_available()


def replaced(layer) -> bool:
    """Whether `layer`'s `call` is one that `accelerate` put into the instance."""
    return "call" in vars(layer)


def pools(model):
    return [layer for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]


def test_accelerate_replaces_calls_of_instances_and_saves_nothing():
    backbone = backbones.alexnet_micro(seed=0)
    config = keras.saving.serialize_keras_object(backbone)
    assert accelerate(backbone) is backbone
    assert keras.saving.serialize_keras_object(backbone) == config
    assert replaced(backbone.get_layer("sobel"))  # on every backend: the package's numbers
    assert [replaced(pool) for pool in pools(backbone)] == [JAX_CPU] * 3
    # Other instances, and a clone, keep Keras's calls.
    assert not replaced(backbones.alexnet_micro().get_layer("sobel"))
    assert not replaced(keras.models.clone_model(backbone).get_layer("sobel"))
    # Inside a model that holds the backbone, too.
    model = accelerate(kdc.DeepCluster(backbones.alexnet_micro(seed=0), num_clusters=3))
    assert replaced(model.backbone.get_layer("sobel"))


def test_the_front_end_runs_sobel_by_slices_which_its_convolutions_give_within_rounding():
    image = np.random.default_rng(0).uniform(size=(1, 9, 11, 3)).astype("float32")
    gray = np.pad(image[0].mean(-1), 1)
    expected = np.stack(
        [
            correlate2d(gray, np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]]), mode="valid"),
            correlate2d(gray, np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]]), mode="valid"),
        ],
        axis=-1,
    )
    plain = backbones.sobel_convolutions((9, 11, 3))
    fast = accelerate(keras.Sequential([backbones.sobel_convolutions((9, 11, 3))]))
    by_slices = keras.ops.convert_to_numpy(sobel_by_slices(keras.ops.convert_to_tensor(image)))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(fast(image)), by_slices)
    np.testing.assert_allclose(by_slices[0], expected, atol=4 * MATMUL_ATOL)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(plain(image))[0], expected, atol=4e-5)


def test_a_front_end_with_other_kernels_is_not_replaced():
    front_end = backbones.sobel_convolutions((8, 8, 3))
    assert is_sobel_front_end(front_end)
    kernel = front_end.layers[1].kernel
    kernel.assign(keras.ops.convert_to_numpy(kernel) * 2)
    assert not is_sobel_front_end(front_end)
    accelerate(keras.Sequential([front_end]))
    assert not replaced(front_end)


@pytest.mark.skipif(not JAX_CPU, reason="the slices pool on JAX's CPU backend")
def test_on_jax_cpu_pools_by_slices_with_keras_output_and_gradient():
    import jax

    # Few values, many equal maxima in a window: of those the first gets the gradient.
    images = np.random.default_rng(0).integers(0, 3, (2, 9, 9, 4)).astype("float32")
    weights = np.random.default_rng(1).normal(size=(2, 8, 8, 4)).astype("float32")

    def pool():
        return keras.Sequential([keras.Input((9, 9, 4)), keras.layers.MaxPooling2D(2, 1)])

    def loss(model):
        return lambda x: (model(x) * weights).sum()

    keras_pool, ours = pool(), accelerate(pool())
    np.testing.assert_array_equal(ours(images), keras_pool(images))
    np.testing.assert_array_equal(jax.grad(loss(ours))(images), jax.grad(loss(keras_pool))(images))
    # XLA:CPU's select-and-scatter is what the slices avoid, in the backbones' pools too.
    assert "reduce_window" in str(jax.make_jaxpr(jax.grad(loss(keras_pool)))(images))
    assert "reduce_window" not in str(jax.make_jaxpr(jax.grad(loss(ours)))(images))
    lenet = accelerate(backbones.lenet(seed=0))
    assert "reduce_window" not in str(jax.make_jaxpr(lenet)(np.zeros((1, 32, 32, 1), "float32")))


@pytest.mark.skipif(BACKEND != "torch", reason="the PyTorch twin")
def test_the_torch_twin_convolves_the_channel_mean_for_the_front_end_old_and_new():
    from keras_deepcluster.platform import torch_network

    images = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype("float32")
    backbone = accelerate(backbones.alexnet_micro(seed=0))
    network = torch_network.TorchNetwork.of(backbone)
    assert network is not None and network.functions[0] is torch_network._sobel
    old = keras.Model(backbone.input, backbones.SobelFilter()(backbone.input))
    assert torch_network.TorchNetwork.of(old).functions == (torch_network._sobel,)
    direct = keras.ops.convert_to_numpy(network(keras.ops.convert_to_tensor(images)))
    through_keras = keras.ops.convert_to_numpy(backbone(images, training=False))
    np.testing.assert_allclose(direct, through_keras, rtol=1e-4, atol=10 * MATMUL_ATOL)


def test_the_package_accelerates_what_it_builds_and_loads(shared_digits_run):
    backbone = build_backbone(kdc.load_recipe("cifar10"), (32, 32, 3))
    assert replaced(backbone.get_layer("sobel"))
    run = kdc.Run.open(shared_digits_run)
    assert [replaced(pool) for pool in pools(run.backbone)] == [JAX_CPU] * 2


def test_deep_cluster_accelerates_the_backbone_it_is_given():
    """From Python as from the command line: a DeepCluster's Sobel is the package's."""
    model = kdc.DeepCluster(backbones.alexnet_micro(seed=0), num_clusters=3)
    assert replaced(model.backbone.get_layer("sobel"))
    assert [replaced(pool) for pool in pools(model.backbone)] == [JAX_CPU] * 3
