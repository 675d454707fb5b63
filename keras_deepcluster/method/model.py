"""`DeepCluster`: a backbone plus a classifier head trained on pseudo-labels."""

from __future__ import annotations

import keras
import numpy as np

from keras_deepcluster.method.features import layer_model
from keras_deepcluster.method.pseudo_label_dataset import PseudoLabelDataset
from keras_deepcluster.method.reclustering import Reclustering
from keras_deepcluster.method.views import ImageViews, random_view, views_config, views_from_config
from keras_deepcluster.platform import array_ops, devices, model_routes
from keras_deepcluster.platform.layer_acceleration import accelerate
from keras_deepcluster.settings import check_setting


@keras.saving.register_keras_serializable(package="keras_deepcluster")
class DeepCluster(keras.Model):
    """A backbone and a ReLU -> Dense(k) head, trained with `fit` on cluster ids.

    The model is trained with the ordinary `model.fit()` on a
    `PseudoLabelDataset`, together with a `Reclustering` callback that
    re-clusters the backbone's features and calls `reset_head` at the start
    of every epoch. The training step is Keras's own, with `compute_loss`
    overridden to add weight decay. The random view, the training forward pass
    and the step run by the model's route (`keras_deepcluster.platform.model_routes`):
    Keras's calls, or on PyTorch the same computations as direct torch calls
    on the same variables; ``direct_torch=False`` keeps Keras's calls.

    It takes views (float NHWC of the backbone's input shape), or the
    batches of a `PseudoLabelDataset`, ``{"images": ..., "boxes": ...}``,
    whose random views it makes itself on the device (`RandomView`, with
    `views`; `fit` takes them from the dataset when not given).

    Weight decay is PyTorch SGD's coupled ``weight_decay``: the loss gets
    ``weight_decay / 2 * sum(w ** 2)`` over every trainable variable (batch
    norm and biases included, as all parameters are in the authors' optimizer),
    whose gradient adds ``weight_decay * w`` to each gradient before momentum.
    The logs hold ``cross_entropy``, ``weight_decay`` (this penalty) and ``loss``, their sum.

    Args:
        backbone: A functional `keras.Model` mapping images to features.
        num_clusters: k, the number of clusters (the head's width), >= 2.
        feature_layer: Name of the backbone layer whose output is the feature;
            None uses the backbone's output.
        weight_decay: Coupled L2 weight decay (PyTorch SGD semantics).
        views: The `ImageViews` of the training view; None takes those of
            the `PseudoLabelDataset` given to `fit`.
        direct_torch: On PyTorch, train through direct torch calls where the
            network allows (`model_routes.TorchRoute`: same results, a fraction of
            the Python per step); ignored on the other backends. None: True
            unless ``KERAS_DEEPCLUSTER_DIRECT_TORCH=0``.
        **kwargs: `keras.Model` arguments (``name``, ...).

    Examples:
        >>> model = DeepCluster(backbones.lenet(seed=0), num_clusters=10)
        >>> model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
        >>> data = PseudoLabelDataset(images, ImageViews.for_dataset("mnist"))
        >>> model.fit(data, epochs=5, callbacks=[Reclustering(data, seed=0)])
    """

    def __init__(
        self,
        backbone: keras.Model,
        num_clusters: int,
        feature_layer: str | None = None,
        weight_decay: float = 0.0,
        views: ImageViews | None = None,
        direct_torch: bool | None = None,
        **kwargs,
    ):
        if not isinstance(backbone, keras.Model) or not hasattr(backbone, "inputs"):
            raise ValueError(
                "backbone must be a functional keras.Model (built from keras.Input); "
                f"got {type(backbone).__name__}."
            )
        check_setting("num_clusters", num_clusters)
        check_setting("weight_decay", weight_decay)
        super().__init__(**kwargs)
        if feature_layer is not None:
            backbone = layer_model(backbone, feature_layer)
        # The package's formulas in its layers (Sobel, JAX-CPU pooling), never in the saved file.
        self.backbone = accelerate(backbone)
        self.head_relu = keras.layers.ReLU(name="head_relu")
        self.head_flatten = keras.layers.Flatten(name="head_flatten")
        self.head = keras.layers.Dense(
            int(num_clusters),
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
            name="head",
        )
        self.num_clusters = int(num_clusters)
        self.weight_decay = float(weight_decay)
        self.views = views
        self.direct_torch = model_routes.direct_torch(direct_torch)
        self._route = None  # chosen at the first call, again after `compile`
        # Logged apart: `loss` is their sum (Keras records what compute_loss returns).
        self.cross_entropy_tracker = keras.metrics.Mean(name="cross_entropy")
        self.weight_decay_tracker = keras.metrics.Mean(name="weight_decay")
        self.build(backbone.input_shape)

    def build(self, input_shape=None):
        self.head.build((None, self.feature_dim))
        self.built = True

    def call(self, inputs, training=False):
        images = inputs["images"] if isinstance(inputs, dict) else inputs
        route = self.route.for_inputs(images)
        if isinstance(inputs, dict):
            if self.views is None:
                raise ValueError(
                    "DeepCluster got images with crop boxes but has no views to make them "
                    "with; pass views= or fit on a PseudoLabelDataset."
                )
            inputs = random_view(images, inputs["boxes"], self.views, route.xp)
        return route.forward(inputs, training)

    @property
    def route(self) -> model_routes.KerasRoute:
        """How the backend runs the model: Keras's calls, or direct torch calls."""
        if self._route is None:
            flatten = [self.head_flatten] if len(self.backbone.output.shape) > 2 else []
            layers = [self.backbone, *flatten, self.head_relu, self.head]
            self._route = model_routes.training_route(self, layers, self.direct_torch)
        return self._route

    @property
    def feature_dim(self) -> int:
        return int(np.prod(self.backbone.output.shape[1:]))

    def compile(self, optimizer="sgd", loss=None, **kwargs):
        """`keras.Model.compile` with sparse cross-entropy on logits as the default loss."""
        if loss is None:
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self._route = None  # its training step depends on the loss and the optimizer
        super().compile(optimizer=optimizer, loss=loss, **kwargs)

    def train_step(self, *args):
        """The route's training step: Keras's, or on PyTorch the same in fewer calls."""
        return self.route.train_step(super().train_step, *args)

    def compile_from_config(self, config):
        # Keras skips compiling on load when `compile` is overridden; ours only
        # fills a default, so the saved compile config can be replayed as is.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def fit(self, x=None, y=None, **kwargs):
        """`keras.Model.fit`, checked for DeepCluster training.

        A `PseudoLabelDataset` needs a `Reclustering` callback, and is never
        shuffled by Keras: its sampler already shuffles, reproducibly from its
        seed, whereas Keras would shuffle batches with Python's global RNG.
        """
        reclusterings = [c for c in kwargs.get("callbacks") or [] if isinstance(c, Reclustering)]
        if isinstance(x, PseudoLabelDataset):
            if not reclusterings:
                raise ValueError(
                    "Training on a PseudoLabelDataset needs a Reclustering callback to "
                    "set its labels: model.fit(data, callbacks=[Reclustering(data)])."
                )
            kwargs["shuffle"] = False
            x.choose_workers(devices.replica_count(self))
            if self.views is None:
                self.views = x.views
            elif self.views != x.views:
                raise ValueError(
                    f"The model was built for the views {self.views} but the data has "
                    f"{x.views}; use one ImageViews for both."
                )
        # Check before Keras builds anything, so bad input never reaches a trace.
        for callback in reclusterings:
            callback.check(self)
        return super().fit(x, y, **kwargs)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(x, y, y_pred, sample_weight, training=training)
        return self._with_weight_decay(loss) if training else loss

    def _with_weight_decay(self, cross_entropy):
        """The training loss of a step's `cross_entropy`, both logged apart."""
        # Keras divides the cross-entropy by the replica count for TensorFlow's
        # summed replica gradients; the penalty needs it too, the logs do not.
        replicas = devices.strategy_replicas()
        self.cross_entropy_tracker.update_state(cross_entropy * replicas)
        if not self.weight_decay:
            return cross_entropy
        penalty = self.weight_decay_penalty()
        self.weight_decay_tracker.update_state(penalty)
        return cross_entropy + penalty / replicas

    def weight_decay_penalty(self, values=None):
        """``weight_decay / 2 * sum(w ** 2)`` over the trainable variables' values.

        Args:
            values: The tensors to take it over; None: the trainable variables' values.
        """
        if values is None:
            values = [w.value for w in self.trainable_variables]
        return 0.5 * self.weight_decay * array_ops.sum_of_squares(values)

    def reset_head(self, seed: int) -> None:
        """Re-draws the head (N(0, 0.01), bias 0) and zeroes its optimizer state.

        Called at the start of every epoch: the cluster ids of a new clustering
        have no relation to the previous ones, so the head and its momentum
        start over. The backbone's optimizer state is kept.
        """
        rng = np.random.default_rng(seed)
        kernel = self.head.kernel
        kernel.assign(rng.normal(0.0, 0.01, kernel.shape).astype(kernel.dtype))
        self.head.bias.assign(np.zeros(self.head.bias.shape, self.head.bias.dtype))
        if getattr(self, "optimizer", None) is None or not self.optimizer.built:
            return
        # Keras names each slot "<variable path with _>_<slot>" (e.g. momentum).
        prefixes = tuple(v.path.replace("/", "_") + "_" for v in self.head.weights)
        for slot in self.optimizer.variables:
            if slot.name.startswith(prefixes):
                slot.assign(np.zeros(slot.shape, slot.dtype))

    def get_config(self):
        return {
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "num_clusters": self.num_clusters,
            "weight_decay": self.weight_decay,
            "views": None if self.views is None else views_config(self.views),
            "direct_torch": self.direct_torch,
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        if config.get("views") is not None:
            config["views"] = views_from_config(config["views"])
        return cls(**config)
