"""Grouped hierarchical layers: KL, per-group routing, gradients, saving, errors, model tools."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfbdl
from tfbdl.layers import GroupedDenseFlipout, GroupedDenseReparameterization, GroupedHierarchical

tfd = tfp.distributions
G, IN, OUT = 3, 2, 4


def _model(layer_class=GroupedDenseFlipout, parameterization="centred", **kwargs):
    x, group = keras.Input((IN,)), keras.Input((), dtype="int32")
    prior = GroupedHierarchical(parameterization=parameterization)
    layer = layer_class(OUT, num_groups=G, prior=prior, bias_prior=prior, seed=1, **kwargs)
    return keras.Model([x, group], layer([x, group])), layer


def _data(n=12):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, IN)).astype("float32"), np.arange(n, dtype="int32") % G


def _perturb(layer):
    """Distinct groups, population, sigmas and tau, so the test sees every term."""
    rng = np.random.default_rng(1)
    for variable in layer.trainable_weights:
        variable.assign(variable + rng.normal(scale=0.3, size=variable.shape).astype("float32"))


def test_kl_matches_monte_carlo_of_the_joint_density():
    model, layer = _model()
    _perturb(layer)
    term = layer.kernel_prior_term
    mu, sigma = layer.kernel_posterior.loc.numpy(), layer.kernel_posterior.scale().numpy()
    nu, lam = term.population.loc.numpy(), term.population.scale().numpy()
    m = term.tau_term.tau_loc.numpy()
    s = tf.nn.softplus(term.tau_term.tau_untransformed_scale).numpy()
    n = 200_000
    q_w, q_pop, q_tau = tfd.Normal(mu, sigma), tfd.Normal(nu, lam), tfd.LogNormal(m, s)
    w, pop, tau = q_w.sample(n, seed=1), q_pop.sample(n, seed=2), q_tau.sample(n, seed=3)
    log_ratio = (tf.reduce_sum(q_w.log_prob(w), [1, 2, 3]) + tf.reduce_sum(q_pop.log_prob(pop), [1, 2])
                 + q_tau.log_prob(tau)
                 - tf.reduce_sum(tfd.Normal(pop[:, None], tau[:, None, None, None]).log_prob(w), [1, 2, 3])
                 - tf.reduce_sum(tfd.Normal(0.0, 1.0).log_prob(pop), [1, 2])
                 - tfd.HalfNormal(1.0).log_prob(tau)).numpy()
    standard_error = log_ratio.std() / np.sqrt(n)
    closed_form = float(term.kl(layer.kernel_posterior, None))
    assert closed_form == pytest.approx(log_ratio.mean(), abs=4 * standard_error)


def test_posterior_mean_output_is_each_groups_plain_dense():
    model, layer = _model(activation="tanh")
    _perturb(layer)
    _assert_groups_are_plain_dense(model, layer.kernel_posterior.loc.numpy(), layer.bias_posterior.loc.numpy())


@pytest.mark.parametrize("parameterization", ["centred", "non_centred"])
@pytest.mark.parametrize("layer_class", [GroupedDenseFlipout, GroupedDenseReparameterization])
def test_gradients_reach_population_tau_and_every_group(layer_class, parameterization):
    model, layer = _model(layer_class, parameterization)
    _perturb(layer)  # groups away from the population, so the KL pulls on every one
    x, group = _data()
    present = group != 2
    with tf.GradientTape(persistent=True) as tape:
        data_term = tf.reduce_sum(model([x[present], group[present]], training=True) ** 2)
        kl = layer.kl_divergence()
    data_grad = tape.gradient(data_term, layer.kernel_posterior.loc).numpy()
    assert np.all(np.abs(data_grad[:2]).sum(axis=(1, 2)) > 0)
    assert np.all(data_grad[2] == 0), "an absent group got a data gradient"
    term = layer.kernel_prior_term
    if parameterization == "non_centred":  # the data reach w_pop and tau through w = w_pop + tau * eps
        for variable in (term.population.loc, term.population.untransformed_scale, term.tau_term.tau_loc):
            assert np.any(tape.gradient(data_term, variable).numpy() != 0), variable.path
    for variable in (term.population.loc, term.population.untransformed_scale, term.tau_term.tau_loc,
                     layer.kernel_posterior.loc):
        gradient = tape.gradient(kl, variable)
        assert gradient is not None and np.any(gradient.numpy() != 0), variable.path


@pytest.mark.parametrize("parameterization", ["centred", "non_centred"])
def test_save_load_and_config_round_trip(tmp_path, parameterization):
    model, layer = _model(parameterization=parameterization)
    _perturb(layer)
    tfbdl.set_kl_weight(model, num_examples=7)
    path = tmp_path / "grouped.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    x, group = _data()
    with tfbdl.posterior_mean(model), tfbdl.posterior_mean(loaded):
        np.testing.assert_array_equal(model([x, group]).numpy(), loaded([x, group]).numpy())
    for saved, restored in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(saved.numpy(), restored.numpy())
    assert tfbdl.learned_tau(loaded) == pytest.approx(tfbdl.learned_tau(model))
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config() and clone.num_groups == G


def test_bad_group_indices_and_arguments_are_named():
    model, _ = _model()
    x, group = _data()
    for bad in (G, -1):
        with pytest.raises(ValueError, match=r"`group` indices must lie in \[0, num_groups=3\).*" + str(bad)):
            model([x, np.where(group == 0, bad, group).astype("int32")])
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_groups=3"):
        model.predict([x, group + G], verbose=0)
    with pytest.raises(ValueError, match="integer indices"):
        GroupedDenseFlipout(OUT, num_groups=G)([x, group.astype("float32")])
    for num_groups in (0, 2.5, True):
        with pytest.raises(ValueError, match=f"num_groups={num_groups!r}"):
            GroupedDenseFlipout(OUT, num_groups=num_groups)
    with pytest.raises(ValueError, match="spread"):
        GroupedHierarchical(spread=tfbdl.priors.Gaussian(1.0))
    with pytest.raises(ValueError, match=r"`parameterization` must be one of \['centred', 'non_centred'\], "
                                         r"got parameterization='noncentered'"):
        GroupedHierarchical(parameterization="noncentered")


def test_set_kl_weight_fit_predict_and_learned_tau():
    model, layer = _model()
    x, group = _data()
    tfbdl.set_kl_weight(model, num_examples=len(x))
    assert float(layer.kl_weight.numpy()) == pytest.approx(1 / len(x))
    model.compile("adam", "mse")
    history = model.fit([x, group], np.zeros((len(x), OUT), "float32"), epochs=2, verbose=0)
    assert {"loss", "nll", "kl"} <= set(history.history)
    dataset = tf.data.Dataset.from_tensor_slices(((x, group),)).batch(5)
    result = tfbdl.predict(model, dataset, num_samples=4, output="regression", progress=False)
    assert result.mean.shape == (len(x), OUT) and np.all(result.std > 0)
    tau = tfbdl.learned_tau(model)[layer.name]
    assert tau == pytest.approx(float(layer.kernel_prior_term.tau))


# ------------------------------------------------------------------ non-centred: w_g = w_pop + tau * eps_g


def _non_centred_variables(layer):
    """(mu, sigma) of q(eps), (nu, lambda) of q(w_pop), (m, s) of q(tau), as numpy arrays."""
    term = layer.kernel_prior_term
    return ((layer.kernel_posterior.loc.numpy(), layer.kernel_posterior.scale().numpy()),
            (term.population.loc.numpy(), term.population.scale().numpy()),
            (term.tau_term.tau_loc.numpy(), tf.nn.softplus(term.tau_term.tau_untransformed_scale).numpy()))


def test_non_centred_kl_matches_monte_carlo_of_the_joint_density():
    _, layer = _model(parameterization="non_centred")
    _perturb(layer)
    (mu, sigma), (nu, lam), (m, s) = _non_centred_variables(layer)
    n = 200_000
    q_eps, q_pop, q_tau = tfd.Normal(mu, sigma), tfd.Normal(nu, lam), tfd.LogNormal(m, s)
    eps, pop, tau = q_eps.sample(n, seed=1), q_pop.sample(n, seed=2), q_tau.sample(n, seed=3)
    log_ratio = (tf.reduce_sum(q_eps.log_prob(eps), [1, 2, 3]) + tf.reduce_sum(q_pop.log_prob(pop), [1, 2])
                 + q_tau.log_prob(tau)
                 - tf.reduce_sum(tfd.Normal(0.0, 1.0).log_prob(eps), [1, 2, 3])
                 - tf.reduce_sum(tfd.Normal(0.0, 1.0).log_prob(pop), [1, 2])
                 - tfd.HalfNormal(1.0).log_prob(tau)).numpy()
    standard_error = log_ratio.std() / np.sqrt(n)
    closed_form = float(layer.kernel_prior_term.kl(layer.kernel_posterior, None))
    assert closed_form == pytest.approx(log_ratio.mean(), abs=4 * standard_error)


def _assert_groups_are_plain_dense(model, kernels, biases):
    x, group = _data()
    with tfbdl.posterior_mean(model):
        outputs = model([x, group]).numpy()
    for g in range(G):
        dense = keras.layers.Dense(OUT, activation="tanh")
        dense.build((None, IN))
        dense.set_weights([kernels[g], biases[g]])
        np.testing.assert_allclose(outputs[group == g], dense(x[group == g]).numpy(), rtol=1e-5, atol=1e-6)


def test_non_centred_groups_start_at_the_population_and_predict_with_the_mean_weights():
    model, layer = _model(parameterization="non_centred", activation="tanh")
    kernel_term, bias_term = layer.kernel_prior_term, layer.bias_prior_term
    assert np.abs(kernel_term.population.loc.numpy()).max() > 0  # the initializer's draw
    start = kernel_term.population.loc.numpy(), bias_term.population.loc.numpy()
    _assert_groups_are_plain_dense(model, [start[0]] * G, [start[1]] * G)  # eps means 0: w_g = w_pop
    _perturb(layer)
    (mu, _), (nu, _), _ = _non_centred_variables(layer)
    kernels = nu + float(kernel_term.tau) * mu  # E[w_g] = nu + E[tau] mu_g
    biases = bias_term.population.loc.numpy() + float(bias_term.tau) * layer.bias_posterior.loc.numpy()
    _assert_groups_are_plain_dense(model, kernels, biases)


def test_non_centred_weight_draws_have_the_reported_moments():
    """Draws w = w_pop + tau * eps through `weights(., seed)` against the exact mean and std
    of `weight_distributions()`, within 4.5 Monte Carlo standard errors (Bonferroni over the
    2 x 24 comparisons: a false alarm about once in 3000 runs)."""
    _, layer = _model(parameterization="non_centred")
    _perturb(layer)
    term, variables = layer.kernel_prior_term, layer.kernel_posterior.snapshot()
    n = 20_000

    @tf.function
    def draws():
        def draw(i):
            return term.weights(variables, tf.stack([i, 0])).sample(tf.stack([i, 1]))
        return tf.map_fn(draw, tf.range(n), fn_output_signature=tf.float32, parallel_iterations=64)

    draws = draws().numpy()
    moments = layer.weight_distributions()["kernel"]
    mean, std = moments.loc.numpy(), moments.scale().numpy()
    m4 = np.mean((draws - draws.mean(axis=0)) ** 4, axis=0)
    mean_z = (draws.mean(axis=0) - mean) / (draws.std(axis=0) / np.sqrt(n))
    std_z = (draws.std(axis=0) - std) / np.sqrt((m4 - std**4) / (4 * std**2 * n))
    assert np.max(np.abs(mean_z)) < 4.5 and np.max(np.abs(std_z)) < 4.5, (mean_z, std_z)
    assert np.all(std > layer.kernel_posterior.scale().numpy() * float(term.tau) * 1.01)  # w_pop's share


def test_prune_refuses_a_non_centred_prior_and_changes_nothing():
    model, layer = _model(parameterization="non_centred")
    before = [w.numpy() for w in model.weights]
    assert np.all(np.isfinite(tfbdl.pruning.signal_to_noise(model)))
    with pytest.raises(ValueError, match="non-centred prior on its kernel"):
        tfbdl.pruning.prune(model, 1.0)
    for saved, now in zip(before, model.weights):
        np.testing.assert_array_equal(saved, now.numpy())
