"""`TorchNetwork`: the PyTorch training forward pass as direct torch calls, equal to Keras's."""

import dataclasses

import keras
import numpy as np
import pytest

from keras_deepcluster import (
    DeepCluster,
    FeatureExtractor,
    PseudoLabelDataset,
    Reclustering,
    backbones,
)
from keras_deepcluster.method.features import layer_model
from keras_deepcluster.platform import model_routes
from keras_deepcluster.platform.torch_network import TorchNetwork, torch_ops
from keras_deepcluster.runs.recipe import load_recipe
from keras_deepcluster.runs.recipe_data import image_views

torch_only = pytest.mark.skipif(keras.backend.backend() != "torch", reason="PyTorch only")

NETWORKS = {
    "lenet": backbones.lenet,
    # Sobel, stride 3, dropout on a 4-D tensor; zero padding (the ImageNet AlexNet).
    "alexnet_micro": backbones.alexnet_micro,
    "alexnet_padded": lambda: backbones.alexnet(input_shape=(67, 67, 3)),
    "mlp": lambda: mlp(),  # flat inputs
}


def mlp():
    inputs = keras.Input((12,))
    hidden = keras.layers.ReLU()(keras.layers.BatchNormalization()(keras.layers.Dense(8)(inputs)))
    return keras.Model(inputs, keras.layers.Dense(6)(hidden))


def to_np(x):
    return keras.ops.convert_to_numpy(x)


def twin_models(make_backbone, **kwargs):
    """Two equal DeepClusters (weights, head, dropout seeds), direct and through Keras."""
    models = []
    for direct_torch in (True, False):
        keras.utils.set_random_seed(0)
        models.append(DeepCluster(make_backbone(), direct_torch=direct_torch, **kwargs))
    return models


def short_step(model) -> bool:
    """Whether `model`'s training steps are `torch_step.train_step`."""
    return getattr(model.route, "loss_tracker", None) is not None


def test_the_environment_turns_it_off(monkeypatch):
    monkeypatch.setenv("KERAS_DEEPCLUSTER_DIRECT_TORCH", "0")
    assert DeepCluster(backbones.lenet(seed=0), 3).direct_torch is False
    monkeypatch.setenv("KERAS_DEEPCLUSTER_DIRECT_TORCH", "1")
    assert DeepCluster(backbones.lenet(seed=0), 3).direct_torch is True
    assert DeepCluster(backbones.lenet(seed=0), 3, direct_torch=False).direct_torch is False


def test_only_pytorch_gets_one():
    network = TorchNetwork.of(backbones.lenet(seed=0))
    assert (network is not None) == (keras.backend.backend() == "torch")


def test_the_route_is_keras_s_but_on_pytorch_with_direct_torch():
    model = DeepCluster(backbones.lenet(seed=0), 3)
    direct = keras.backend.backend() == "torch"
    assert type(model.route) is (model_routes.TorchRoute if direct else model_routes.KerasRoute)
    off = DeepCluster(backbones.lenet(seed=0), 3, direct_torch=False)
    assert type(off.route) is model_routes.KerasRoute


@torch_only
def test_symbolic_inputs_take_keras_route():
    """Keras builds the model on symbolic tensors (fit's first step): Keras's calls."""
    views = image_views(load_recipe("mnist"))
    model = DeepCluster(backbones.lenet(seed=0), 3, views=views)
    inputs = {"images": keras.Input((28, 28, 1), dtype="uint8"), "boxes": keras.Input((5,))}
    assert type(model.route.for_inputs(inputs["images"])) is model_routes.KerasRoute
    assert tuple(model(inputs, training=True).shape) == (None, 3)


@torch_only
def test_layers_first_called_in_another_graph_run_through_keras():
    """The chain is read from each layer's first call (`Layer.input`, `output`)."""
    dense, relu = keras.layers.Dense(4), keras.layers.ReLU()
    first = keras.Input((3,))
    relu(dense(first))
    inputs = keras.Input((3,))
    assert TorchNetwork.of(keras.Model(inputs, relu(dense(inputs)))) is None
    assert TorchNetwork.of(keras.Model(first, relu.output)) is not None


