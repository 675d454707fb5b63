"""Evaluation: cluster agreement metrics and the linear probe."""

from keras_deepcluster.evaluation.cluster_metrics import label_entropy, label_noise, nmi
from keras_deepcluster.evaluation.few_labels import cross_validated_accuracy
from keras_deepcluster.evaluation.filter_quality import FilterQuality, filter_quality
from keras_deepcluster.evaluation.linear_probe import InverseSqrtDecay, ProbeResult, linear_probe

__all__ = [
    "FilterQuality",
    "InverseSqrtDecay",
    "ProbeResult",
    "cross_validated_accuracy",
    "filter_quality",
    "label_entropy",
    "label_noise",
    "linear_probe",
    "nmi",
]
