"""KL terms of the priors, checked against independent computations."""

import keras
import numpy as np
import pytest
import scipy.integrate
import scipy.stats
import tensorflow as tf
import tensorflow_probability as tfp

import tfbdl

tfd = tfp.distributions
L = tfbdl.layers


def _layer(prior, units=3, input_dim=2, initial_scale=0.3, loc_init="random_normal", seed=0):
    layer = L.DenseFlipout(
        units, prior=prior, seed=seed,
        posterior=tfbdl.posteriors.MeanFieldNormal(initial_scale, loc_initializer=loc_init),
    )
    layer.build((None, input_dim))
    return layer


def _posterior(layer):
    return layer.kernel.numpy().astype("float64"), layer.kernel_posterior.scale().numpy().astype("float64")


def _mc_kl_mean_and_se(layer, draws):
    """Mean and standard error of `draws` one-sample KL estimates (fresh samples, one graph)."""
    kls = tf.function(lambda: tf.map_fn(lambda _: layer.kl_divergence(), tf.range(draws),
                                        fn_output_signature=tf.float32))().numpy()
    return kls.mean(), kls.std(ddof=1) / np.sqrt(draws)


def test_gaussian_closed_form_equals_tfd_and_the_textbook_formula():
    layer = _layer(tfbdl.priors.Gaussian(scale=0.7, loc=0.2))
    mu, sigma = _posterior(layer)
    textbook = np.sum(np.log(0.7 / sigma) + (sigma**2 + (mu - 0.2) ** 2) / (2 * 0.7**2) - 0.5)
    from_tfd = tf.reduce_sum(tfd.kl_divergence(tfd.Normal(mu, sigma), tfd.Normal(np.float64(0.2), np.float64(0.7))))
    kl = float(layer.kl_divergence())
    np.testing.assert_allclose(kl, float(from_tfd), rtol=1e-5)
    np.testing.assert_allclose(kl, textbook, rtol=1e-5)
    assert not layer.kernel_prior_term.requires_sample


@pytest.mark.parametrize("prior, loc, scale", [
    (tfbdl.priors.Gaussian(), 0.0, 1.0),                      # the default: scalar fast path
    (tfbdl.priors.Gaussian(0.3, loc=-0.1), -0.1, 0.3),
    (tfbdl.priors.Gaussian([0.5, 1.0, 2.0], loc=[[0.1, 0.2, 0.3]]), [[0.1, 0.2, 0.3]], [0.5, 1.0, 2.0]),
    (tfbdl.priors.Informed(np.ones((2, 3)), [[0.4], [0.9]]), np.ones((2, 3)), [[0.4], [0.9]]),
])
def test_normal_kl_value_and_gradients_equal_tfd(prior, loc, scale):
    layer = _layer(prior)
    variables = [layer.kernel_posterior.loc, layer.kernel_posterior.untransformed_scale]
    reference = tfd.Normal(np.asarray(loc, "float32"), np.asarray(scale, "float32"))
    with tf.GradientTape(persistent=True) as tape:
        kl = layer.kl_divergence()
        expected = tf.reduce_sum(tfd.kl_divergence(layer.kernel_posterior.distribution(), reference))
    np.testing.assert_allclose(float(kl), float(expected), rtol=1e-5)
    for got, want in zip(tape.gradient(kl, variables), tape.gradient(expected, variables)):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)


def test_informed_prior_is_centred_on_the_given_weights():
    centre = np.arange(6, dtype="float32").reshape(2, 3) / 10
    layer = _layer(tfbdl.priors.Informed(centre, scale=0.5))
    mu, sigma = _posterior(layer)
    expected = tf.reduce_sum(tfd.kl_divergence(tfd.Normal(mu, sigma), tfd.Normal(centre.astype("float64"), 0.5)))
    np.testing.assert_allclose(float(layer.kl_divergence()), float(expected), rtol=1e-5)
    layer.kernel_posterior.loc.assign(centre)
    layer.kernel_posterior.untransformed_scale.assign(np.full((2, 3), float(tfp.math.softplus_inverse(0.5))))
    assert abs(float(layer.kl_divergence())) < 1e-4  # q == p