@torch_only
def test_a_network_with_a_layer_it_does_not_know_runs_through_keras():
    inputs = keras.Input((8, 8, 1))
    unknown = keras.Model(inputs, keras.layers.Conv2D(2, 3, padding="same")(inputs))
    assert TorchNetwork.of(unknown) is None
    branched = keras.Model(inputs, keras.layers.Add()([inputs, keras.layers.ReLU()(inputs)]))
    assert TorchNetwork.of(branched) is None
    model = DeepCluster(unknown, num_clusters=3)
    model(np.zeros((2, 8, 8, 1), "float32"), training=True)
    assert type(model.route) is model_routes.KerasRoute


@torch_only
@pytest.mark.parametrize(
    "name, batch_size",
    [(name, 6) for name in sorted(NETWORKS)] + [("mlp", 1)],  # 1: one value per channel
)
def test_training_forward_pass_and_batch_statistics_equal_keras(name, batch_size):
    direct, keras_calls = twin_models(NETWORKS[name], num_clusters=5)
    shape = (batch_size,) + tuple(direct.backbone.input_shape[1:])
    x = np.random.default_rng(1).normal(size=shape).astype("float32")
    keras.utils.set_random_seed(3)  # unseeded dropout draws from PyTorch's global generator
    ours = direct(x, training=True)
    keras.utils.set_random_seed(3)
    theirs = keras_calls(x, training=True)
    assert type(direct.route) is model_routes.TorchRoute
    np.testing.assert_allclose(to_np(ours), to_np(theirs), rtol=1e-4, atol=1e-5)
    for a, b in zip(direct.non_trainable_variables, keras_calls.non_trainable_variables):
        np.testing.assert_allclose(to_np(a), to_np(b), rtol=1e-5, atol=1e-6, err_msg=a.path)
    if name.startswith("alexnet"):  # dropout is on: not the inference output
        assert not np.allclose(to_np(ours), to_np(direct(x)), atol=1e-3)


@torch_only
@pytest.mark.parametrize("dtype, flip", [("uint8", True), ("float32", False)])
def test_the_direct_random_view_is_keras_ops_view(dtype, flip):
    from keras_deepcluster.method import views

    cifar_views = dataclasses.replace(image_views(load_recipe("cifar10")), flip=flip)
    rng = np.random.default_rng(6)
    images = rng.integers(0, 256, (16, 30, 34, 3)).astype(dtype)
    if dtype == "float32":
        images /= 255
    boxes = cifar_views.random_boxes(16, 30, 34, rng)
    assert (boxes[:, 4] == 1).any() == flip
    images, boxes = keras.ops.convert_to_tensor(images), keras.ops.convert_to_tensor(boxes)
    ours = views.random_view(images, boxes, cifar_views, torch_ops())
    theirs = views.random_view(images, boxes, cifar_views)
    assert tuple(ours.shape) == (16, cifar_views.size, cifar_views.size, 3)
    np.testing.assert_allclose(to_np(ours), to_np(theirs), rtol=1e-6, atol=1e-6)


