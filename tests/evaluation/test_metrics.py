"""The field's clustering metrics (ACC, ARI, AMI) and the weighted kNN protocol."""

import itertools

import numpy as np
import pytest
from sklearn import metrics

from keras_deepcluster.evaluation import (
    ami,
    ari,
    cluster_scores,
    hungarian_accuracy,
    many_to_one_accuracy,
    matched_confusion,
    weighted_knn,
)


@pytest.mark.backend_independent
def test_accuracies_by_hand():
    clusters = np.array([0, 0, 1, 1, 2, 2, 2])
    labels = np.array([1, 1, 0, 0, 0, 2, 2])
    # One-to-one: 0->1 (2 right), 1->0 (2), 2->2 (2): 6 of 7. Many-to-one gives the same here.
    assert hungarian_accuracy(clusters, labels) == pytest.approx(6 / 7)
    assert many_to_one_accuracy(clusters, labels) == pytest.approx(6 / 7)
    # Four clusters, two classes: one-to-one leaves two clusters unmatched (wrong),
    # many-to-one lets every cluster predict its majority.
    clusters = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 0])
    assert hungarian_accuracy(clusters, labels) == pytest.approx(4 / 8)
    assert many_to_one_accuracy(clusters, labels) == pytest.approx(7 / 8)
    # Cluster ids are names: a permutation of them changes nothing.
    assert hungarian_accuracy(3 - clusters, labels) == hungarian_accuracy(clusters, labels)


@pytest.mark.backend_independent
def test_hungarian_accuracy_is_the_best_of_all_maps():
    rng = np.random.default_rng(0)
    for _ in range(20):
        labels = rng.integers(0, 4, 60)
        clusters = np.where(rng.random(60) < 0.6, labels, rng.integers(0, 4, 60))
        best = max(
            np.mean(np.array(permutation)[clusters] == labels)
            for permutation in itertools.permutations(range(4))
        )
        assert hungarian_accuracy(clusters, labels) == pytest.approx(best)


@pytest.mark.backend_independent
def test_scores_agree_with_scikit_learn_and_confusion_is_matched():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 5, 300)
    clusters = (labels + (rng.random(300) < 0.3)) % 5 + 10  # shifted ids, 30 % moved
    assert ari(clusters, labels) == pytest.approx(metrics.adjusted_rand_score(labels, clusters))
    assert ami(clusters, labels) == pytest.approx(
        metrics.adjusted_mutual_info_score(labels, clusters)
    )
    scores = cluster_scores(clusters, labels)
    assert set(scores) == {"nmi", "ami", "ari", "acc", "acc_many_to_one"}
    table, ids = matched_confusion(clusters, labels)
    assert table.sum() == 300 and sorted(ids) == list(range(10, 15))
    assert np.trace(table) / 300 == pytest.approx(scores["acc"])
    assert np.all(np.diag(table) == table.max(axis=1))  # matched: the diagonal dominates
    with pytest.raises(ValueError, match="equal length"):
        ari(clusters, labels[:-1])


def reference_knn(train, y_train, test, k, temperature):
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    test = test / np.linalg.norm(test, axis=1, keepdims=True)
    predictions = []
    for row in test @ train.T:
        nearest = np.argsort(-row)[:k]
        votes = np.zeros(y_train.max() + 1)
        np.add.at(votes, y_train[nearest], np.exp(row[nearest] / temperature))
        predictions.append(np.argmax(votes))
    return np.array(predictions)


def test_weighted_knn_matches_a_brute_force_reference():
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(3, 16))
    y_train, y_test = rng.integers(0, 3, 240), rng.integers(0, 3, 50)
    train = centres[y_train] + rng.normal(scale=1.5, size=(240, 16))
    test = centres[y_test] + rng.normal(scale=1.5, size=(50, 16))
    result = weighted_knn(train, y_train, test, y_test, k=(5, 20, 500), batch_size=16)
    assert set(result) == {5, 20, 500}
    for asked, used in ((5, 5), (20, 20), (500, 240)):  # at most the 240 training images
        expected = np.mean(reference_knn(train, y_train, test, used, 0.07) == y_test)
        assert result[asked] == pytest.approx(expected)
    assert result[20] > 0.6  # the classes are separable
    # A test image equal to a training image takes that image's label at k = 1.
    assert weighted_knn(train, y_train, train[:30], y_train[:30], k=1)[1] == 1.0


@pytest.mark.backend_independent
def test_weighted_knn_refuses_bad_input():
    with pytest.raises(ValueError, match="One label per image"):
        weighted_knn(np.ones((4, 2)), np.zeros(3), np.ones((2, 2)), np.zeros(2))
    with pytest.raises(ValueError, match="differ in size"):
        weighted_knn(np.ones((4, 2)), np.zeros(4), np.ones((2, 3)), np.zeros(2))
    with pytest.raises(ValueError, match="temperature > 0"):
        weighted_knn(np.ones((4, 2)), np.zeros(4), np.ones((2, 2)), np.zeros(2), temperature=0)
