"""The training input of DeepCluster: augmented images with their cluster ids."""

from __future__ import annotations

import math

import keras
import numpy as np

from keras_deepcluster.data.disk_images import DiskImages
from keras_deepcluster.method.clustering import cluster_members
from keras_deepcluster.method.views import ImageViews
from keras_deepcluster.platform import devices, processes


def check_images(images: np.ndarray, channels: int | None = None) -> np.ndarray:
    """Validates an image array and returns it as NHWC (no copy when possible).

    With `channels` (the views' channel count), the images must have that many.
    `DiskImages` stay on disk.
    """
    if not isinstance(images, DiskImages):
        images = np.asarray(images)
    if images.ndim not in (3, 4):
        raise ValueError(
            f"Images must be an array of shape (N, H, W) or (N, H, W, C); got shape {images.shape}."
        )
    if images.ndim == 3:
        images = images[..., None]
    if len(images) == 0:
        raise ValueError("Images must hold at least one image; got 0.")
    if images.dtype != np.uint8 and not np.issubdtype(images.dtype, np.floating):
        raise ValueError(
            "Images must be uint8 in [0, 255] or floating point in [0, 1]; got "
            f"dtype {images.dtype}."
        )
    if channels is not None and images.shape[-1] != channels:
        raise ValueError(
            f"Images have {images.shape[-1]} channels but the views normalise "
            f"{channels}-channel images."
        )
    return images


