"""Runs DeepCluster with two simulated CPU devices; `test_devices.py` starts it.

JAX reads XLA_FLAGS when it is imported and TensorFlow fixes its logical
devices when it initialises, so both are set here, before keras is imported.
JAX is kept on the CPU, so that a machine with one GPU tests two devices too.

Usage:
    python tests/platform/two_devices.py compare OUT.npz   # 1 device, then 2; saves both
    python tests/platform/two_devices.py cli ARGS...       # `deepcluster ARGS...`
"""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ["JAX_PLATFORMS"] = "cpu"
if os.environ.get("KERAS_BACKEND") == "tensorflow":
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_deepcluster as kdc  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))  # tests/, for conftest
from conftest import make_shapes  # noqa: E402


def train(devices: int, epochs: int = 3, feature_batch: int = 128) -> dict:
    """Each epoch's pseudo-labels, loss and NMI of a small run on `devices` devices."""
    keras.utils.clear_session()
    images, classes = make_shapes(512, seed=0)
    distribution = kdc.data_parallel(devices)
    with distribution.scope():
        kdc.set_random_seed(0)
        views = kdc.ImageViews.for_dataset("mnist", scale=(0.3, 1.0))
        data = kdc.PseudoLabelDataset(images, views, batch_size=64, seed=0, epoch_length=2048)
        model = kdc.DeepCluster(kdc.backbones.lenet(seed=0), 8, weight_decay=1e-3)
        model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
        reclustering = kdc.Reclustering(data, classes, seed=0, feature_batch_size=feature_batch)
        labels = []
        keep = keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: labels.append(reclustering.pseudo_labels)
        )
        history = model.fit(data, epochs=epochs, callbacks=[reclustering, keep], verbose=0)
        replicas = kdc.platform.devices.replica_count(model)
    return {
        "labels": np.stack(labels),
        "loss": np.asarray(history.history["loss"]),
        "cross_entropy": np.asarray(history.history["cross_entropy"]),
        "weight_decay": np.asarray(history.history["weight_decay"]),
        "nmi_labels": np.asarray(history.history["nmi_labels"]),
        "replicas": replicas,
    }


if __name__ == "__main__":
    if sys.argv[1] == "compare":
        one, two = train(1), train(2)
        try:
            train(2, epochs=1, feature_batch=127)
            uneven = ""
        except ValueError as error:
            uneven = str(error)
        np.savez(
            sys.argv[2],
            **{f"one_{key}": value for key, value in one.items()},
            **{f"two_{key}": value for key, value in two.items()},
            uneven_batch_error=uneven,
        )
    else:
        from keras_deepcluster_cli.main import main

        main(sys.argv[2:])
