"""Runs one process of a small DeepCluster job; `test_processes.py` starts several.

Usage:
    python tests/platform/two_processes.py train COORDINATOR NUM_PROCESSES PROCESS_ID OUT.npz \
        [DATA_SEED]
        (NUM_PROCESSES 1: a plain run, no coordinator contacted)
    python tests/platform/two_processes.py cluster COORDINATOR NUM_PROCESSES PROCESS_ID OUT.npz
    python tests/platform/two_processes.py cli ARGS...   # `deepcluster ARGS...`

JAX is kept on the CPU, so that a machine with one GPU tests two processes too.
"""

import os
import sys

os.environ["JAX_PLATFORMS"] = "cpu"

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_deepcluster as kdc  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))  # tests/, for conftest
from conftest import make_shapes  # noqa: E402


def train(data_seed: int = 0, seed: int = 0, epochs: int = 3) -> dict:
    """Each epoch's pseudo-labels, loss and NMI of a small run on every process's device."""
    images, classes = make_shapes(512, seed=data_seed)
    with kdc.data_parallel(None if kdc.platform.processes.process_count() > 1 else 1).scope():
        kdc.set_random_seed(seed)
        views = kdc.ImageViews.for_dataset("mnist", scale=(0.3, 1.0))
        data = kdc.PseudoLabelDataset(images, views, batch_size=64, seed=seed, epoch_length=2048)
        model = kdc.DeepCluster(kdc.backbones.lenet(seed=seed), 8, weight_decay=1e-3)
        model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
        reclustering = kdc.Reclustering(
            data, classes, pca_dim=16, kmeans_backend="keras", seed=seed, feature_batch_size=100
        )
        labels = []
        keep = keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: labels.append(reclustering.pseudo_labels)
        )
        history = model.fit(data, epochs=epochs, callbacks=[reclustering, keep], verbose=0)
    return {
        "labels": np.stack(labels),
        "loss": np.asarray(history.history["loss"]),
        "nmi_labels": np.asarray(history.history["nmi_labels"]),
        "processes": kdc.platform.processes.process_count(),
    }


def cluster() -> dict:
    """A repair of empty clusters and a clustering, of features split over the processes."""
    features = np.random.default_rng(0).normal(size=(301, 12)).astype(np.float32)
    shard = keras.ops.convert_to_tensor(features[kdc.platform.processes.shard(len(features))])
    # Clusters 3 and 4 empty; cluster 0, the largest, has rows in both shards.
    labels = np.repeat(np.arange(3), [200, 60, 41])
    repaired, empty = kdc.method.clustering.fill_empty_clusters(labels, shard, 5)
    result = kdc.cluster_features(shard, 7, seed=3, pca_dim=8)
    return {
        "repaired": repaired,
        "empty": empty,
        "labels": result.labels,
        "objective": result.objective,
        "whitening": result.whitening.projection,
    }


if __name__ == "__main__":
    if sys.argv[1] in ("train", "cluster"):
        coordinator, count, index, out, *data_seed = sys.argv[2:]
        if int(count) > 1:
            kdc.platform.processes.initialize(coordinator, int(count), int(index), timeout=60)
        work = train if sys.argv[1] == "train" else cluster
        np.savez(out, **work(*map(int, data_seed)))
    else:
        from keras_deepcluster_cli.main import main

        main(sys.argv[2:])