def uniform_cluster_sample(labels: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """Indices drawing every non-empty cluster equally often, shuffled.

    The sampler of DeepCluster (``UnifLabelSampler``): each non-empty cluster
    contributes ``ceil(length / clusters)`` indices, drawn with replacement only
    when the cluster is smaller than that; the result is shuffled and cut to
    `length`, so cluster counts differ by at most one.
    """
    clusters = cluster_members(labels)
    per_cluster = math.ceil(length / len(clusters))
    picks = [
        rng.choice(members, per_cluster, replace=len(members) < per_cluster) for members in clusters
    ]
    indices = np.concatenate(picks)
    rng.shuffle(indices)
    return indices[:length]


def epoch_length(
    num_images: int, batch_size: int, epoch_multiplier: int = 1, min_steps: int | None = None
) -> int:
    """Images drawn per clustering: ``N * epoch_multiplier``, or ``min_steps`` batches if more.

    The authors' schedule (one pass over N images per clustering) gives 469
    steps on Fashion-MNIST's 60,000 images but 24 on 3,000: too few for the
    fresh head to learn anything, so the backbone trains through a random head
    and its features drift (docs/design.md, "Small data"). A floor on the steps
    per clustering leaves large data sets as the authors ran them and trains
    small ones long enough to improve.

    Examples:
        >>> epoch_length(60_000, 128, min_steps=400)  # 469 steps: unchanged
        60000
        >>> epoch_length(3_000, 128, min_steps=400)  # 24 steps -> 400
        51200
    """
    length = num_images * epoch_multiplier
    if min_steps is not None and math.ceil(length / batch_size) < min_steps:
        length = min_steps * batch_size
    return length


class PseudoLabelDataset(keras.utils.PyDataset):
    """Batches of (image with its random view's box, pseudo-label), sampled uniformly over clusters.

    Each batch is ``({"images": images, "boxes": boxes}, pseudo_labels)``: the
    images as stored (uint8, as the usual datasets are, so a quarter of the
    float32 bytes cross to the device) and the random view's crop box and
    flip per image (`ImageViews.random_boxes`), drawn here with NumPy so that
    every backend trains on the same crops. `DeepCluster` makes the views
    from them on the device (`RandomView`).

    The epoch length is fixed at ``ceil(epoch_length / batch_size)`` full
    batches (``epoch_length`` defaults to N), so every batch has the same
    shape (no recompilation) and ``len()`` never changes. Which images and
    crops a batch holds depends only on the seed, the epoch and the batch
    index, so it is reproducible under any worker order.

    A `Reclustering` callback sets the labels at the start of every epoch via
    `set_pseudo_labels`.

    Args:
        images: uint8 (N, H, W[, C]) in [0, 255] or float in [0, 1].
        views: The `ImageViews` (crop size, normalisation, flip).
        batch_size: Training batch size.
        seed: Seed of the sampler and of the augmentation.
        epoch_length: Images drawn per epoch; None means N. A multiple of N
            trains longer on each clustering (the original code's
            ``--reassign``), which small datasets need.
        **kwargs: `keras.utils.PyDataset` arguments (``workers``, ...).
            Without ``workers``, `DeepCluster.fit` chooses (`choose_workers`).

    Examples:
        >>> data = PseudoLabelDataset(np.zeros((10, 28, 28), "uint8"),
        ...     ImageViews.for_dataset("mnist"), batch_size=4)
        >>> data.set_pseudo_labels(np.arange(10) % 2, epoch=0)
        >>> inputs, labels = data[0]
        >>> inputs["images"].shape, inputs["boxes"].shape, labels.shape
        ((4, 28, 28, 1), (4, 5), (4,))
    """

    def __init__(
        self,
        images: np.ndarray,
        views: ImageViews,
        batch_size: int = 256,
        seed: int = 0,
        epoch_length: int | None = None,
        **kwargs,
    ):
        # No workers given: `DeepCluster.fit` chooses (see `choose_workers`).
        self.auto_workers = kwargs.get("workers") is None
        if self.auto_workers:
            kwargs["workers"] = 1
        super().__init__(**kwargs)
        self.images = check_images(images, views.channels)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
        if epoch_length is not None and (isinstance(epoch_length, bool) or epoch_length < 1):
            raise ValueError(f"epoch_length must be >= 1 or None; got {epoch_length!r}.")
        self.epoch_length = int(epoch_length or len(self.images))
        if batch_size > self.epoch_length:
            multiple = self.epoch_length / len(self.images)
            images = f"{len(self.images)} image{'s' if len(self.images) != 1 else ''}"
            drawn = images + (f" x {multiple:g}" if multiple != 1 else "")
            raise ValueError(
                f"batch_size={batch_size} is larger than the {self.epoch_length} images an epoch "
                f"draws ({drawn}); use a batch size of at most {self.epoch_length}."
            )
        self.views = views
        self.batch_size = batch_size
        self.seed = seed
        self.pseudo_labels: np.ndarray | None = None
        self.epoch = 0
        self._order: np.ndarray | None = None

    def choose_workers(self, replicas: int) -> None:
        """Sets `workers` for training on `replicas` devices, unless the user chose.

        The backend's choice (`devices.input_workers`).
        """
        if self.auto_workers:
            self.workers = devices.input_workers(replicas)

    @property
    def num_images(self) -> int:
        return len(self.images)

    def set_pseudo_labels(self, labels: np.ndarray, epoch: int) -> None:
        """Uses `labels` (one int per image) and redraws the sampler for `epoch`."""
        labels = np.asarray(labels)
        if labels.shape != (self.num_images,):
            raise ValueError(
                f"Expected one pseudo-label per image, shape ({self.num_images},); "
                f"got shape {labels.shape}."
            )
        self.pseudo_labels = labels.astype(np.int32)
        self.epoch = epoch
        rng = np.random.default_rng([self.seed, epoch, 0])
        self._order = uniform_cluster_sample(self.pseudo_labels, len(self) * self.batch_size, rng)

    def __len__(self) -> int:
        return math.ceil(self.epoch_length / self.batch_size)

    def __getitem__(self, index: int):
        height, width = self.images.shape[1:3]
        # With several processes each feeds its slice of the global batch (Keras's
        # DataParallel assembles them), drawn exactly as one process draws it.
        part = processes.shard(self.batch_size)
        if self._order is None:
            # Keras reads one batch for its signature before any callback runs.
            batch = (np.arange(self.batch_size) % self.num_images)[part]
            boxes = self.views.whole_image_boxes(len(batch), height, width)
            return self._inputs(batch, boxes), np.zeros(len(batch), np.int32)
        batch = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        rng = np.random.default_rng([self.seed, self.epoch, 1, index])
        boxes = self.views.random_boxes(len(batch), height, width, rng)[part]
        return self._inputs(batch[part], boxes), self.pseudo_labels[batch[part]]

    def _inputs(self, batch: np.ndarray, boxes: np.ndarray) -> dict:
        images = self.images[batch]
        if images.dtype != np.uint8:
            images = images.astype(np.float32)
        return {"images": images, "boxes": boxes}
