"""Helpers shared by the training, callback and runtime tests (and their worker scripts).

`gaussian_kl_from_variables` recomputes a layer's KL from its variables with NumPy, from
the textbook formula, independently of TFP and of the layer's own `kl_divergence()`:

    KL(N(mu, s^2) || N(0, p^2)) = log(p / s) + (s^2 + mu^2) / (2 p^2) - 1/2
"""

import keras
import numpy as np

import tfbdl


def softplus(x):
    return np.logaddexp(0.0, x)


def gaussian_kl_from_variables(layer, prior_scale=1.0):
    """Unweighted KL of a layer with Gaussian(prior_scale) priors on its variational weights."""
    total = 0.0
    for posterior in (layer.kernel_posterior, layer.bias_posterior):
        if posterior is None:
            continue
        mu = np.asarray(posterior.loc.numpy(), np.float64)
        sigma = softplus(np.asarray(posterior.untransformed_scale.numpy(), np.float64))
        total += np.sum(np.log(prior_scale / sigma) + (sigma**2 + mu**2) / (2 * prior_scale**2) - 0.5)
    return total


def model_kl_per_example(model, num_examples, prior_scale=1.0):
    """sum_layers KL / N, from the variables (Gaussian priors)."""
    return sum(gaussian_kl_from_variables(layer, prior_scale) for layer in tfbdl.bayesian_layers(model)) / num_examples


def moons_model(layer=tfbdl.layers.DenseFlipout, hidden=8, seed=0, bias_prior=True, **kwargs):
    """A small two-moons classifier with Gaussian priors on kernels (and biases)."""
    bias = tfbdl.priors.Gaussian() if bias_prior else None
    return keras.Sequential(
        [
            keras.Input((2,)),
            layer(hidden, activation="tanh", seed=seed, bias_prior=bias, **kwargs),
            layer(1, activation="sigmoid", seed=seed + 1, bias_prior=bias, **kwargs),
        ]
    )


def moons(n=200, seed=0):
    """(x_train, y_train), (x_test, y_test), float32, n/2 examples each."""
    (x, y), (xt, yt) = tfbdl.data.two_moons(n, 0.2, seed=seed)
    return (x.astype("float32"), y.astype("float32")), (xt.astype("float32"), yt.astype("float32"))
