"""Model-level controls: find Bayesian layers, set the KL weight, switch the forward mode
(posterior means, one weight sample per batch), and the KL part of a model's losses."""

import contextlib

from keras import ops

from tfbdl import _validation, elbo
from tfbdl.layers.base import ESTIMATOR, ONE_SAMPLE_PER_BATCH, POSTERIOR_MEAN, bayesian_layers

__all__ = ["bayesian_layers", "kl_loss", "layer_kl_losses", "learned_tau", "one_sample_per_batch", "posterior_mean", "set_kl_weight"]


def _require_bayesian_layers(model):
    layers = bayesian_layers(model)
    if not layers:
        raise ValueError(f"`model` {model.name!r} has no tfbdl Bayesian layers.")
    return layers


def set_kl_weight(model, num_examples=None, weight=None):
    """Sets the KL weight of every Bayesian layer of `model` (nested models included).

    The model's loss then is the per-example negative ELBO, NLL + KL / N:

        tfbdl.set_kl_weight(model, num_examples=N)     # weight = 1 / N

    `weight=` sets any other value (e.g. during annealing). The weight is a saved variable
    of each layer, so changing it needs no retracing (it is safe inside `fit`, from a
    callback), `keras.saving.load_model` restores it, and `model.load_weights` keeps the
    weight set here rather than the one the file was saved with. A `keras.Model` also gets
    ELBO reporting now (`tfbdl.elbo.track_elbo`; under a `tf.distribute` strategy, call this
    in the strategy's scope): its fit/evaluate logs carry `nll` and `kl`.
    """
    if (num_examples is None) == (weight is None):
        raise ValueError(
            "set_kl_weight: give exactly one of `num_examples` and `weight`, got "
            f"num_examples={num_examples!r}, weight={weight!r}."
        )
    if num_examples is not None:
        if not _validation.is_number(num_examples) or not float(num_examples).is_integer() or num_examples <= 0:
            raise ValueError(
                "set_kl_weight: `num_examples` must be a positive integer (the number of "
                f"training examples), got num_examples={num_examples!r}."
            )
        weight = 1.0 / float(num_examples)
    else:
        weight = _validation.positive_number(weight, "weight", "set_kl_weight", minimum=0.0)
    layers = _require_bayesian_layers(model)
    for layer in layers:
        layer.set_kl_weight(weight)
    elbo.track_elbo(model, layers)  # fit/evaluate logs then show `nll` and `kl` beside `loss`
    return weight


@contextlib.contextmanager
def _forward_mode(model, mode, replaces):
    """Within the block, the Bayesian layers of `model` whose forward mode is in `replaces`
    run in `mode` (`tfbdl.layers.base`); every layer gets its previous mode back after it."""
    layers = _require_bayesian_layers(model)
    previous = [int(layer.forward_mode.numpy()) for layer in layers]
    for layer, value in zip(layers, previous):
        if value in replaces:
            layer.forward_mode.assign(mode)
    try:
        yield model
    finally:
        for layer, value in zip(layers, previous):
            layer.forward_mode.assign(value)


def posterior_mean(model):
    """Within the block, every Bayesian layer of `model` uses its posterior-mean weights.

    Forward passes are then deterministic (the KL is still added to the losses); outside
    the block they are stochastic, in training and inference alike. The mode is a variable
    that the traced forward pass reads, so `model.predict` & co. (and your own
    `tf.function`s) follow it without retracing, and the block may be entered from a
    callback during `fit`.

        with tfbdl.posterior_mean(model):
            probs = model.predict(x)
    """
    return _forward_mode(model, POSTERIOR_MEAN, replaces=(ESTIMATOR, ONE_SAMPLE_PER_BATCH))


def one_sample_per_batch(model):
    """Within the block, each stochastic Bayesian layer of `model` draws one weight sample
    W ~ q(W) per forward pass, shared by the batch: one matmul or convolution per layer,
    whatever its estimator (Flipout and local reparameterization need two).

    Each example's weights are still distributed as q(W), so every per-example predictive
    quantity (mean, std, entropy, mutual information over passes) has the same distribution
    as under the layers' own estimators; only examples of one batch now share their
    weights. That is what `tfbdl.predict` uses by default; it is not what training wants
    (gradients of a shared sample are correlated across the batch). Layers inside a
    `posterior_mean` block stay deterministic.

        with tfbdl.one_sample_per_batch(model):
            probs = model.predict(x)       # one posterior draw for the whole batch
    """
    return _forward_mode(model, ONE_SAMPLE_PER_BATCH, replaces=(ESTIMATOR,))


def layer_kl_losses(model):
    """[(layer, weighted KL)] of the latest forward pass, one pair per Bayesian layer.

    The weighted KL is `kl_weight * KL(q || p)` exactly as the layer added it to the
    losses (summed if the layer was called more than once; 0 if it was not called).
    """
    layers = _require_bayesian_layers(model)
    return list(zip(layers, elbo.layer_kl_terms(layers)))


def kl_loss(model):
    """The weighted KL, sum over layers of `kl_weight * KL(q || p)`, of the latest forward pass.

    It is the part of `sum(model.losses)` that the Bayesian layers added, so in a
    custom loop `loss_fn(y, y_pred) + tfbdl.kl_loss(model)` is the negative ELBO.

        y_pred = model(x, training=True)
        loss = loss_fn(y, y_pred) + tfbdl.kl_loss(model)
    """
    return ops.sum(ops.stack(elbo.layer_kl_terms(_require_bayesian_layers(model))))


def learned_tau(model):
    """{layer name: E_q[tau]} of every Bayesian layer whose kernel prior learns its scale.

    tau is the prior scale of `tfbdl.priors.HalfNormalHierarchical` (an array with
    `per_unit=True`): how strongly the ELBO chose to regularize each layer.
    """
    return {
        layer.name: layer.kernel_prior_term.summary()["tau"].numpy()
        for layer in _require_bayesian_layers(model)
        if "tau" in layer.kernel_prior_term.summary()
    }
