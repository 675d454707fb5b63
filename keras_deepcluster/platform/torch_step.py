"""DeepCluster's training step on PyTorch, in as few calls as it takes.

At DeepCluster's small batches a PyTorch step is mostly Python and the fixed
cost of each small operation (docs/performance.md, "Host overhead of a
training step"). `train_step` is Keras's PyTorch step
(`keras.src.backend.torch.trainer.TorchTrainer.train_step`) for the default
loss, with the same results within float rounding, less that cost:

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

The optimizer is Keras's, and so are the logs' values.
"""

from __future__ import annotations

import keras


def applies(model) -> bool:
    """Whether `train_step` can stand for Keras's step for this compiled `DeepCluster`.

    It needs the default loss, the direct torch network, no layer losses
    (weight regularizers) and an optimizer without loss scaling (the weight
    decay's gradient is added to unscaled gradients).
    """
    optimizer = model.optimizer
    return bool(
        model._default_loss
        and model.direct_torch
        and model._direct_torch_network() is not None
        and not model.losses
        and getattr(optimizer, "loss_scale_factor", None) is None
        and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    )


def train_step(model, x, y) -> dict:
    """One training step of `model` on views or view inputs `x` and cluster ids `y`.

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
            penalty = weight_decay_penalty(values, model.weight_decay)
            torch._foreach_add_(gradients, values, alpha=model.weight_decay)
            _add_to_mean(model.weight_decay_tracker, penalty)
            loss = loss + penalty
        _add_to_mean(model._loss_tracker, loss, logits.shape[0])
        model.optimizer.apply(gradients, weights)
        metrics = model.metrics
        if all(type(metric) is keras.metrics.Mean for metric in metrics):
            return _mean_results(metrics)
    return model.compute_metrics(x, y, logits, sample_weight=None)


def weight_decay_penalty(values, weight_decay: float) -> "torch.Tensor":  # noqa: F821
    """``weight_decay / 2 * sum(w ** 2)`` over the torch tensors `values`, in one norm call."""
    import torch

    return 0.5 * weight_decay * torch.stack(torch._foreach_norm(values)).square().sum()


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
