"""Evaluation: cluster agreement metrics, the linear probe and the weighted kNN classifier.

Each name is imported on first use (PEP 562), as the package's face does: the metrics need
scikit-learn and the probes Keras, and `deepcluster --help` needs neither.
"""

import importlib

# Public name -> the module (relative to this package) that defines it.
_NAMES = {
    "FilterQuality": "filter_quality",
    "InverseSqrtDecay": "linear_probe",
    "ProbeResult": "linear_probe",
    "ami": "cluster_metrics",
    "ari": "cluster_metrics",
    "cluster_scores": "cluster_metrics",
    "cross_validated_accuracy": "few_labels",
    "filter_quality": "filter_quality",
    "hungarian_accuracy": "cluster_metrics",
    "label_entropy": "cluster_metrics",
    "label_noise": "cluster_metrics",
    "linear_probe": "linear_probe",
    "many_to_one_accuracy": "cluster_metrics",
    "matched_confusion": "cluster_metrics",
    "nmi": "cluster_metrics",
    "weighted_knn": "knn",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