def _integrated_kl(mu, sigma, log_prior):
    """sum_i of int q_i(w) [log q_i(w) - log p(w)] dw by adaptive quadrature over mu_i +- 12 sigma_i."""
    total = 0.0
    for m, s in zip(mu.ravel(), sigma.ravel()):
        q = scipy.stats.norm(m, s)
        integrand = lambda w: q.pdf(w) * (q.logpdf(w) - log_prior(w))  # noqa: E731
        total += scipy.integrate.quad(integrand, m - 12 * s, m + 12 * s, points=[0.0] if abs(m) < 12 * s else None,
                                      limit=200)[0]
    return total


def test_spike_and_slab_monte_carlo_kl_averages_to_the_integrated_kl():
    prior = tfbdl.priors.SpikeAndSlab(pi=0.3, slab_scale=1.0, spike_scale=0.05)
    layer = _layer(prior, initial_scale=0.1, loc_init=keras.initializers.RandomUniform(-0.3, 0.3, seed=1))
    assert layer.kernel_prior_term.requires_sample
    mu, sigma = _posterior(layer)
    log_prior = lambda w: np.log(0.3 * scipy.stats.norm.pdf(w, 0, 1.0) + 0.7 * scipy.stats.norm.pdf(w, 0, 0.05))  # noqa: E731
    expected = _integrated_kl(mu, sigma, log_prior)
    mean, se = _mc_kl_mean_and_se(layer, draws=3000)
    # The MC estimate is unbiased; 4 standard errors of the mean of 3000 draws.
    assert abs(mean - expected) < 4 * se, (mean, expected, se)
    assert se < 0.05 * abs(expected)  # the check is sharp, not vacuous


def test_any_tfp_distribution_prior_without_closed_form_uses_monte_carlo():
    layer = _layer(tfd.Laplace(0.0, 0.4), initial_scale=0.2)
    assert layer.kernel_prior_term.requires_sample
    mu, sigma = _posterior(layer)
    expected = _integrated_kl(mu, sigma, lambda w: scipy.stats.laplace.logpdf(w, 0, 0.4))
    mean, se = _mc_kl_mean_and_se(layer, draws=3000)
    assert abs(mean - expected) < 4 * se, (mean, expected, se)


def test_a_tfp_normal_prior_and_a_callable_prior_use_the_closed_form():
    reference = _layer(tfbdl.priors.Gaussian(scale=2.0))
    gaussian = float(reference.kl_divergence())
    from_distribution = _layer(tfd.Normal(0.0, 2.0))
    from_callable = _layer(lambda shape, dtype: tfd.Normal(tf.zeros(shape, dtype), 2.0))
    for layer in (from_distribution, from_callable):
        assert not layer.kernel_prior_term.requires_sample
        layer.set_weights(reference.get_weights())
        np.testing.assert_allclose(float(layer.kl_divergence()), gaussian, rtol=1e-5)


