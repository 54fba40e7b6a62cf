"""Bayesian twins of `keras.layers.Dense`: reparameterization, Flipout, local reparameterization."""

import keras
from keras import ops

from tfbdl.layers import estimators
from tfbdl.layers.base import BayesianLayer

register = keras.saving.register_keras_serializable(package="tfbdl")


class BayesianDense(BayesianLayer, keras.layers.Dense):
    """`keras.layers.Dense` with a posterior over its kernel: y = activation(x W + b)."""

    def weight_shapes(self, input_shape):
        input_dim = input_shape[-1]
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: input_dim})
        return (input_dim, self.units), (self.units,)

    def linear(self, inputs, kernel):
        return ops.matmul(inputs, kernel)

    def add_bias(self, outputs, bias):
        return ops.add(outputs, bias)


@register
class DenseReparameterization(BayesianDense):
    """Dense layer sampling one kernel W ~ q(W) per batch (reparameterization trick).

        W = mu + sigma * eps,   eps ~ N(0, I),   y = activation(x W + b)

    Blundell et al. 2015, "Weight Uncertainty in Neural Networks".

    Example:
        >>> model = keras.Sequential([keras.Input((2,)),
        ...     tfbdl.layers.DenseReparameterization(16, activation="tanh"),
        ...     tfbdl.layers.DenseReparameterization(1, activation="sigmoid")])
        >>> tfbdl.set_kl_weight(model, num_examples=1000)
    """

    estimator = estimators.reparameterization


@register
class DenseFlipout(BayesianDense):
    """Dense layer with Flipout: pseudo-independent weight perturbations per example.

        y_n = activation(x_n mu + ((x_n * s_n) Delta W) * r_n + b),
        Delta W = sigma * eps,   s_n, r_n ~ Rademacher

    Wen et al. 2018, "Flipout: Efficient Pseudo-Independent Weight Perturbations on
    Mini-Batches". Never materializes per-example weights.

    Example:
        >>> model = keras.Sequential([keras.Input((784,)),
        ...     tfbdl.layers.DenseFlipout(800, activation="tanh"),
        ...     tfbdl.layers.DenseFlipout(10)])
        >>> tfbdl.set_kl_weight(model, num_examples=60000)
    """

    estimator = estimators.flipout


@register
class DenseLocalReparameterization(BayesianDense):
    """Dense layer sampling pre-activations instead of weights (local reparameterization).

        x W ~ N(x mu, x^2 sigma^2),   y = activation(x W + b)

    Kingma, Salimans & Welling 2015, "Variational Dropout and the Local Reparameterization
    Trick". Lowest-variance gradients of the three; no weight sample is drawn.

    Example:
        >>> layer = tfbdl.layers.DenseLocalReparameterization(800, activation="tanh")
    """

    estimator = estimators.local_reparameterization
