"""Linear probe: how linearly separable the true classes are in a frozen layer."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
from keras import ops

from keras_deepcluster.method.features import FeatureExtractor, layer_model
from keras_deepcluster.method.pseudo_label_dataset import check_images
from keras_deepcluster.method.views import ImageViews


@keras.saving.register_keras_serializable(package="keras_deepcluster")
class InverseSqrtDecay(keras.optimizers.schedules.LearningRateSchedule):
    """``lr_t = lr / sqrt(1 + lr * weight_decay * t)``, the DeepCluster probe schedule."""

    def __init__(self, learning_rate: float, weight_decay: float):
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay

    def __call__(self, step):
        step = ops.cast(step, "float32")
        return self.learning_rate / ops.sqrt(1.0 + self.learning_rate * self.weight_decay * step)

    def get_config(self):
        return {"learning_rate": self.learning_rate, "weight_decay": self.weight_decay}


@dataclasses.dataclass
class ProbeResult:
    """Test top-1 accuracy of a linear probe.

    Attributes:
        accuracy: Test top-1 accuracy after the last epoch (fraction, exact over
            the whole test set).
        epoch_accuracies: Test top-1 accuracy after each epoch.
        layer: The tapped layer.
        feature_dim: Width of the flattened tapped layer.
    """

    accuracy: float
    epoch_accuracies: list[float]
    layer: str
    feature_dim: int

    @property
    def best_accuracy(self) -> float:
        return max(self.epoch_accuracies)


def linear_probe(
    backbone: keras.Model,
    layer: str,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    views: ImageViews,
    epochs: int = 20,
    batch_size: int = 256,
    learning_rate: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    flip: bool = False,
    seed: int = 0,
    feature_batch_size: int = 256,
) -> ProbeResult:
    """Trains a linear classifier on a frozen layer and reports test accuracy.

    The authors' protocol: the network is frozen in inference mode, `layer` is
    tapped and flattened, and a linear layer (PyTorch's default uniform init)
    is trained with SGD (lr 0.01, momentum 0.9, coupled weight decay 1e-4,
    ``lr / sqrt(1 + lr * wd * t)`` decay per step), batch 256, on the training
    split with true labels. Features are computed once; with ``flip=True`` the
    features of the flipped images are computed too and each sample takes
    either at random every epoch, which is exactly a random horizontal flip of
    the input.

    Args:
        backbone: The (trained or random) backbone; it is not modified.
        layer: Name of the layer to tap (e.g. ``"conv_2"`` for LeNet).
        train: ``(images, labels)`` to fit the classifier on.
        test: ``(images, labels)`` to report accuracy on.
        views: Gives the fixed view of the images.
        epochs: Training epochs.
        batch_size: Training batch size.
        learning_rate: SGD's initial learning rate.
        momentum: SGD's momentum.
        weight_decay: L2 penalty on the classifier's weights.
        flip: Random horizontal flips of the training images.
        seed: Seed of the classifier's init and the batch order.
        feature_batch_size: Batch size of the feature extraction.

    Examples:
        >>> result = linear_probe(model.backbone, "conv_2", (x_train, y_train),
        ...     (x_test, y_test), ImageViews.for_dataset("fashion_mnist"))
        >>> result.accuracy
    """
    tap = layer_model(backbone, layer)
    (x_train, y_train), (x_test, y_test) = train, test
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        check_images(x)
        if len(x) != len(np.asarray(y)):
            raise ValueError(f"The {split} split has {len(x)} images but {len(y)} labels.")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1; got {epochs} and {batch_size}.")
    y_train, y_test = np.asarray(y_train, np.int64), np.asarray(y_test, np.int64)
    extract = FeatureExtractor(tap, views)
    train_views = [extract(x_train, feature_batch_size)]
    if flip:
        train_views.append(FeatureExtractor(tap, views, flip=True)(x_train, feature_batch_size))
    test_features = extract(x_test, feature_batch_size)
    dim = train_views[0].shape[1]
    classes = int(max(y_train.max(), y_test.max())) + 1
    classifier = _linear_classifier(dim, classes, weight_decay, seed)
    classifier.compile(
        optimizer=keras.optimizers.SGD(
            InverseSqrtDecay(learning_rate, weight_decay), momentum=momentum
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(seed)
    accuracies = []
    n = len(y_train)
    for epoch in range(epochs):
        order = rng.permutation(n)
        choice = rng.integers(len(train_views), size=n)
        epoch_data = _ShuffledFeatures(train_views, y_train, order, choice, batch_size)
        classifier.fit(epoch_data, epochs=epoch + 1, initial_epoch=epoch, verbose=0)
        epoch_data.release()
        logits = classifier.predict(test_features, batch_size=1024, verbose=0)
        accuracies.append(float(np.mean(np.argmax(logits, axis=1) == y_test)))
    return ProbeResult(accuracies[-1], accuracies, layer, dim)


class _ShuffledFeatures(keras.utils.PyDataset):
    """One probe epoch: batches of the features in `order`, each row from the view `choice`
    says (plain or flipped), gathered per batch rather than copied for the whole epoch."""

    def __init__(self, views, labels, order, choice, batch_size):
        super().__init__()
        self.views, self.labels, self.order = views, labels, order
        self.choice, self.batch_size = choice, batch_size

    def __len__(self):
        return -(-len(self.order) // self.batch_size)

    def __getitem__(self, index):
        positions = slice(index * self.batch_size, (index + 1) * self.batch_size)
        rows = self.order[positions]
        x = self.views[0][rows]
        if len(self.views) > 1:
            flipped = self.choice[positions] == 1
            x[flipped] = self.views[1][rows[flipped]]
        return x, self.labels[rows]

    def release(self):
        """Drops the features. On TensorFlow, Keras wraps a PyDataset in
        `tf.data.Dataset.from_generator`, whose global graph keeps it alive: without
        this every probe would leave its features behind (docs/performance.md, "How
        much memory?")."""
        self.views = self.labels = self.order = self.choice = None


def _linear_classifier(dim, classes, weight_decay, seed):
    # Coupled weight decay: an L2 term wd/2 * |w|^2 has gradient wd * w.
    regularizer = keras.regularizers.L2(weight_decay / 2) if weight_decay else None
    model = keras.Sequential(
        [
            keras.Input((dim,)),
            keras.layers.Dense(
                classes, kernel_regularizer=regularizer, bias_regularizer=regularizer
            ),
        ]
    )
    # PyTorch's nn.Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    rng = np.random.default_rng(seed)
    bound = 1 / np.sqrt(dim)
    model.set_weights(
        [
            rng.uniform(-bound, bound, (dim, classes)).astype("float32"),
            rng.uniform(-bound, bound, classes).astype("float32"),
        ]
    )
    return model
