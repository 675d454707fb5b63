"""Evaluation: cluster agreement metrics, the linear probe and the weighted kNN classifier."""

from keras_deepcluster.evaluation.cluster_metrics import (
    ami,
    ari,
    cluster_scores,
    hungarian_accuracy,
    label_entropy,
    label_noise,
    many_to_one_accuracy,
    matched_confusion,
    nmi,
)
from keras_deepcluster.evaluation.few_labels import cross_validated_accuracy
from keras_deepcluster.evaluation.filter_quality import FilterQuality, filter_quality
from keras_deepcluster.evaluation.knn import weighted_knn
from keras_deepcluster.evaluation.linear_probe import InverseSqrtDecay, ProbeResult, linear_probe

__all__ = [
    "FilterQuality",
    "InverseSqrtDecay",
    "ProbeResult",
    "ami",
    "ari",
    "cluster_scores",
    "cross_validated_accuracy",
    "filter_quality",
    "hungarian_accuracy",
    "label_entropy",
    "label_noise",
    "linear_probe",
    "many_to_one_accuracy",
    "matched_confusion",
    "nmi",
    "weighted_knn",
]
