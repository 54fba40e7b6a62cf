"""Behaviour of the Bayesian layers: shapes, posterior-mean equivalence with the Keras twin,
estimator statistics, Flipout decorrelation, gradients, seeding and the KL weight."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfbdl

L = tfbdl.layers
WIDE_POSTERIOR = tfbdl.posteriors.MeanFieldNormal(initial_scale=0.5, loc_initializer="random_normal")

DENSE = [L.DenseReparameterization, L.DenseFlipout, L.DenseLocalReparameterization]
CONV = {
    1: (keras.layers.Conv1D, [L.Conv1DReparameterization, L.Conv1DFlipout]),
    2: (keras.layers.Conv2D, [L.Conv2DReparameterization, L.Conv2DFlipout]),
    3: (keras.layers.Conv3D, [L.Conv3DReparameterization, L.Conv3DFlipout]),
}
ALL_CONV = [(rank, twin, cls) for rank, (twin, classes) in CONV.items() for cls in classes]
CONV_SETTINGS = [
    dict(padding="valid"),
    dict(padding="same"),
    dict(padding="valid", strides=2),
    dict(padding="same", dilation_rate=2),
]


def _conv_input(rank, batch=2, size=9, channels=3):
    return np.random.default_rng(0).normal(size=(batch,) + (size,) * rank + (channels,)).astype("float32")


def _copy_posterior_means_to(twin, layer):
    twin.set_weights([layer.kernel.numpy()] + ([layer.bias.numpy()] if layer.use_bias else []))


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("cls", DENSE)
@pytest.mark.parametrize("input_shape", [(4, 5), (4, 3, 5)])
def test_dense_output_shape_matches_keras(cls, input_shape):
    x = np.ones(input_shape, "float32")
    assert cls(7)(x).shape == keras.layers.Dense(7)(x).shape == input_shape[:-1] + (7,)
    assert cls(7).compute_output_shape(input_shape) == keras.layers.Dense(7).compute_output_shape(input_shape)


@pytest.mark.parametrize("rank,twin,cls", ALL_CONV)
@pytest.mark.parametrize("settings", CONV_SETTINGS)
def test_conv_output_shape_matches_keras(rank, twin, cls, settings):
    x = _conv_input(rank)
    expected = twin(4, 3, **settings)(x).shape
    assert cls(4, 3, **settings)(x).shape == expected


def test_causal_conv1d_shape_matches_keras():
    x = _conv_input(1)
    for cls in CONV[1][1]:
        assert cls(4, 3, padding="causal", dilation_rate=2)(x).shape == keras.layers.Conv1D(
            4, 3, padding="causal", dilation_rate=2)(x).shape


# --------------------------------------------------------------------------- posterior mean


@pytest.mark.parametrize("cls", DENSE)
@pytest.mark.parametrize("input_shape", [(4, 5), (4, 3, 5)])
def test_dense_posterior_mean_equals_keras_dense(cls, input_shape):
    x = np.random.default_rng(1).normal(size=input_shape).astype("float32")
    layer = cls(6, activation="tanh", posterior=WIDE_POSTERIOR, bias_prior=tfbdl.priors.Gaussian())
    layer(x)
    layer.bias.assign(np.linspace(-1, 1, 6))
    twin = keras.layers.Dense(6, activation="tanh")
    twin(x)
    _copy_posterior_means_to(twin, layer)
    with tfbdl.posterior_mean(layer):
        np.testing.assert_allclose(layer(x), twin(x), rtol=1e-5, atol=1e-6)
    # Outside the context the same layer is stochastic again.
    assert not np.allclose(layer(x), twin(x), atol=1e-3)


@pytest.mark.parametrize("rank,twin_cls,cls", ALL_CONV)
@pytest.mark.parametrize("settings", [dict(padding="same", strides=2), dict(padding="valid", dilation_rate=2)])
def test_conv_posterior_mean_equals_keras_conv(rank, twin_cls, cls, settings):
    x = _conv_input(rank)
    layer = cls(4, 3, posterior=WIDE_POSTERIOR, **settings)
    layer(x)
    layer.bias.assign(np.linspace(-1, 1, 4))
    twin = twin_cls(4, 3, **settings)
    twin(x)
    _copy_posterior_means_to(twin, layer)
    with tfbdl.posterior_mean(layer):
        np.testing.assert_allclose(layer(x), twin(x), rtol=1e-4, atol=1e-5)


def test_posterior_mean_applies_to_a_model_already_traced_by_predict():
    x = np.random.default_rng(2).normal(size=(16, 5)).astype("float32")
    model = keras.Sequential([keras.Input((5,)), L.DenseFlipout(8, activation="tanh"),
                              keras.layers.Dense(2), L.DenseReparameterization(1)])
    tfbdl.set_kl_weight(model, num_examples=100)
    for layer in tfbdl.bayesian_layers(model):
        layer.kernel_posterior.untransformed_scale.assign(np.zeros(layer.kernel.shape))  # sigma = 0.69
    stochastic = model.predict(x, verbose=0)
    with tfbdl.posterior_mean(model):
        first, second = model.predict(x, verbose=0), model.predict(x, verbose=0)
    np.testing.assert_array_equal(first, second)
    assert not np.allclose(stochastic, first, atol=1e-3)
    assert not np.allclose(model.predict(x, verbose=0), first, atol=1e-3)


# --------------------------------------------------------------------------- estimator statistics

NUM_DRAWS = 4000


def _draws(layer, x, n=NUM_DRAWS):
    """n independent forward passes of one input (fresh weights/signs each), in one graph."""
    x = tf.constant(x)

    @tf.function
    def draw():
        return tf.map_fn(lambda _: layer(x)[0], tf.range(n), fn_output_signature=tf.float32)

    return draw().numpy().reshape(n, -1)


def _assert_moments(samples, mean, variance):
    """Sample mean and variance within 4 standard errors of the analytic values.

    Each output is Gaussian for a fixed input under all three estimators (a sign-flipped
    Gaussian is Gaussian), so SE(mean) = sqrt(var / n) and SE(s^2) = var * sqrt(2 / (n - 1)).
    4 SE per unit: a false alarm has probability ~6e-5 per check.
    """
    n = samples.shape[0]
    np.testing.assert_array_less(np.abs(samples.mean(0) - mean), 4 * np.sqrt(variance / n))
    np.testing.assert_array_less(np.abs(samples.var(0, ddof=1) - variance), 4 * variance * np.sqrt(2 / (n - 1)))


def _analytic_moments(layer, twin, x):
    """Mean conv/dense(x, mu) + mu_b and variance conv/dense(x^2, sigma^2) + sigma_b^2 from the Keras twin."""
    mu_b, sigma_b = layer.bias_posterior.loc.numpy(), layer.bias_posterior.scale().numpy()
    twin.build(x.shape)
    twin.set_weights([layer.kernel_posterior.loc.numpy(), mu_b])
    mean = twin(x).numpy()[0].reshape(-1)
    twin.set_weights([layer.kernel_posterior.scale().numpy() ** 2, sigma_b**2])
    variance = twin(x**2).numpy()[0].reshape(-1)
    return mean, variance


@pytest.mark.parametrize("cls", DENSE)
def test_dense_estimator_mean_and_variance(cls):
    x = np.array([[0.5, -1.0, 2.0, 0.3]], "float32")
    layer = cls(3, seed=11, posterior=WIDE_POSTERIOR, bias_prior=tfbdl.priors.Gaussian())
    layer(x)
    mean, variance = _analytic_moments(layer, keras.layers.Dense(3), x)
    _assert_moments(_draws(layer, x), mean, variance)


@pytest.mark.parametrize("cls", [L.Conv2DReparameterization, L.Conv2DFlipout])
def test_conv_estimator_mean_and_variance(cls):
    x = np.random.default_rng(3).normal(size=(1, 4, 4, 2)).astype("float32")
    layer = cls(2, 3, seed=12, posterior=WIDE_POSTERIOR, bias_prior=tfbdl.priors.Gaussian())
    layer(x)
    mean, variance = _analytic_moments(layer, keras.layers.Conv2D(2, 3), x)
    _assert_moments(_draws(layer, x), mean, variance)


def test_estimator_test_detects_a_missing_bias_variance():
    """The moment check is sharp enough to see the bias's share of the variance."""
    x = np.array([[0.5, -1.0, 2.0, 0.3]], "float32")
    layer = L.DenseFlipout(3, seed=11, posterior=WIDE_POSTERIOR, bias_prior=tfbdl.priors.Gaussian())
    layer(x)
    mean, variance = _analytic_moments(layer, keras.layers.Dense(3), x)
    without_bias = variance - layer.bias_posterior.scale().numpy() ** 2
    with pytest.raises(AssertionError):
        _assert_moments(_draws(layer, x), mean, without_bias)


