"""Model-level controls: find Bayesian layers, set the KL weight, switch to posterior means."""

import contextlib

import keras

from tfbdl import elbo
from tfbdl.layers.base import BayesianLayer


def bayesian_layers(model):
    """All tfbdl Bayesian layers of `model`, nested models included, in model order."""
    if not isinstance(model, keras.layers.Layer):
        raise ValueError(f"`model` must be a Keras model or layer, got model={model!r}.")
    return [layer for layer in model._flatten_layers(include_self=True, recursive=True)
            if isinstance(layer, BayesianLayer)]


def _require_bayesian_layers(model):
    layers = bayesian_layers(model)
    if not layers:
        raise ValueError(f"`model` {model.name!r} has no tfbdl Bayesian layers.")
    return layers


def set_kl_weight(model, num_examples=None, weight=None):
    """Sets the KL weight of every Bayesian layer of `model` (nested models included).

    The model's loss then is the per-example negative ELBO, NLL + KL / N:

        tfbdl.set_kl_weight(model, num_examples=N)     # weight = 1 / N

    `weight=` sets any other value (e.g. during annealing). The weight is a variable, so
    changing it later does not retrace the model's functions. A `keras.Model` also gets
    ELBO reporting (`tfbdl.elbo.track_elbo`): its fit/evaluate logs carry `nll` and `kl`.
    """
    if (num_examples is None) == (weight is None):
        raise ValueError(
            "set_kl_weight: give exactly one of `num_examples` and `weight`, got "
            f"num_examples={num_examples!r}, weight={weight!r}."
        )
    if num_examples is not None:
        if isinstance(num_examples, bool) or not float(num_examples).is_integer() or num_examples <= 0:
            raise ValueError(
                "set_kl_weight: `num_examples` must be a positive integer (the number of "
                f"training examples), got num_examples={num_examples!r}."
            )
        weight = 1.0 / float(num_examples)
    elif not (float(weight) >= 0.0 and float(weight) < float("inf")):
        raise ValueError(f"set_kl_weight: `weight` must be finite and >= 0, got weight={weight!r}.")
    for layer in _require_bayesian_layers(model):
        layer.set_kl_weight(weight)
    elbo.track_elbo(model)  # fit/evaluate logs then show `nll` and `kl` beside `loss`
    return weight


def _reset_compiled_functions(model):
    """Drops Keras' traced train/test/predict functions so the next call retraces."""
    for layer in model._flatten_layers(include_self=True, recursive=True):
        if isinstance(layer, keras.Model):
            layer.train_function = None
            layer.test_function = None
            layer.predict_function = None


@contextlib.contextmanager
def posterior_mean(model):
    """Within the block, every Bayesian layer of `model` uses its posterior-mean weights.

    Forward passes are then deterministic (the KL is still added to the losses); outside
    the block they are stochastic, in training and inference alike. Keras' traced
    functions are reset on entry and exit, so `model.predict` & co. follow the mode
    without rebuilding the model; a `tf.function` of your own must be traced inside.

        with tfbdl.posterior_mean(model):
            probs = model.predict(x)
    """
    layers = _require_bayesian_layers(model)
    previous = [layer.use_posterior_mean for layer in layers]
    for layer in layers:
        layer.use_posterior_mean = True
    _reset_compiled_functions(model)
    try:
        yield model
    finally:
        for layer, value in zip(layers, previous):
            layer.use_posterior_mean = value
        _reset_compiled_functions(model)


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
