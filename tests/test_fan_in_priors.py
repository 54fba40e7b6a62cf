"""Priors whose scale follows the layer's fan-in ("radford", "xavier", "kaiming")."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfbdl

tfd = tfp.distributions
L = tfbdl.layers
P = tfbdl.priors


def _kl_against(layer, scale):
    """sum KL(q(w) || N(0, scale^2)) of the layer's kernel, from tfd."""
    q = layer.kernel_posterior.distribution()
    return float(tf.reduce_sum(tfd.kl_divergence(q, tfd.Normal(0.0, np.float32(scale)))))


def _built(layer, input_shape):
    layer.build(input_shape)
    return layer


DENSE_FANS = (20, 5)  # fan_in, fan_out of a (20, 5) kernel
# Conv2D kernel (3, 5, 4 / 2, 8): fan_in = 15 * 2 = 30, fan_out = 15 * 8 = 120.
CONV_FANS = (30, 120)
EXPECTED = {
    "radford": lambda fan_in, fan_out: 1.0 / math.sqrt(fan_in),
    "xavier": lambda fan_in, fan_out: math.sqrt(2.0 / (fan_in + fan_out)),
    "kaiming": lambda fan_in, fan_out: math.sqrt(2.0 / fan_in),
}


@pytest.mark.parametrize("rule", sorted(EXPECTED))
def test_dense_gaussian_fan_scale_gives_the_closed_form_kl_of_that_normal(rule):
    layer = _built(L.DenseFlipout(5, prior=P.Gaussian(rule), seed=0), (None, 20))
    scale = EXPECTED[rule](*DENSE_FANS)
    np.testing.assert_allclose(float(layer.kl_divergence()), _kl_against(layer, scale), rtol=1e-5)


@pytest.mark.parametrize("rule", sorted(EXPECTED))
def test_grouped_conv_fan_in_is_kernel_area_times_input_channels_per_group(rule):
    layer = _built(L.Conv2DReparameterization(8, (3, 5), groups=2, prior=P.Gaussian(rule), seed=0),
                   (None, 9, 9, 4))
    scale = EXPECTED[rule](*CONV_FANS)
    np.testing.assert_allclose(float(layer.kl_divergence()), _kl_against(layer, scale), rtol=1e-5)


def test_a_bias_prior_takes_the_fan_in_of_its_kernel():
    layer = _built(L.DenseFlipout(5, bias_prior=P.Gaussian("kaiming"), seed=0), (None, 20))
    q = layer.bias_posterior.distribution()
    expected = tfd.kl_divergence(q, tfd.Normal(0.0, np.float32(math.sqrt(2.0 / 20))))
    np.testing.assert_allclose(float(layer.bias_prior_term.kl(layer.bias_posterior, None)),
                               float(tf.reduce_sum(expected)), rtol=1e-5)


def test_layers_of_different_width_sharing_one_prior_get_their_own_scale():
    prior = P.Gaussian("radford")
    narrow = _built(L.DenseFlipout(3, prior=prior, seed=0), (None, 4))
    wide = _built(L.DenseFlipout(3, prior=prior, seed=1), (None, 400))
    np.testing.assert_allclose(float(narrow.kl_divergence()), _kl_against(narrow, 0.5), rtol=1e-5)
    np.testing.assert_allclose(float(wide.kl_divergence()), _kl_against(wide, 0.05), rtol=1e-5)


@pytest.mark.parametrize("per_unit", [False, True])
def test_hierarchical_hyperprior_scale_follows_fan_in(per_unit):
    fan_scaled = _built(L.Conv2DFlipout(8, (3, 5), groups=2, seed=0,
                                        prior=P.HalfNormalHierarchical("xavier", per_unit=per_unit)),
                        (None, 9, 9, 4))
    scale = EXPECTED["xavier"](*CONV_FANS)
    numeric = _built(L.Conv2DFlipout(8, (3, 5), groups=2, seed=0,
                                     prior=P.HalfNormalHierarchical(scale, per_unit=per_unit)),
                     (None, 9, 9, 4))
    numeric.set_weights(fan_scaled.get_weights())
    assert fan_scaled.kernel_prior_term.prior_scale == pytest.approx(scale)
    np.testing.assert_allclose(float(fan_scaled.kl_divergence()), float(numeric.kl_divergence()), rtol=1e-6)
    # q(tau) starts near the hyperprior's mean, E[tau] = scale * sqrt(2 / pi).
    np.testing.assert_allclose(fan_scaled.kernel_prior_term.tau.numpy(), scale * math.sqrt(2 / math.pi),
                               rtol=0.01)


def _model():
    return keras.Sequential([
        keras.Input((6, 6, 2)),
        L.Conv2DFlipout(3, 3, prior=P.Gaussian("kaiming"), bias_prior=P.Gaussian("radford"), seed=0),
        keras.layers.Flatten(),
        L.DenseFlipout(4, prior=P.HalfNormalHierarchical("xavier", per_unit=True), seed=1),
    ])


def test_fan_scaled_priors_survive_save_and_load(tmp_path):
    model = _model()
    tfbdl.set_kl_weight(model, num_examples=100)
    path = tmp_path / "fan.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    conv, dense = tfbdl.bayesian_layers(loaded)
    assert conv.prior.get_config()["scale"] == "kaiming"
    assert conv.bias_prior.get_config()["scale"] == "radford"
    assert dense.prior.get_config() == {"scale": "xavier", "per_unit": True}
    for original, restored in zip(tfbdl.bayesian_layers(model), (conv, dense)):
        np.testing.assert_allclose(float(restored.kl_divergence()), float(original.kl_divergence()), rtol=1e-6)
    np.testing.assert_allclose(tfbdl.learned_tau(loaded)[dense.name], tfbdl.learned_tau(model)[dense.name])


@pytest.mark.parametrize("prior", [P.Gaussian, P.HalfNormalHierarchical])
def test_from_config_round_trips_the_rule(prior):
    again = prior.from_config(prior("radford").get_config())
    assert again.get_config()["scale"] == "radford" and "radford" in repr(again)


@pytest.mark.parametrize("prior", [P.Gaussian, P.HalfNormalHierarchical])
def test_an_unknown_rule_raises_naming_the_argument_value_and_the_choices(prior):
    with pytest.raises(ValueError, match=r"`scale`.*'radford', 'xavier', 'kaiming'.*scale='he'"):
        prior("he")
