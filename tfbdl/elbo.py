"""ELBO reporting: `nll` and `kl` beside `loss` in `model.fit` / `model.evaluate` logs.

The model's loss is the per-example negative ELBO (Blundell et al. 2015, "Weight
Uncertainty in Neural Networks", eq. 2 divided by N):

    loss = nll + kl,    nll = the compiled loss (the data term),
                        kl  = sum_layers kl_weight * KL(q || p)   (= KL / N)

The KL terms are the tensors the Bayesian layers hand to `add_loss`; Keras adds them,
with the compiled loss, in `Model.compute_loss`. The first time a model with Bayesian
layers is called (by `fit`, `evaluate`, `predict` or directly; also a model just made by
`keras.saving.load_model`, `clone_model` or `tfbdl.convert.to_bayesian`), and when
`tfbdl.set_kl_weight` is called on it, `track_elbo` makes the model report its ELBO terms:

- it attaches an `ELBOTerms` metric to the model (so it is part of `model.metrics`: it is
  reset with the other metrics each epoch, logged by `fit`/`evaluate`, prefixed `val_`
  for validation data, and reduced over replicas under `tf.distribute`), and
- it wraps the model's own `compute_loss` (whatever class defines it) so that each call
  splits the total it returns into `nll`, `kl` (and `other_losses`, when the model
  has losses that are not KL terms, e.g. weight regularizers) and updates the metric.

Tracking never resets the model's compiled functions, so it is safe during `fit`. Wrapping
`compute_loss` rather than asking users to subclass the model keeps `model.compile(...)`
ordinary, and keeps `loss == nll + kl` by construction: both sides are accumulated from the
same total, with the same batch-size weights as Keras' loss tracker. The private Keras
hooks this needs are in `tfbdl._keras_internals`. User-written loops that call
`model.compute_loss` update the metric too; loops that add `model.losses` themselves can
split off the KL with `tfbdl.kl_loss`:

    y_pred = model(x, training=True)
    nll = loss_fn(y, y_pred)
    kl = tfbdl.kl_loss(model)                 # the KL terms among model.losses
    loss = nll + kl                           # == loss_fn(y, y_pred) + sum(model.losses)
"""

import keras
import tensorflow as tf
from keras import ops

from tfbdl import _keras_internals

__all__ = ["ELBOTerms", "elbo_terms_metric", "layer_kl_terms", "track_elbo"]

_ATTRIBUTE = "_tfbdl_elbo_terms"


def layer_kl_terms(layers):
    """[weighted KL] of the latest forward pass, one scalar per layer of `layers`.

    The weighted KL is `kl_weight * KL(q || p)` exactly as the layer added it to the
    losses (summed if the layer was called more than once; 0 if it was not called).
    """
    kls = []
    for layer in layers:
        # A Bayesian layer's own `add_loss` terms (without weight regularizers) are its KL.
        terms = [ops.cast(term, "float32") for term in _keras_internals.own_losses(layer)]
        kls.append(ops.sum(ops.stack(terms)) if terms else ops.zeros((), "float32"))
    return kls


