import gc
import tracemalloc

import keras
import numpy as np
import pytest

from keras_deepcluster import ImageViews, backbones
from keras_deepcluster.evaluation import (
    InverseSqrtDecay,
    cross_validated_accuracy,
    label_entropy,
    label_noise,
    linear_probe,
    nmi,
)


@pytest.mark.backend_independent
def test_cluster_metrics_on_hand_computed_cases():
    labels = np.array([0, 0, 1, 1])
    assert nmi([0, 0, 1, 1], labels) == pytest.approx(1.0)
    assert nmi([1, 1, 0, 0], labels) == pytest.approx(1.0)
    assert nmi([0, 1, 0, 1], labels) == pytest.approx(0.0, abs=1e-12)
    assert label_entropy([0, 0, 1, 1], labels) == pytest.approx(0.0)
    assert label_entropy([0, 1, 0, 1], labels) == pytest.approx(np.log(2))
    assert label_noise([0, 0, 0, 1], [0, 0, 1, 1]) == pytest.approx((1 / 3 + 0) / 2)
    with pytest.raises(ValueError, match="equal length"):
        nmi([0, 1], [0, 1, 1])


def test_inverse_sqrt_decay():
    schedule = InverseSqrtDecay(0.01, 1e-4)
    assert float(keras.ops.convert_to_numpy(schedule(0))) == pytest.approx(0.01)
    assert float(keras.ops.convert_to_numpy(schedule(10_000))) == pytest.approx(
        0.01 / np.sqrt(1.01), rel=1e-5
    )


def test_linear_probe_on_a_random_network_beats_chance(shapes):
    x, y = shapes(400, seed=0)
    x_test, y_test = shapes(200, seed=1)
    views = ImageViews.for_dataset("mnist")
    result = linear_probe(
        backbones.lenet(seed=0), "conv_2", (x, y), (x_test, y_test), views, epochs=3, flip=True
    )
    assert result.feature_dim == 1600 and len(result.epoch_accuracies) == 3
    assert result.accuracy > 0.4  # four balanced classes: chance is 0.25
    # The reported accuracy is the last epoch's (the authors' protocol), the best one their max.
    assert result.accuracy == result.epoch_accuracies[-1]
    assert result.best_accuracy == max(result.epoch_accuracies)


def test_linear_probe_leaves_no_features_behind(shapes):
    # TensorFlow's from_generator, behind Keras's PyDataset adapter, keeps every
    # dataset alive; a sweep that probed 36 runs ran out of memory that way.
    x, y = shapes(2000, seed=0)
    views = ImageViews.for_dataset("mnist")
    features_mib = 2 * len(x) * 1600 * 4 / 2**20  # the plain and flipped conv_2 features
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        linear_probe(
            backbones.lenet(seed=0), "conv_2", (x, y), (x[:50], y[:50]), views, epochs=1, flip=True
        )
        gc.collect()
        left_mib = (tracemalloc.get_traced_memory()[0] - before) / 2**20
    finally:
        tracemalloc.stop()
    assert left_mib < features_mib / 4, f"{left_mib:.1f} MiB left after the probe"


def test_linear_probe_bad_input(shapes):
    x, y = shapes(20)
    views = ImageViews.for_dataset("mnist")
    with pytest.raises(ValueError, match="has no layer 'conv_7'"):
        linear_probe(backbones.lenet(), "conv_7", (x, y), (x, y), views)
    with pytest.raises(ValueError, match="The train split has 20 images but 19 labels"):
        linear_probe(backbones.lenet(), "conv_2", (x, y[:19]), (x, y), views)


@pytest.mark.parametrize("classifier", ["knn", "linear"])
def test_cross_validated_accuracy_sees_the_classes_in_random_features(shapes, classifier):
    x, y = shapes(200, seed=0)
    views = ImageViews.for_dataset("mnist")
    score = cross_validated_accuracy(backbones.lenet(seed=0), "conv_2", x, y, views, classifier)
    assert 0.4 < score <= 1  # four balanced classes: chance is 0.25
    # Same folds for the same seed; scrambled labels fall to chance.
    assert score == cross_validated_accuracy(
        backbones.lenet(seed=0), "conv_2", x, y, views, classifier
    )
    scrambled = np.random.default_rng(0).permutation(y)
    assert (
        cross_validated_accuracy(backbones.lenet(seed=0), "conv_2", x, scrambled, views, classifier)
        < 0.4
    )


def test_cross_validated_accuracy_bad_input(shapes):
    x, y = shapes(20)
    views = ImageViews.for_dataset("mnist")
    with pytest.raises(ValueError, match="classifier must be one of"):
        cross_validated_accuracy(backbones.lenet(), "conv_2", x, y, views, "svm")
    with pytest.raises(ValueError, match="two or more images of every labelled class"):
        cross_validated_accuracy(backbones.lenet(), "conv_2", x, np.r_[y[:19], 9], views)
    with pytest.raises(ValueError, match="has no layer 'conv_7'"):
        cross_validated_accuracy(backbones.lenet(), "conv_7", x, y, views)