@pytest.mark.parametrize("cls,decorrelated", [(L.DenseFlipout, True), (L.DenseLocalReparameterization, True),
                                              (L.DenseReparameterization, False)])
def test_identical_inputs_in_one_batch(cls, decorrelated):
    x = np.tile(np.array([[0.5, -1.0, 2.0, 0.3]], "float32"), (2, 1))
    y = cls(5, seed=5, posterior=WIDE_POSTERIOR)(x).numpy()
    assert np.any(np.abs(y[0] - y[1]) > 1e-3) == decorrelated


def test_conv_flipout_decorrelates_examples_and_reparameterization_does_not():
    x = np.tile(_conv_input(2, batch=1), (2, 1, 1, 1))
    flip = L.Conv2DFlipout(4, 3, seed=1, posterior=WIDE_POSTERIOR)(x).numpy()
    reparam = L.Conv2DReparameterization(4, 3, seed=1, posterior=WIDE_POSTERIOR)(x).numpy()
    assert np.abs(flip[0] - flip[1]).max() > 1e-3
    np.testing.assert_allclose(reparam[0], reparam[1], rtol=1e-5, atol=1e-5)  # float32 round-off only


# --------------------------------------------------------------------------- seeding


@pytest.mark.parametrize("cls", DENSE + [L.Conv1DFlipout])
def test_same_seed_same_samples(cls):
    x = np.random.default_rng(4).normal(size=(3, 6, 2)).astype("float32")
    make = (lambda seed: cls(4, 2, seed=seed)) if issubclass(cls, L.Conv1DFlipout) else (lambda seed: cls(4, seed=seed))
    a, b = make(42), make(42)
    a(x), b(x)
    b.set_weights(a.get_weights())
    for _ in range(3):
        np.testing.assert_array_equal(a(x), b(x))
    c = make(43)
    c(x)
    c.set_weights(a.get_weights())
    assert not np.allclose(a(x), c(x))