class ELBOTerms(keras.metrics.Metric):
    """Running means of `nll`, `kl` (and `other_losses`) over an epoch, and non-finite counts.

    `result()` is a dict, so each term is logged under its own name. Besides the means,
    the metric counts, per term (`nll`, then each Bayesian layer's KL in model order),
    the steps in which that term was non-finite; `first_non_finite_terms()` names them
    (used by `tfbdl.callbacks.TerminateOnNonFiniteELBO`).
    """

    def __init__(self, layer_names, name="elbo_terms"):
        super().__init__(name=name, dtype="float32")
        self.layer_names = list(layer_names)
        self.reports_other_losses = False  # set when a model with non-KL losses is traced
        self.nll_total = self.add_variable((), "zeros", name="nll_total")
        self.kl_total = self.add_variable((), "zeros", name="kl_total")
        self.other_total = self.add_variable((), "zeros", name="other_total")
        self.count = self.add_variable((), "zeros", name="count")
        self.non_finite_steps = self.add_variable(
            (len(self.layer_names) + 1,), "zeros", name="non_finite_steps"
        )

    def update_state(self, nll, layer_kls, other, batch_size):
        """Adds one step: unscaled `nll`, list of per-layer weighted KLs, `other` losses."""
        kl = ops.sum(ops.stack(layer_kls))
        weight = ops.cast(batch_size, "float32")
        self.nll_total.assign_add(nll * weight)
        self.kl_total.assign_add(kl * weight)
        self.other_total.assign_add(other * weight)
        self.count.assign_add(weight)
        # A non-finite KL makes the derived nll (total - kl) non-finite too; the nll is
        # only blamed when every KL term of the step is finite.
        kl_bad = [ops.logical_not(ops.isfinite(term)) for term in layer_kls]
        nll_bad = ops.logical_and(
            ops.logical_not(ops.isfinite(nll)), ops.logical_not(ops.any(ops.stack(kl_bad)))
        )
        self.non_finite_steps.assign_add(ops.cast(ops.stack([nll_bad] + kl_bad), "float32"))

    def result(self):
        terms = {
            "nll": ops.divide_no_nan(self.nll_total, self.count),
            "kl": ops.divide_no_nan(self.kl_total, self.count),
        }
        if self.reports_other_losses:
            terms["other_losses"] = ops.divide_no_nan(self.other_total, self.count)
        return terms

    def first_non_finite_terms(self):
        """Names of the terms that were non-finite in some step since the last reset.

        'nll', or "KL of layer '<name>'", in the order nll, then layers in model order.
        """
        counts = ops.convert_to_numpy(self.non_finite_steps)
        names = ["nll"] + [f"KL of layer '{name}'" for name in self.layer_names]
        return [name for name, count in zip(names, counts) if count > 0]

    def get_config(self):
        return {"layer_names": self.layer_names, "name": self.name}


def elbo_terms_metric(model):
    """The model's `ELBOTerms` metric, or None if `tfbdl.set_kl_weight` was not called."""
    return getattr(model, _ATTRIBUTE, None)


def _batch_size(x, y_pred):
    """The batch size Keras' loss tracker weights the step with (x's, else y_pred's)."""
    for structure in (x, y_pred):
        for value in keras.tree.flatten(structure) if structure is not None else ():
            if value is not None:
                return ops.shape(value)[0]
    return 1


def _update_elbo_terms(model, layers, total, x, y_pred):
    """Splits one `compute_loss` total into nll, per-layer KL and other losses."""
    metric = elbo_terms_metric(model)
    layer_kls = layer_kl_terms(layers)
    kl_ids = {id(term) for layer in layers for term in _keras_internals.own_losses(layer)}
    others = [ops.sum(ops.cast(loss, "float32")) for loss in model.losses if id(loss) not in kl_ids]
    if others:
        metric.reports_other_losses = True
    other = ops.sum(ops.stack(others)) if others else ops.zeros((), "float32")
    # Keras scales the loss by 1 / replicas under tf.distribute and unscales it for its
    # loss tracker; the KL terms themselves are unscaled, so the data term is:
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    unscaled_total = ops.cast(total, "float32") * float(replicas)
    nll = unscaled_total - ops.sum(ops.stack(layer_kls)) - other
    metric.update_state(nll, layer_kls, other, _batch_size(x, y_pred))


def track_elbo(model, layers):
    """Makes `model`'s fit/evaluate logs (and `compute_loss`) report `nll` and `kl`.

    `layers` are the model's Bayesian layers. Idempotent, and never resets compiled
    functions, so it is safe to call during `fit`. Returns the model's `ELBOTerms`, or None
    when `model` is not a `keras.Model` or the metric cannot be made here (inside one
    replica of a `tf.distribute` strategy, where variables cannot be created: there
    `tfbdl.set_kl_weight`, called in the strategy's scope, attaches it).
    """
    if not isinstance(model, keras.Model):
        return None
    metric = elbo_terms_metric(model)
    if metric is not None:
        return metric
    if tf.distribute.in_cross_replica_context() is False and tf.distribute.has_strategy():
        return None
    # Made eagerly (also when first seen inside a traced step), where the model's
    # variables live (e.g. under a strategy scope).
    with tf.init_scope(), model.distribute_strategy.scope():
        metric = ELBOTerms([layer.name for layer in layers])
    _keras_internals.attach_metric(model, _ATTRIBUTE, metric)  # part of model.metrics from now on
    _keras_internals.wrap_compute_loss(
        model, lambda model, total, x, y_pred: _update_elbo_terms(model, layers, total, x, y_pred)
    )
    if _keras_internals.needs_multi_worker_fit_workarounds(model.distribute_strategy):
        _keras_internals.use_multi_worker_fit_workarounds(model)
    return metric