@torch_only
@pytest.mark.parametrize(
    "name, layout", [("alexnet_micro", "channels_last"), ("lenet", "channels_last_convolutions")]
)
def test_each_network_runs_in_the_memory_layout_measured_faster(name, layout, monkeypatch):
    """The AlexNets channels-last throughout; LeNet in plain memory but for its convolutions."""
    import torch
    import torch.nn.functional as F

    network = TorchNetwork.of(NETWORKS[name]())
    assert network.layout == layout
    conv_inputs, outputs = [], []
    conv2d = F.conv2d

    def recorded_conv2d(x, *args, **kwargs):
        if x.shape[1] > 1:  # one channel's memory is both layouts
            conv_inputs.append(x.is_contiguous(memory_format=torch.channels_last))
        return conv2d(x, *args, **kwargs)

    def recorded(function):
        def run(layer, x, training):
            y = function(layer, x, training)
            if y.ndim == 4 and min(y.shape[1:]) > 1:  # a layout is visible in the strides
                outputs.append((layer, y.is_contiguous(memory_format=torch.channels_last)))
            return y

        return run

    monkeypatch.setattr(F, "conv2d", recorded_conv2d)
    network.functions = tuple(recorded(f) for f in network.functions)
    shape = (2,) + tuple(network.layers[0].input.shape[1:])
    network(keras.ops.convert_to_tensor(np.zeros(shape, "float32")), training=True)
    assert len(conv_inputs) >= 1 and all(conv_inputs)
    after_the_first = [flag for layer, flag in outputs if layer.name != "sobel"]
    assert len(after_the_first) >= 4
    assert after_the_first == [layout == "channels_last"] * len(after_the_first)


@torch_only
@pytest.mark.parametrize("name", ["lenet", "alexnet_micro"])
def test_both_memory_layouts_give_the_same_outputs_and_gradients(name):
    from keras_deepcluster.platform.torch_network import LAYOUTS

    backbone = NETWORKS[name]()
    x = np.random.default_rng(7).normal(size=(4,) + tuple(backbone.input_shape[1:]))
    results = []
    for layout in LAYOUTS:
        network = TorchNetwork.of(backbone, layout=layout)
        for variable in backbone.trainable_variables:
            variable.value.grad = None
        keras.utils.set_random_seed(8)  # dropout
        out = network(keras.ops.convert_to_tensor(x.astype("float32")), training=True)
        out.square().sum().backward()
        results.append([to_np(out)] + [to_np(v.value.grad) for v in backbone.trainable_variables])
    # Summed in other orders: equal within float rounding of the largest values (the
    # gradients of the biases before batch norm are zero but for that rounding).
    scale = max(np.abs(values).max() for values in results[1])
    for ours, theirs in zip(*results):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5 * scale)


@torch_only
def test_an_unknown_memory_layout_is_refused():
    with pytest.raises(ValueError, match="layout='nhwc' is not one of channels_last, channels_l"):
        TorchNetwork.of(backbones.lenet(seed=0), layout="nhwc")


@torch_only
def test_gradients_equal_keras():
    models = twin_models(backbones.alexnet_micro, num_clusters=4, weight_decay=1e-3)
    x = np.random.default_rng(2).normal(size=(4, 32, 32, 3)).astype("float32")
    y = keras.ops.convert_to_tensor(np.array([0, 1, 2, 3]))
    gradients = []
    for model in models:
        model.compile(optimizer="sgd")
        keras.utils.set_random_seed(5)
        loss = model.compute_loss(x, y, model(x, training=True), training=True)
        model.zero_grad()
        loss.backward()
        gradients.append([to_np(v.value.grad) for v in model.trainable_variables])
    for ours, theirs, variable in zip(*gradients, models[0].trainable_variables):
        np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-6, err_msg=variable.path)


