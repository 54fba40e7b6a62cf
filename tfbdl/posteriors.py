"""Variational posteriors over a layer's weights.

A posterior is a *description* (like a Keras initializer, and like a `tfbdl.priors.Prior`, with
the same verbs): `MeanFieldNormal(initial_scale=0.01)` can be handed to many layers, and
`bind(layer, name, shape, ...)` creates the variables of one weight tensor inside the layer
that uses it, so Keras tracks, trains and saves them with that layer.

Mean-field Normal (Blundell et al. 2015, "Weight Uncertainty in Neural Networks"):

    q(w) = prod_i Normal(w_i | mu_i, sigma_i^2),   sigma_i = softplus(rho_i)

The softplus keeps sigma positive with a gradient everywhere; `rho` starts at
softplus^-1(initial_scale) so a fresh layer behaves like its deterministic twin plus a little
noise.
"""

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfbdl import _validation, sampling

tfd = tfp.distributions

__all__ = ["Posterior", "MeanFieldNormal", "NormalTensors", "NormalWeights", "get"]


def _softplus_inverse(x):
    """softplus^-1(x) = log(exp(x) - 1), computed stably for small and large x."""
    x = float(x)
    return x + np.log(-np.expm1(-x))


@tf.custom_gradient
def _softplus(x):
    """softplus(x) whose gradient is TensorFlow's fused `SoftplusGrad` op, g * sigmoid(x) in one
    pass (the registered gradient takes a sigmoid and a multiplication: two weight-sized passes)."""
    return tf.nn.softplus(x), lambda g: tf.raw_ops.SoftplusGrad(gradients=g, features=x)


class NormalWeights:
    """The variables of one mean-field Normal weight tensor, owned by a layer.

    Attributes:
        loc: the variable `mu` (also the weight used under `tfbdl.posterior_mean`).
        untransformed_scale: the variable `rho`, with `sigma = softplus(rho)`.
    """

    def __init__(self, loc, untransformed_scale):
        self.loc = loc
        self.untransformed_scale = untransformed_scale

    @property
    def shape(self):
        return tuple(self.loc.shape)

    def scale(self):
        """sigma = softplus(rho), as a float32 tensor."""
        return _softplus(tf.convert_to_tensor(self.untransformed_scale))

    def distribution(self):
        """q(w) as a `tfd.Normal` with batch shape equal to the weight shape."""
        return tfd.Normal(tf.convert_to_tensor(self.loc), self.scale())

    def sample(self, seed):
        """One reparameterized draw w = mu + sigma * eps, eps ~ N(0, I) (stateless seed)."""
        return self.loc + self.scale() * sampling.standard_normal(self.shape, seed, self.loc.dtype)

    def snapshot(self):
        """These weights with mu and sigma read once, as tensors, for one forward pass.

        A layer call hands the snapshot to both its estimator and its KL term, so they share
        one softplus and one softplus gradient instead of computing their own: on CPU a
        softplus costs about as much as a (128 x 800) @ (800 x 800) matmul
        (benchmarks/PROFILE.md).
        """
        return NormalTensors(tf.convert_to_tensor(self.loc), self.scale())


class NormalTensors(NormalWeights):
    """A mean-field Normal given by tensors (loc, sigma) rather than variables: a read of
    `NormalWeights` for one forward pass (`snapshot`), or the weights a reparameterized
    prior derives from its variables (`tfbdl.priors.PriorTerm.weights`)."""

    def __init__(self, loc, scale):
        super().__init__(loc, None)
        self._scale = scale

    def scale(self):
        return self._scale

    def snapshot(self):
        return self


class Posterior:
    """Base class of variational posteriors: a description bound to one weight of a layer.

    The protocol of `tfbdl.priors.Prior`: `check_shape`, `bind`, `get_config`/`from_config`.
    """

    def check_shape(self, shape, argument):
        """Raises `ValueError` naming `argument` if this posterior cannot cover `shape`."""

    def bind(self, layer, name, shape, initializer, regularizer=None, constraint=None):
        """Creates the variables of `layer`'s weight `name` and returns them (e.g. `NormalWeights`)."""
        raise NotImplementedError

    def get_config(self):
        raise NotImplementedError

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="tfbdl")
class MeanFieldNormal(Posterior):
    """Fully factorized Normal posterior with softplus-parameterized scale.

    Args:
        initial_scale: sigma of every weight at initialization (> 0). Small, so training
            starts close to the deterministic network.
        loc_initializer: initializer of the means; `None` uses the layer's own
            `kernel_initializer` / `bias_initializer` (as its Keras twin would).

    Example:
        >>> layer = tfbdl.layers.DenseFlipout(
        ...     64, posterior=tfbdl.posteriors.MeanFieldNormal(initial_scale=0.05))
    """

    def __init__(self, initial_scale=0.01, loc_initializer=None):
        self.initial_scale = _validation.positive_number(initial_scale, "initial_scale", "MeanFieldNormal")
        self.loc_initializer = (
            None if loc_initializer is None else keras.initializers.get(loc_initializer)
        )

    def bind(self, layer, name, shape, initializer, regularizer=None, constraint=None):
        """Creates `{name}_loc` and `{name}_untransformed_scale` in `layer` (float32)."""
        loc = layer.add_weight(
            name=f"{name}_loc",
            shape=shape,
            initializer=self._fresh_loc_initializer() or initializer,
            regularizer=regularizer,
            constraint=constraint,
            dtype="float32",
        )
        untransformed_scale = layer.add_weight(
            name=f"{name}_untransformed_scale",
            shape=shape,
            initializer=keras.initializers.Constant(_softplus_inverse(self.initial_scale)),
            dtype="float32",
        )
        return NormalWeights(loc, untransformed_scale)

    def _fresh_loc_initializer(self):
        """A new copy per weight: an unseeded Keras initializer fixes its seed when made, so
        one shared instance would give every weight it initializes the same values."""
        if self.loc_initializer is None:
            return None
        return type(self.loc_initializer).from_config(self.loc_initializer.get_config())

    def get_config(self):
        return {
            "initial_scale": self.initial_scale,
            "loc_initializer": (
                None
                if self.loc_initializer is None
                else keras.saving.serialize_keras_object(self.loc_initializer)
            ),
        }

    def __repr__(self):
        return f"MeanFieldNormal(initial_scale={self.initial_scale})"


def get(posterior):
    """Resolves the layer argument `posterior=`: None, a posterior, or its serialized dict."""
    if posterior is None:
        return MeanFieldNormal()
    if isinstance(posterior, dict):
        posterior = keras.saving.deserialize_keras_object(posterior)
    if not isinstance(posterior, Posterior):
        raise ValueError(
            "`posterior` must be a tfbdl posterior such as MeanFieldNormal(...), "
            f"got posterior={posterior!r}."
        )
    return posterior
