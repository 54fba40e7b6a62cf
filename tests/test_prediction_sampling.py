"""`tfbdl.predict(sampling="per_batch")` (one weight sample per batch, the default) against the
layers' own estimators: same per-example predictive distribution, one linear op per layer.

The equivalence is statistical: for every example and class, the predictive mean, the
predictive std and the expected entropy from the two modes must agree within a bound
derived from their Monte Carlo standard errors (S independent passes per mode):

    SE(mean)^2          = var_a / S + var_b / S
    SE(std)^2           ~ sum over modes of (m4 - var^2) / (4 var S)      (delta method)
    SE(mean entropy)^2  = var(H_a) / S + var(H_b) / S

|difference| / SE is then approximately standard normal; with a few hundred comparisons
a bound of 4.5 is exceeded by chance with probability about 1e-3 (Bonferroni).
"""

import keras
import numpy as np
import pytest

import tfbdl
from tfbdl.layers import Conv2DFlipout, DenseFlipout, DenseLocalReparameterization
from tfbdl.layers.base import ESTIMATOR, ONE_SAMPLE_PER_BATCH, POSTERIOR_MEAN
from tfbdl.posteriors import MeanFieldNormal

NUM_SAMPLES = 3000
Z_BOUND = 4.5


def _trained_moons_model(layer):
    """A 2-16-16-2 softmax network of `layer`, fitted briefly to two moons with wide posteriors."""
    (x, y), _ = tfbdl.data.two_moons(200, noise=0.2, seed=0)
    posterior = MeanFieldNormal(initial_scale=0.3)
    model = keras.Sequential([
        keras.Input((2,)),
        layer(16, activation="tanh", posterior=posterior, seed=1),
        layer(16, activation="tanh", posterior=posterior, seed=2),
        layer(2, activation="softmax", posterior=posterior, seed=3),
    ])
    tfbdl.set_kl_weight(model, num_examples=len(x))
    model.compile(keras.optimizers.Adam(0.02), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=20, batch_size=50, verbose=0)
    return model, x[:40]


def _conv_model():
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        Conv2DFlipout(4, 3, activation="relu", posterior=MeanFieldNormal(0.3), seed=1),
        keras.layers.Flatten(),
        DenseFlipout(3, activation="softmax", posterior=MeanFieldNormal(0.3), seed=2),
    ])
    return model, np.random.default_rng(0).normal(size=(30, 8, 8, 1)).astype("float32")


def _summary_and_errors(samples):
    """Per example and class: (mean, std, mean entropy) of (S, N, C) samples and the squared
    standard error of each."""
    count = len(samples)
    mean, var = samples.mean(axis=0), samples.var(axis=0)
    m4 = np.mean((samples - mean) ** 4, axis=0)
    entropies = -np.sum(samples * np.log(np.maximum(samples, 1e-30)), axis=-1)
    values = {"mean": mean, "std": np.sqrt(var), "aleatoric": entropies.mean(axis=0)}
    errors = {"mean": var / count,
              "std": np.maximum(m4 - var**2, 0.0) / (4.0 * np.maximum(var, 1e-30) * count),
              "aleatoric": entropies.var(axis=0) / count}
    return values, errors


@pytest.mark.parametrize("build", [
    lambda: _trained_moons_model(DenseFlipout),
    lambda: _trained_moons_model(DenseLocalReparameterization),
    _conv_model,
], ids=["flipout", "local_reparameterization", "conv_flipout"])
def test_per_batch_sampling_has_the_estimators_per_example_distribution(build):
    model, x = build()
    runs = {sampling: tfbdl.predict(model, x, num_samples=NUM_SAMPLES, sampling=sampling,
                                    return_samples=True, progress=False)
            for sampling in ("per_batch", "estimator")}
    (a, a_errors), (b, b_errors) = (_summary_and_errors(run.samples) for run in runs.values())
    assert np.mean(a["std"]) > 0.02  # the posterior is wide enough for the test to mean something
    for name in a:
        z = np.abs(a[name] - b[name]) / np.sqrt(a_errors[name] + b_errors[name] + 1e-30)
        assert z.max() < Z_BOUND, f"{name}: |difference| / SE up to {z.max():.2f}"
    # predict's streamed summary is the summary of the samples it returned
    np.testing.assert_allclose(runs["per_batch"].mean, a["mean"], atol=1e-5)


def test_per_batch_mode_shares_one_weight_sample_across_the_batch():
    """Identical inputs give identical outputs within a pass (Flipout would perturb each row)."""
    model, _ = _trained_moons_model(DenseFlipout)
    x = np.repeat(np.array([[0.3, -0.2]], "float32"), 8, axis=0)
    shared = tfbdl.predict(model, x, num_samples=5, return_samples=True, progress=False).samples
    np.testing.assert_allclose(shared, np.broadcast_to(shared[:, :1], shared.shape), atol=1e-6)
    flipout = tfbdl.predict(model, x, num_samples=5, sampling="estimator", return_samples=True,
                            progress=False).samples
    assert np.abs(flipout - flipout[:, :1]).max() > 1e-3
    assert np.abs(shared[0] - shared[1]).max() > 1e-3  # passes still draw fresh weights


def test_modes_are_restored_and_posterior_mean_wins():
    model, x = _trained_moons_model(DenseFlipout)
    layers = tfbdl.bayesian_layers(model)
    tfbdl.predict(model, x, num_samples=3, progress=False)
    assert [int(layer.forward_mode.numpy()) for layer in layers] == [ESTIMATOR] * 3
    with tfbdl.one_sample_per_batch(model):
        assert [int(layer.forward_mode.numpy()) for layer in layers] == [ONE_SAMPLE_PER_BATCH] * 3
        with tfbdl.posterior_mean(model):
            assert [int(layer.forward_mode.numpy()) for layer in layers] == [POSTERIOR_MEAN] * 3
        assert [int(layer.forward_mode.numpy()) for layer in layers] == [ONE_SAMPLE_PER_BATCH] * 3
    with tfbdl.posterior_mean(model):  # predict inside a posterior-mean block stays deterministic
        result = tfbdl.predict(model, x, num_samples=4, progress=False)
        assert np.all(result.std == 0.0)
    assert [int(layer.forward_mode.numpy()) for layer in layers] == [ESTIMATOR] * 3


def test_one_sample_per_batch_trains_and_keeps_the_kl():
    """The mode is usable in a traced fit too: the KL is still added, gradients flow."""
    model, x = _trained_moons_model(DenseFlipout)
    with tfbdl.one_sample_per_batch(model):
        outputs = model(x, training=True)
        assert float(tfbdl.kl_loss(model)) > 0.0
    assert outputs.shape == (len(x), 2)


def test_bad_sampling_is_refused():
    model, x = _conv_model()
    with pytest.raises(ValueError, match=r"`sampling` must be one of .*got sampling='flipout'"):
        tfbdl.predict(model, x, sampling="flipout", progress=False)
