"""Scores of a network from a few labelled images: cross-validated kNN or linear accuracy."""

from __future__ import annotations

import keras
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer, StandardScaler

from keras_deepcluster.method.features import extract_features, layer_model
from keras_deepcluster.method.views import ImageViews

CLASSIFIERS = ("knn", "linear")


def cross_validated_accuracy(
    backbone: keras.Model,
    layer: str,
    images: np.ndarray,
    labels: np.ndarray,
    views: ImageViews,
    classifier: str = "knn",
    folds: int = 5,
    seed: int = 0,
) -> float:
    """Mean held-out accuracy of a classifier on a frozen layer, over stratified folds.

    Every labelled image is used for training and, once, for scoring, so a few
    hundred labels judge a network more steadily than one train/test split:
    ``"knn"`` is a 10-nearest-neighbour vote on L2-normalised features (cosine),
    ``"linear"`` a logistic regression on standardised features.

    Args:
        backbone: The network to judge; not modified.
        layer: The layer whose flattened output is scored (the probe's layer).
        images: The labelled images.
        labels: Their labels.
        views: Gives the fixed view of the images.
        classifier: ``"knn"`` or ``"linear"``.
        folds: Folds of the cross-validation (fewer if a class has fewer images).
        seed: Seed of the fold assignment.

    Examples:
        >>> cross_validated_accuracy(model.backbone, "conv_2", x[:600], y[:600],
        ...     ImageViews.for_dataset("fashion_mnist"))
        0.71
    """
    if classifier not in CLASSIFIERS:
        raise ValueError(f"classifier must be one of {CLASSIFIERS}; got {classifier!r}.")
    labels = np.asarray(labels, np.int64)
    counts = np.bincount(labels)
    smallest = counts[counts > 0].min() if len(labels) else 0
    if labels.shape != (len(images),) or smallest < 2:
        raise ValueError(
            f"cross-validation needs one label per image and two or more images of every "
            f"labelled class; got {len(labels)} labels for {len(images)} images, "
            f"{smallest} in the smallest class."
        )
    features = extract_features(layer_model(backbone, layer), images, views)
    model = (
        make_pipeline(Normalizer(), KNeighborsClassifier(n_neighbors=min(10, len(labels) // 2)))
        if classifier == "knn"
        else make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    )
    split = StratifiedKFold(n_splits=min(folds, smallest), shuffle=True, random_state=seed)
    return float(cross_val_score(model, features, labels, cv=split).mean())
