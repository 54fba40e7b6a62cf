"""Reliability: no silently wrong number, clear errors, nothing saved is lost.

Each test guards a defect found by trying tfbdl as a user would (see the issue
"Reliability"); each fails without its fix.
"""

import keras
import numpy as np
import pytest

import tfbdl
from training_support import gaussian_kl_from_variables

L = tfbdl.layers


def test_a_layer_called_twice_counts_its_kl_once():
    shared = L.DenseFlipout(3, activation="tanh", seed=1)
    left, right = keras.Input((2,)), keras.Input((2,))
    joined = keras.layers.Concatenate()([shared(left), shared(right)])
    model = keras.Model([left, right], L.DenseFlipout(1, seed=2)(joined))
    tfbdl.set_kl_weight(model, num_examples=10)
    x = np.ones((4, 2), "float32")
    model([x, x], training=True)
    expected = sum(gaussian_kl_from_variables(layer) for layer in tfbdl.bayesian_layers(model)) / 10
    np.testing.assert_allclose(float(keras.ops.sum(model.losses)), expected, rtol=1e-5)
    np.testing.assert_allclose(float(tfbdl.kl_loss(model)), expected, rtol=1e-5)


def test_local_reparameterization_under_float16_stays_finite_for_large_inputs():
    layer = L.DenseLocalReparameterization(4, dtype="mixed_float16", seed=0)
    x = np.full((8, 16), 300.0, "float32")  # x^2 = 90 000 > float16's 65 504
    outputs = layer(x, training=True)
    assert outputs.dtype == "float16"
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(outputs)))
    # The sampled pre-activations spread as N(x mu, x^2 sigma^2) says: sigma = 0.01 here.
    spread = np.std(keras.ops.convert_to_numpy(outputs) - keras.ops.convert_to_numpy(x @ layer.kernel.numpy()))
    assert 0.5 * 300 * 0.01 * 4 < spread < 2.0 * 300 * 0.01 * 4  # sqrt(16) inputs of 300 x 0.01
