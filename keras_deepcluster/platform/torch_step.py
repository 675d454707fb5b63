"""DeepCluster's training step on PyTorch, in as few calls as it takes.

At DeepCluster's small batches a PyTorch step is mostly Python and the fixed
cost of each small operation (docs/performance.md, "Host overhead of a
training step"). `train_step` is Keras's PyTorch step (the PyTorch trainer's
`train_step`) for the default loss, with the same results within float
rounding, less that cost:

- the forward pass is `DeepCluster.call`, whose training pass is a
  `TorchNetwork`, rather than `Layer.__call__`;
- the loss is one ``torch.nn.functional.cross_entropy``;
- the weight decay enters as its gradient, ``weight_decay * w`` added to
  every gradient in one call, rather than as a penalty in the autograd graph
  (whose backward is a norm's backward per variable); the penalty itself is
  computed without autograd, for the logs;
- the loss trackers (`keras.metrics.Mean`) are added to in place, and where
  they are the model's only metrics their results, the logs, are computed
  together.

The optimizer is Keras's, and so are the logs' values. Private names that remain, for
want of a public equivalent: ``torch._foreach_add_`` (PyTorch's fused update of a list of
tensors; its public form is a Python loop of one call per tensor, the cost this step
removes). Keras's loss tracker is found among `Model.metrics` by its name, ``loss``.
"""

from __future__ import annotations

import keras

from keras_deepcluster.platform.tensorflow_import import without_tensorflow


def loss_tracker(model: keras.Model) -> keras.metrics.Mean | None:
    """The `Mean` Keras logs a compiled `model`'s loss in, where `train_step` can stand for
    Keras's step; None where it cannot.

    It needs the default loss (sparse cross-entropy on logits, unweighted), no layer
    losses (weight regularizers) and an optimizer without loss scaling (the weight
    decay's gradient is added to unscaled gradients).
    """
    if not model.compiled:
        return None
    default = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    loss, optimizer = model.loss, model.optimizer
    with without_tensorflow():  # serialising the config would import TensorFlow if installed
        loss_weights = model.get_compile_config().get("loss_weights")
    applies = (
        type(loss) is type(default)
        and loss.get_config() == default.get_config()
        and not loss_weights
        and not model.losses
        and getattr(optimizer, "loss_scale_factor", None) is None
        and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    )
    trackers = [metric for metric in model.metrics if metric.name == "loss"]
    return trackers[0] if applies and trackers else None


def train_step(model, x, y, loss_tracker: keras.metrics.Mean) -> dict:
    """One training step of `model` on views or view inputs `x` and cluster ids `y`.

    Args:
        model: A compiled `DeepCluster` whose forward pass is a `TorchNetwork`.
        x: The step's inputs.
        y: The step's cluster ids.
        loss_tracker: `loss_tracker(model)`.

    Returns:
        The logs, as Keras's `compute_metrics` gives them.
    """
    import torch
    import torch.nn.functional as F

    trainable = model.trainable_weights
    tensors = [w.value for w in trainable]
    for tensor in tensors:  # Module.zero_grad, without its walk over every submodule
        tensor.grad = None
    logits = model.call(x, training=True)
    cross_entropy = F.cross_entropy(logits, y.long())
    cross_entropy.backward()
    used = [i for i, tensor in enumerate(tensors) if tensor.grad is not None]
    weights = [trainable[i] for i in used]
    values = [tensors[i] for i in used]
    gradients = [v.grad for v in values]
    with torch.no_grad():
        loss = cross_entropy.detach()
        _add_to_mean(model.cross_entropy_tracker, loss)
        if model.weight_decay:
            # Of the weights the gradients are of: before the update.
            penalty = model.weight_decay_penalty(values)
            torch._foreach_add_(gradients, values, alpha=model.weight_decay)
            _add_to_mean(model.weight_decay_tracker, penalty)
            loss = loss + penalty
        _add_to_mean(loss_tracker, loss, logits.shape[0])
        model.optimizer.apply(gradients, weights)
        metrics = model.metrics
        if all(type(metric) is keras.metrics.Mean for metric in metrics):
            return _mean_results(metrics)
    return model.compute_metrics(x, y, logits, sample_weight=None)


def _mean_results(means: list[keras.metrics.Mean]) -> dict:
    """``{mean.name: mean.result()}``, in three calls rather than a few per metric.

    ``total / count``, and 0 where nothing was added, as Keras's ``divide_no_nan``.
    """
    import torch

    totals = torch.stack([mean.total.value for mean in means])
    counts = torch.stack([mean.count.value for mean in means])
    results = torch.where(counts == 0, 0.0, totals / counts)
    return dict(zip((mean.name for mean in means), results.unbind()))


def _add_to_mean(mean: keras.metrics.Mean, value, weight: int = 1) -> None:
    """``mean.update_state(value, sample_weight=weight)`` for a scalar, in two calls."""
    mean.total.value.add_(value * weight)
    mean.count.value.add_(weight)
