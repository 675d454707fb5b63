"""The weighted kNN classifier protocol of self-supervised learning.

Each test image votes with its k most similar training images (cosine
similarity of the features), each neighbour weighted by exp(similarity / T);
the class with the largest vote wins. This is the protocol of Wu et al.
(2018), as solo-learn and lightly implement it (k = 20 and 200, T = 0.07).
The similarities are computed a batch of test images at a time on the
device (`keras.ops`), so memory is batch x N, never N x M.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from keras import ops


def weighted_knn(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    k: int | Sequence[int] = (20, 200),
    temperature: float = 0.07,
    batch_size: int = 256,
) -> dict[int, float]:
    """Top-1 accuracy of the weighted kNN classifier, for each k.

    Args:
        train_features: (N, ...) features of the labelled images (flattened).
        train_labels: (N,) their integer labels.
        test_features: (M, ...) features of the images to classify.
        test_labels: (M,) their true labels.
        k: Neighbours per vote (clipped to N); one int or several.
        temperature: T of the exp(similarity / T) weights, > 0.
        batch_size: Test images per device batch (memory: batch_size x N).

    Returns:
        ``{k: accuracy}`` for each k asked for.

    Examples:
        >>> weighted_knn(train, y_train, test, y_test, k=(20, 200))
        {20: 0.84, 200: 0.82}
    """
    train = _unit_rows(train_features, "train_features")
    test = _unit_rows(test_features, "test_features")
    train_labels, test_labels = np.asarray(train_labels), np.asarray(test_labels)
    if train_labels.shape != (len(train),) or test_labels.shape != (len(test),):
        raise ValueError(
            f"One label per image is needed: train {train.shape[0]} images, "
            f"{train_labels.shape} labels; test {test.shape[0]} images, {test_labels.shape} labels."
        )
    if train.shape[1] != test.shape[1]:
        raise ValueError(
            f"Train and test features differ in size: {train.shape[1]} and {test.shape[1]}."
        )
    ks = sorted({int(k)} if np.isscalar(k) else {int(value) for value in k})
    if not ks or ks[0] < 1 or not temperature > 0:
        raise ValueError(f"k must be >= 1 and temperature > 0; got k={k!r}, {temperature=}.")
    classes, train_classes = np.unique(train_labels, return_inverse=True)
    neighbours = min(ks[-1], len(train))
    train_tensor = ops.convert_to_tensor(train)
    train_onehot = ops.one_hot(ops.convert_to_tensor(train_classes.astype(np.int32)), len(classes))
    correct = {value: 0 for value in ks}
    for start in range(0, len(test), batch_size):
        batch = ops.convert_to_tensor(test[start : start + batch_size])
        similarity, index = ops.top_k(ops.matmul(batch, ops.transpose(train_tensor)), neighbours)
        votes = ops.take(train_onehot, index, axis=0) * ops.expand_dims(
            ops.exp(similarity / temperature), -1
        )  # (batch, neighbours, classes)
        truth = test_labels[start : start + batch_size]
        for value in ks:
            best = ops.argmax(ops.sum(votes[:, : min(value, neighbours)], axis=1), axis=-1)
            correct[value] += int(np.sum(classes[keras.ops.convert_to_numpy(best)] == truth))
    return {value: correct[value] / len(test) for value in ks}


def _unit_rows(features, name: str) -> np.ndarray:
    features = np.asarray(features, np.float32).reshape(len(features), -1)
    if len(features) == 0 or not np.isfinite(features).all():
        raise ValueError(f"{name} must be a non-empty array of finite numbers.")
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, 1e-12)