# --------------------------------------------------------------------------- gradients


def test_every_variational_parameter_gets_a_finite_gradient():
    p = tfbdl.priors
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        L.Conv2DFlipout(3, 3, activation="tanh", prior=p.HalfNormalHierarchical(1.0), bias_prior=p.Gaussian()),
        L.Conv2DReparameterization(3, 3, activation="tanh", prior=p.SpikeAndSlab()),
        keras.layers.Flatten(),
        L.DenseLocalReparameterization(8, activation="tanh", prior=p.HalfNormalHierarchical(1.0, per_unit=True),
                                       bias_prior=p.SpikeAndSlab()),
        L.DenseFlipout(4, prior=p.Informed(np.zeros((8, 4)), 0.5)),
        L.DenseReparameterization(3, bias_prior=p.Gaussian()),
    ])
    tfbdl.set_kl_weight(model, num_examples=50)
    x = np.random.default_rng(5).normal(size=(6, 8, 8, 1)).astype("float32")
    y = np.arange(6) % 3
    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        nll = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        loss = tf.reduce_mean(nll) + tf.add_n(model.losses)
    grads = tape.gradient(loss, model.trainable_variables)
    names = [v.path for v in model.trainable_variables]
    assert any("tau_loc" in n for n in names) and any("untransformed_scale" in n for n in names)
    for name, grad in zip(names, grads):
        assert grad is not None, name
        assert np.all(np.isfinite(grad)), name
    assert len(model.losses) == 5 and all(np.isfinite(loss) for loss in model.losses)