@torch_only
def test_a_deepcluster_run_equals_the_keras_calls_run(tmp_path):
    """Three epochs of the real loop (direct forward and training step against Keras's):
    same losses, same pseudo-labels; saved and loaded."""
    recipe = load_recipe("fashion_mnist")
    images = np.random.default_rng(0).integers(0, 256, (96, 28, 28, 1), np.uint8)
    runs = []
    for model in twin_models(lambda: backbones.lenet(seed=0), num_clusters=4, weight_decay=1e-4):
        data = PseudoLabelDataset(images, image_views(recipe), batch_size=16, seed=0)
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
        reclustering = Reclustering(data, seed=0)
        labels, batch_logs = [], []
        keep = keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: labels.append(reclustering.pseudo_labels.copy()),
            on_train_batch_end=lambda batch, logs: batch_logs.append(
                {key: float(value) for key, value in logs.items()}
            ),
        )
        history = model.fit(data, epochs=3, verbose=0, callbacks=[reclustering, keep])
        runs.append((history.history, labels, model, batch_logs))
    (ours, our_labels, model, our_logs), (theirs, their_labels, keras_model, their_logs) = runs
    # What callbacks see after each step (a NaN stop reads it): Keras's logs.
    assert len(our_logs) == 3 * len(data) and our_logs[0].keys() == their_logs[0].keys()
    for key in ("loss", "cross_entropy", "weight_decay"):
        np.testing.assert_allclose(
            [logs[key] for logs in our_logs], [logs[key] for logs in their_logs], rtol=1e-4
        )
    # The direct run took the short training step; the other Keras's own.
    assert short_step(model) and not short_step(keras_model)
    np.testing.assert_allclose(ours["loss"], theirs["loss"], rtol=1e-4)
    np.testing.assert_allclose(ours["cross_entropy"], theirs["cross_entropy"], rtol=1e-4)
    np.testing.assert_allclose(ours["weight_decay"], theirs["weight_decay"], rtol=1e-4)
    assert len(our_labels) == 3
    for a, b in zip(our_labels, their_labels):
        np.testing.assert_array_equal(a, b)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.direct_torch is True
    x = np.random.default_rng(3).normal(size=(2, 32, 32, 1)).astype("float32")
    np.testing.assert_allclose(to_np(loaded(x)), to_np(model(x)), rtol=1e-5, atol=1e-6)
    loaded.fit(data, epochs=1, verbose=0, callbacks=[Reclustering(data, seed=0)])
    assert short_step(loaded)  # the compile config's loss is the default one


@torch_only
@pytest.mark.parametrize("layer", [None, "conv_2"])
def test_extracted_features_equal_keras(layer):
    """Feature extraction (inference, the fixed view) through direct calls: Keras's features."""
    backbone = backbones.lenet(seed=0)
    if layer is not None:
        backbone = layer_model(backbone, layer)
    views = image_views(load_recipe("fashion_mnist"))
    images = np.random.default_rng(4).integers(0, 256, (300, 28, 28), np.uint8)
    ours = FeatureExtractor(backbone, views)(images, batch_size=128)
    theirs = FeatureExtractor(backbone, views, direct_torch=False)(images, batch_size=128)
    assert ours.shape == (300, 84 if layer is None else 1600)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


@torch_only
def test_the_short_training_step_keeps_keras_step_where_it_cannot_apply():
    """A loss of the user's or a layer loss keeps Keras's step; its results are Keras's."""
    from keras_deepcluster import DeepCluster

    x = np.random.default_rng(5).normal(size=(32, 32, 32, 1)).astype("float32")
    y = np.arange(32) % 4
    models = []
    for loss in (None, keras.losses.SparseCategoricalCrossentropy(from_logits=True, name="own")):
        keras.utils.set_random_seed(0)
        model = DeepCluster(backbones.lenet(seed=0), num_clusters=4, weight_decay=1e-4)
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss=loss)
        history = model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
        models.append((model, history.history))
    (short, short_logs), (full, full_logs) = models
    assert short_step(short) and not short_step(full)
    for key in ("loss", "cross_entropy", "weight_decay"):
        np.testing.assert_allclose(short_logs[key], full_logs[key], rtol=1e-5)
    np.testing.assert_allclose(
        to_np(short.head.kernel), to_np(full.head.kernel), rtol=1e-4, atol=1e-6
    )
    for ours, theirs in zip(short.trainable_variables, full.trainable_variables):
        np.testing.assert_allclose(to_np(ours), to_np(theirs), rtol=1e-4, atol=1e-6)
    scaled = DeepCluster(backbones.lenet(seed=0), num_clusters=4, weight_decay=1e-4)
    scaled.compile(optimizer=keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.01)))
    scaled.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert not short_step(scaled)  # the decay's gradient would miss the loss scale
    regularized = DeepCluster(backbones.lenet(seed=0), num_clusters=4)
    regularized.head.kernel.regularizer = keras.regularizers.L2(0.1)
    regularized.compile(optimizer="sgd")
    regularized.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert not short_step(regularized)
