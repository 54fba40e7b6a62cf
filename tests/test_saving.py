"""`.keras` save/load round trip: config, priors, posteriors and every variable survive."""

import json

import keras
import numpy as np
import tensorflow_probability as tfp

import tfbdl

L, P = tfbdl.layers, tfbdl.priors


def _model():
    trained = np.random.default_rng(0).normal(size=(72, 6)).astype("float32")
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        L.Conv2DFlipout(4, 3, activation="tanh", prior=P.HalfNormalHierarchical(0.5, per_unit=True), seed=1),
        L.Conv2DReparameterization(2, 3, padding="same", prior=P.SpikeAndSlab(pi=0.25), bias_prior=P.Gaussian(2.0)),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        L.DenseFlipout(6, prior=P.Informed(trained[:18], 0.1), activation="relu"),
        L.DenseLocalReparameterization(5, prior=tfp.distributions.Laplace(0.0, 0.5)),
        L.DenseReparameterization(3, prior=P.Gaussian(scale=0.3, loc=0.1),
                                  posterior=tfbdl.posteriors.MeanFieldNormal(0.05)),
    ])


def test_keras_round_trip_keeps_config_weights_and_posterior_mean_outputs(tmp_path):
    model = _model()
    tfbdl.set_kl_weight(model, num_examples=123)
    x = np.random.default_rng(1).normal(size=(4, 8, 8, 1)).astype("float32")
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, np.arange(4) % 3, epochs=2, verbose=0)  # move every variable off its initial value

    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)

    # Compared as JSON, the form saved: Keras itself turns build_config tuples into lists.
    assert json.loads(json.dumps(loaded.get_config())) == json.loads(json.dumps(model.get_config()))
    layer_and_name = lambda w: "/".join(w.path.split("/")[-2:])  # noqa: E731 (a loaded model prefixes its name)
    assert [layer_and_name(w) for w in loaded.weights] == [layer_and_name(w) for w in model.weights]
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    for original, restored in zip(tfbdl.bayesian_layers(model), tfbdl.bayesian_layers(loaded)):
        assert type(restored.prior) is type(original.prior)
        assert restored.posterior.initial_scale == original.posterior.initial_scale
        assert float(restored.kl_weight) == float(original.kl_weight) == float(np.float32(1 / 123))
        if not restored.kernel_prior_term.requires_sample:  # closed form: deterministic
            np.testing.assert_allclose(restored.kl_divergence(), original.kl_divergence(), rtol=1e-5)
    with tfbdl.posterior_mean(model), tfbdl.posterior_mean(loaded):
        np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))


def test_informed_prior_values_come_back_from_the_saved_model(tmp_path):
    centre = np.arange(6, dtype="float32").reshape(3, 2)
    model = keras.Sequential([keras.Input((3,)), L.DenseFlipout(2, prior=P.Informed(centre, np.full((3, 2), 0.2)))])
    model.save(tmp_path / "informed.keras")
    layer = keras.saving.load_model(tmp_path / "informed.keras").layers[0]
    np.testing.assert_array_equal(layer.prior.loc, centre)
    np.testing.assert_allclose(layer.prior.scale, 0.2)
    np.testing.assert_allclose(float(layer.kl_divergence()), float(model.layers[0].kl_divergence()), rtol=1e-6)