def test_local_reparameterization_gradient_is_finite_for_an_all_zero_input_row():
    layer = L.DenseLocalReparameterization(3)
    x = np.array([[0.0, 0.0], [1.0, 2.0]], "float32")
    layer(x)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x))
    for grad in tape.gradient(loss, layer.trainable_variables):
        assert np.all(np.isfinite(grad))


# --------------------------------------------------------------------------- KL weight


def _gaussian_kl(layer):
    mu, sigma = layer.kernel.numpy(), layer.kernel_posterior.scale().numpy()
    return np.sum(-np.log(sigma) + (sigma**2 + mu**2) / 2 - 0.5)  # KL(N(mu, sigma^2) || N(0, 1))


def test_set_kl_weight_scales_each_layer_loss_in_nested_models():
    inner = keras.Sequential([keras.Input((3,)), L.DenseFlipout(4, activation="tanh")], name="inner")
    outer = keras.Sequential([keras.Input((3,)), inner, L.DenseReparameterization(2)])
    weight = tfbdl.set_kl_weight(outer, num_examples=250)
    assert weight == pytest.approx(1 / 250)
    outer(np.ones((2, 3), "float32"))
    layers = tfbdl.bayesian_layers(outer)
    assert len(layers) == 2
    expected = sum(_gaussian_kl(layer) for layer in layers) / 250
    np.testing.assert_allclose(float(tf.add_n(outer.losses)), expected, rtol=1e-5)


def test_set_kl_weight_before_build_and_after_does_not_retrace():
    layer = L.DenseFlipout(2)
    model = keras.Sequential([layer])
    tfbdl.set_kl_weight(model, num_examples=10)
    model(np.ones((1, 3), "float32"))
    assert float(layer.kl_weight) == pytest.approx(0.1)
    traces = []

    @tf.function
    def loss(x):
        traces.append(1)
        model(x)
        return tf.add_n(model.losses)

    x = np.ones((1, 3), "float32")
    first = float(loss(x))
    tfbdl.set_kl_weight(model, weight=0.05)
    second = float(loss(x))
    assert len(traces) == 1
    np.testing.assert_allclose(second, first / 2, rtol=1e-5)


def test_training_without_kl_weight_warns_once_per_model():
    def model():
        built = keras.Sequential([keras.Input((2,)), L.DenseFlipout(3), L.DenseFlipout(1)])
        built.compile("sgd", "mse")
        return built

    x, y = np.ones((4, 2), "float32"), np.ones((4, 1), "float32")
    first = model()
    with pytest.warns(UserWarning, match="set_kl_weight") as record:
        first.fit(x, y, epochs=1, verbose=0)
    assert len([w for w in record if "set_kl_weight" in str(w.message)]) == 1  # not once per layer
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first.evaluate(x, y, verbose=0)  # warned once already (and not training)
        tfbdl.set_kl_weight(first, num_examples=4)
        first.fit(x, y, epochs=1, verbose=0)
    with pytest.warns(UserWarning, match="set_kl_weight"):  # a second model is warned too
        model().fit(x, y, epochs=1, verbose=0)


@pytest.mark.parametrize("kwargs", [dict(), dict(num_examples=10, weight=0.1), dict(num_examples=0),
                                    dict(num_examples=2.5), dict(weight=-1.0)])
def test_set_kl_weight_rejects_bad_arguments(kwargs):
    model = keras.Sequential([keras.Input((2,)), L.DenseFlipout(1)])
    with pytest.raises(ValueError, match="num_examples|weight"):
        tfbdl.set_kl_weight(model, **kwargs)


