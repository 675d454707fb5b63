"""A backbone holds only Keras's layers: saved alone or inside a run's model, it loads in
plain Keras; files that hold the package's older layers still load with the package."""

import json
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import MATMUL_ATOL
from plain_keras import run_in_plain_keras

from keras_deepcluster import backbones
from keras_deepcluster.backbones.sobel import is_sobel_front_end
from keras_deepcluster.method.model import DeepCluster
from keras_deepcluster.platform.layer_acceleration import accelerate
from keras_deepcluster.runs.deployment import plain_backbone

OLD_FILES = Path(__file__).parent / "old_files"
# Every option of every backbone; the ImageNet AlexNet on small images, for its size.
VARIANTS = [("lenet", {"batch_norm": batch_norm}) for batch_norm in (True, False)] + [
    (name, {"sobel": sobel, "batch_norm": batch_norm, **size})
    for name, size in (("alexnet_micro", {}), ("alexnet", {"input_shape": (67, 67, 3)}))
    for sobel in (True, False)
    for batch_norm in (True, False)
]


def foreign_classes(config) -> list[str]:
    """The classes in a saved config that are not Keras's own."""
    found = []
    if isinstance(config, dict):
        module, registered = config.get("module"), config.get("registered_name")
        if "class_name" in config and module is not None:
            # A registered name "package>Class" is a class registered outside Keras.
            if not (module == "keras" or module.startswith("keras.")) or ">" in (registered or ""):
                found.append(f"{module}.{config['class_name']} ({registered})")
        config = list(config.values())
    if isinstance(config, list):
        for value in config:
            found += foreign_classes(value)
    return found


@pytest.mark.parametrize("name, options", VARIANTS)
def test_a_backbone_config_holds_only_keras_classes(name, options):
    backbone = accelerate(backbones.get(name, **options))  # as the package runs it
    assert foreign_classes(keras.saving.serialize_keras_object(backbone)) == []
    assert [layer.name == "sobel" for layer in backbone.layers].count(True) == options.get(
        "sobel", False
    )


@pytest.mark.long_running
def test_saved_backbones_load_in_plain_keras_and_give_the_same_features(tmp_path):
    images = np.random.default_rng(0).uniform(-1, 1, (4, 32, 32, 3)).astype("float32")
    saved = {
        "lenet": backbones.lenet(seed=0),
        "lenet_no_bn": backbones.lenet(batch_norm=False, seed=1),
        "sobel": backbones.alexnet_micro(seed=2),
        "sobel_no_bn": backbones.alexnet_micro(batch_norm=False, seed=3),
        "rgb": backbones.alexnet_micro(sobel=False, seed=4),
    }
    inputs = {}
    for name, backbone in saved.items():
        accelerate(backbone).save(tmp_path / f"{name}.keras")
        inputs[name] = images[..., : backbone.input_shape[-1]]
        np.save(tmp_path / f"{name}.npy", inputs[name])
    # A run's model: the package's DeepCluster around a backbone of Keras's layers.
    model = DeepCluster(accelerate(backbones.alexnet_micro(seed=5)), num_clusters=4)
    model.save(tmp_path / "model.keras")
    with zipfile.ZipFile(tmp_path / "model.keras") as archive:
        config = json.loads(archive.read("config.json"))
    assert foreign_classes(config) == [
        "keras_deepcluster.method.model.DeepCluster (keras_deepcluster>DeepCluster)"
    ]
    assert foreign_classes(config["config"]["backbone"]) == []
    loaded = accelerate(keras.saving.load_model(tmp_path / "model.keras"))
    loaded.backbone.save(tmp_path / "from_run.keras")
    saved["from_run"], inputs["from_run"] = loaded.backbone, images
    np.save(tmp_path / "from_run.npy", images)
    run_in_plain_keras(
        f"""
import keras, numpy as np
for name in {list(saved)!r}:
    model = keras.saving.load_model(name + ".keras")
    assert all(type(l).__module__.startswith("keras.") for l in model._flatten_layers())
    np.save(name + "-out.npy", keras.ops.convert_to_numpy(model(np.load(name + ".npy"))))
""",
        tmp_path,
    )
    for name, backbone in saved.items():
        live = keras.ops.convert_to_numpy(backbone(inputs[name], training=False))
        plain = np.load(tmp_path / f"{name}-out.npy")
        np.testing.assert_allclose(plain, live, rtol=1e-4, atol=10 * MATMUL_ATOL, err_msg=name)


def test_the_seed_leaves_the_sobel_front_end_frozen_and_whole():
    backbone = backbones.alexnet_micro(seed=0)
    front_end = backbone.get_layer("sobel")
    assert is_sobel_front_end(front_end) and front_end.trainable_weights == []
    assert all(not w.trainable for w in front_end.weights) and len(front_end.weights) == 2
    assert not any("sobel" in w.path for w in backbone.trainable_weights)


def test_files_saved_with_the_older_layers_load_with_the_package():
    """`old_files/` was saved by the version whose backbones held `SobelFilter` and the
    package's `MaxPooling2D`; its outputs were computed then."""
    model = keras.saving.load_model(OLD_FILES / "sobel_and_pooling.keras")
    assert isinstance(model.get_layer("sobel"), backbones.SobelFilter)
    assert type(model.get_layer("max_pool_1")) is backbones.MaxPooling2D
    with np.load(OLD_FILES / "sobel_and_pooling.npz") as recorded:
        images, outputs = recorded["images"], recorded["outputs"]
    for network in (accelerate(model), plain_backbone(model)):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(network(images)), outputs, rtol=1e-5, atol=MATMUL_ATOL
        )
    assert foreign_classes(keras.saving.serialize_keras_object(plain_backbone(model))) == []
