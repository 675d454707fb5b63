"""The method: one DeepCluster epoch.

Views of the images, feature extraction, PCA-whitening and k-means, the uniform
sampler over clusters, the `DeepCluster` model and the `Reclustering` callback.
"""

from keras_deepcluster import lazy_modules


def __getattr__(name: str):
    return lazy_modules.submodule(__name__, name)