def test_set_kl_weight_needs_bayesian_layers():
    with pytest.raises(ValueError, match="no tfbdl Bayesian layers"):
        tfbdl.set_kl_weight(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]), num_examples=3)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("make,match", [
    (lambda: L.DenseFlipout(0), "units"),
    (lambda: L.DenseReparameterization(-3), "units"),
    (lambda: L.Conv2DFlipout(0, 3), "filters"),
    (lambda: L.Conv2DFlipout(4, (3, 3, 3)), "kernel_size"),
    (lambda: L.Conv1DReparameterization(4, (3, 3)), "kernel_size"),
    (lambda: L.DenseFlipout(2, prior=tfbdl.priors.Gaussian(scale=0.0)), "scale"),
    (lambda: L.DenseFlipout(2, posterior=tfbdl.posteriors.MeanFieldNormal(initial_scale=-1)), "initial_scale"),
    (lambda: L.DenseFlipout(2, prior="gaussian"), "prior"),
])
def test_bad_constructor_arguments_raise_value_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def _only_construction_state(layer):
    """A layer that failed to build holds only what its constructor made: the KL weight."""
    return [weight.path for weight in layer.weights] == [layer.kl_weight.path]


def test_conv2d_fed_rank3_tensor_raises_before_building():
    layer = L.Conv2DFlipout(4, 3)
    with pytest.raises(ValueError, match=r"ndim=4.*\(2, 8, 8\)|\(2, 8, 8\).*ndim=4"):
        layer(np.ones((2, 8, 8), "float32"))
    assert not layer.built and _only_construction_state(layer)


@pytest.mark.parametrize("prior", [tfbdl.priors.Gaussian(loc=np.zeros(3)),
                                   tfbdl.priors.Informed(np.zeros((4, 5)), 1.0),
                                   tfbdl.priors.Gaussian(scale=np.ones((2, 2)))])
def test_prior_that_cannot_broadcast_to_the_kernel_raises_before_building(prior):
    layer = L.DenseFlipout(2, prior=prior)
    with pytest.raises(ValueError, match=r"`prior`.*\(4, 2\)"):
        layer(np.ones((1, 4), "float32"))
    assert _only_construction_state(layer)


def test_bias_prior_that_cannot_broadcast_names_bias_prior():
    layer = L.DenseFlipout(2, bias_prior=tfbdl.priors.Gaussian(loc=np.zeros(5)))
    with pytest.raises(ValueError, match=r"`bias_prior`.*\(2,\)"):
        layer(np.ones((1, 4), "float32"))
    assert _only_construction_state(layer)


def test_a_shared_loc_initializer_gives_each_weight_its_own_values():
    posterior = tfbdl.posteriors.MeanFieldNormal(loc_initializer="random_normal")
    a = L.DenseFlipout(3, posterior=posterior, bias_prior=tfbdl.priors.Gaussian())
    b = L.DenseFlipout(3, posterior=posterior)
    a(np.ones((1, 3), "float32")), b(np.ones((1, 3), "float32"))
    assert not np.allclose(a.kernel, b.kernel)
    assert not np.allclose(a.kernel[0], a.bias)


def test_posterior_scale_is_softplus_with_its_exact_gradient():
    layer = L.DenseFlipout(3)
    layer.build((None, 4))
    rho = layer.kernel_posterior.untransformed_scale
    rho.assign(np.linspace(-30.0, 30.0, 12, dtype="float32").reshape(4, 3))
    upstream = tf.random.stateless_normal((4, 3), [1, 2])
    with tf.GradientTape() as tape:
        scale = layer.kernel_posterior.scale()
        loss = tf.reduce_sum(scale * upstream)
    expected = tf.nn.softplus(rho)  # TF's own softplus and, below, its derivative sigmoid
    np.testing.assert_allclose(scale.numpy(), expected.numpy(), rtol=1e-6)
    np.testing.assert_allclose(tape.gradient(loss, rho).numpy(), (tf.sigmoid(rho) * upstream).numpy(),
                               rtol=1e-6, atol=1e-30)