def test_hierarchical_kl_matches_a_monte_carlo_computation_from_tfd():
    """E_q[log q(w) + log q(tau) - log N(w | 0, tau^2) - log HalfNormal(tau | a)], sampled."""
    a = 0.8
    layer = _layer(tfbdl.priors.HalfNormalHierarchical(a, per_unit=True), units=3, input_dim=4)
    term = layer.kernel_prior_term
    term.tau_loc.assign([-1.0, -0.5, 0.2])
    term.tau_untransformed_scale.assign([-1.0, 0.0, -2.0])
    mu, sigma = _posterior(layer)
    m = term.tau_loc.numpy().astype("float64")
    s = tf.nn.softplus(term.tau_untransformed_scale).numpy().astype("float64")

    rng = np.random.default_rng(7)
    n = 200_000
    tau = np.exp(m + s * rng.standard_normal((n, 3)))                      # (n, units)
    w = mu + sigma * rng.standard_normal((n,) + mu.shape)                   # (n, in, units)
    log_q = scipy.stats.norm.logpdf(w, mu, sigma).sum((1, 2)) + scipy.stats.lognorm.logpdf(tau, s, scale=np.exp(m)).sum(1)
    log_p = scipy.stats.norm.logpdf(w, 0, tau[:, None, :]).sum((1, 2)) + scipy.stats.halfnorm.logpdf(tau, scale=a).sum(1)
    samples = log_q - log_p
    expected, se = samples.mean(), samples.std(ddof=1) / np.sqrt(n)

    kl = float(layer.kl_divergence())
    assert abs(kl - expected) < 4 * se, (kl, expected, se)
    assert not term.requires_sample
    np.testing.assert_allclose(term.tau.numpy(), np.exp(m + s**2 / 2), rtol=1e-5)


def test_hierarchical_tau_is_learned_towards_the_weights_scale():
    """With weights fixed near scale 0.05, minimizing the KL alone pulls E[tau] from ~0.8 towards 0.05."""
    layer = _layer(tfbdl.priors.HalfNormalHierarchical(1.0), units=50, input_dim=50,
                   initial_scale=0.01, loc_init=keras.initializers.RandomNormal(0, 0.05, seed=3))
    term = layer.kernel_prior_term
    start = float(term.tau)
    optimizer = keras.optimizers.Adam(0.05)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            kl = layer.kl_divergence()
        optimizer.apply_gradients([(tape.gradient(kl, term.tau_loc), term.tau_loc)])

    for _ in range(300):
        step()
    end = float(term.tau)
    assert start > 0.7 and 0.03 < end < 0.1, (start, end)


@pytest.mark.parametrize("make,match", [
    (lambda: tfbdl.priors.Gaussian(scale=-1.0), "scale"),
    (lambda: tfbdl.priors.Gaussian(scale=[1.0, 0.0]), "scale"),
    (lambda: tfbdl.priors.Gaussian(loc=np.inf), "loc"),
    (lambda: tfbdl.priors.HalfNormalHierarchical(0.0), "scale"),
    (lambda: tfbdl.priors.SpikeAndSlab(pi=0.0), "pi"),
    (lambda: tfbdl.priors.SpikeAndSlab(pi=1.5), "pi"),
    (lambda: tfbdl.priors.SpikeAndSlab(spike_scale=0.0), "spike_scale"),
    (lambda: tfbdl.priors.SpikeAndSlab(slab_scale=-2.0), "slab_scale"),
    (lambda: tfbdl.priors.Informed(np.zeros(3), scale=0.0), "scale"),
    (lambda: tfbdl.priors.DistributionPrior("normal"), "distribution"),
])
def test_bad_prior_arguments_raise_value_error_naming_them(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_a_distribution_prior_that_cannot_broadcast_raises_naming_prior():
    layer = L.DenseFlipout(3, prior=tfd.Normal(tf.zeros(5), 1.0))
    with pytest.raises(ValueError, match=r"`prior`.*\(2, 3\)"):
        layer.build((None, 2))
    assert [w.path for w in layer.weights] == [layer.kl_weight.path]  # only the constructor's state


def test_learned_tau_reports_each_hierarchical_layer():
    model = keras.Sequential([keras.Input((3,)),
                              L.DenseFlipout(4, prior=tfbdl.priors.HalfNormalHierarchical(1.0)),
                              L.DenseFlipout(2),
                              L.DenseFlipout(2, prior=tfbdl.priors.HalfNormalHierarchical(2.0, per_unit=True))])
    taus = tfbdl.learned_tau(model)
    first, last = tfbdl.bayesian_layers(model)[0], tfbdl.bayesian_layers(model)[2]
    assert list(taus) == [first.name, last.name]
    np.testing.assert_allclose(taus[first.name], float(first.kernel_prior_term.tau))
    assert taus[last.name].shape == (2,)
