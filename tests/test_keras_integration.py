"""Where tfbdl meets Keras: the ELBO state belongs to the model and its layers, survives
saving, loading and cloning, and is safe to change from callbacks during `fit`.

Each test reproduces one case that failed before the ELBO state moved into the layers
(a KL weight variable as the one source of truth, a posterior-mean switch the traced step
reads, tracking attached on a model's first call without resetting compiled functions).
"""

import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
import tensorflow_probability as tfp

import tfbdl
from training_support import moons, moons_model

tfd = tfp.distributions
RTOL = 1e-5  # float32 sums of a few hundred terms


@pytest.fixture
def data():
    return moons()


def _compile(model):
    model.compile(keras.optimizers.Adam(0.05), "binary_crossentropy")
    return model


def _kl_weights(model):
    return [float(layer.kl_weight.numpy()) for layer in tfbdl.bayesian_layers(model)]


def test_kl_annealing_works_without_a_prior_set_kl_weight_call(data):
    (x, y), _ = data
    model = _compile(moons_model())  # no tfbdl.set_kl_weight: the callback states N
    annealing = tfbdl.callbacks.KLAnnealing(len(x), warmup_epochs=2)
    history = model.fit(x, y, batch_size=50, epochs=3, verbose=0, callbacks=[annealing]).history
    np.testing.assert_allclose(history["kl_weight"], [0.5 / len(x), 1.0 / len(x), 1.0 / len(x)])
    np.testing.assert_allclose(history["loss"], np.add(history["nll"], history["kl"]), rtol=RTOL)
    assert _kl_weights(model) == pytest.approx([1.0 / len(x)] * 2)


class PosteriorMeanProbe(keras.callbacks.Callback):
    """Predicts with the posterior mean from inside fit, at batch and epoch ends."""

    def __init__(self, x):
        super().__init__()
        self.x = x
        self.batch_pairs, self.epoch_pairs = [], []

    def _twice(self):
        with tfbdl.posterior_mean(self.model):
            return self.model.predict(self.x, verbose=0), self.model.predict(self.x, verbose=0)

    def on_train_batch_end(self, batch, logs=None):
        if batch == 0:
            self.batch_pairs.append(self._twice())

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_pairs.append(self._twice())
        self.epoch_pairs.append(tfbdl.predict(self.model, self.x, num_samples=0, progress=False).mean)


def test_posterior_mean_inside_fit_callbacks(data):
    (x, y), (xt, _) = data
    model = _compile(moons_model())
    tfbdl.set_kl_weight(model, num_examples=len(x))
    probe = PosteriorMeanProbe(xt[:20])
    history = model.fit(x, y, batch_size=50, epochs=2, verbose=0, callbacks=[probe]).history
    assert len(history["loss"]) == 2 and np.all(np.isfinite(history["loss"]))
    for first, second in probe.batch_pairs:
        np.testing.assert_array_equal(first, second)  # deterministic inside the block
    # tfbdl.predict gives (1 - p, p) for a sigmoid output.
    np.testing.assert_allclose(probe.epoch_pairs[-1][:, 1], probe.epoch_pairs[-2][0][:, 0], rtol=1e-5)
    # Outside the block the model is stochastic again.
    assert not np.array_equal(model.predict(xt[:20], verbose=0), model.predict(xt[:20], verbose=0))


def test_loaded_model_trains_with_its_saved_kl_weight_and_logs_the_terms(data, tmp_path):
    (x, y), _ = data
    model = _compile(moons_model())
    tfbdl.set_kl_weight(model, num_examples=123)
    model.fit(x, y, batch_size=50, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")

    restored = keras.saving.load_model(tmp_path / "m.keras")
    assert _kl_weights(restored) == pytest.approx([1.0 / 123] * 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "no KL weight set" warning
        history = restored.fit(x, y, batch_size=50, epochs=1, verbose=0).history
    assert {"loss", "nll", "kl"} <= set(history)
    np.testing.assert_allclose(history["loss"], np.add(history["nll"], history["kl"]), rtol=RTOL)


def test_a_stated_kl_weight_wins_over_the_one_in_loaded_weights(data, tmp_path):
    (x, y), _ = data
    old = moons_model()
    tfbdl.set_kl_weight(old, num_examples=10)
    old.save_weights(tmp_path / "old.weights.h5")

    model = moons_model()
    model.load_weights(tmp_path / "old.weights.h5")  # unset: the file's weight fills it
    assert _kl_weights(model) == pytest.approx([0.1] * 2)
    tfbdl.set_kl_weight(model, num_examples=1000)
    model.load_weights(tmp_path / "old.weights.h5")  # set: the N for the current data stays
    assert _kl_weights(model) == pytest.approx([1e-3] * 2)
    np.testing.assert_array_equal(model.get_weights()[0], old.get_weights()[0])  # the rest loaded


def test_unset_kl_weight_warns_and_uses_the_full_kl(data):
    (x, y), _ = data
    model = _compile(moons_model())
    with pytest.warns(UserWarning, match="no KL weight set"):
        history = model.fit(x, y, batch_size=len(x), epochs=1, verbose=0).history
    assert _kl_weights(model) == [tfbdl.layers.base.UNSET_KL_WEIGHT] * 2
    # Weight 1: the logged KL is the whole KL, far above the per-example one.
    assert history["kl"][0] > 10.0


def test_informed_prior_keeps_its_values_through_config_and_clone_model():
    rng = np.random.default_rng(0)
    loc, scale = rng.normal(size=(3, 4)).astype("float32"), rng.uniform(0.1, 1.0, size=(4,)).astype("float32")
    prior = tfbdl.priors.Informed(loc, scale)
    copy = tfbdl.priors.Informed.from_config(prior.get_config())
    np.testing.assert_array_equal(copy.loc, loc)
    np.testing.assert_array_equal(copy.scale, scale)

    model = keras.Sequential([keras.Input((3,)), tfbdl.layers.DenseFlipout(4, prior=prior)])
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    original, cloned = model.layers[0], clone.layers[0]
    np.testing.assert_array_equal(cloned.prior.loc, loc)
    np.testing.assert_allclose(float(cloned.kl_divergence()), float(original.kl_divergence()), rtol=1e-6)
    expected = tfd.kl_divergence(original.kernel_posterior.distribution(), tfd.Normal(loc, scale))
    np.testing.assert_allclose(float(cloned.kl_divergence()), float(np.sum(expected)), rtol=1e-5)


def test_posterior_monitor_does_not_change_a_seeded_run(data, tmp_path):
    (x, y), _ = data

    def trained(callbacks):
        keras.utils.set_random_seed(7)
        model = _compile(moons_model(seed=3))
        tfbdl.set_kl_weight(model, num_examples=len(x))
        model.fit(x, y, batch_size=50, epochs=2, verbose=0, shuffle=False, callbacks=callbacks)
        return model.get_weights()

    plain = trained([])
    monitored = trained([tfbdl.callbacks.PosteriorMonitor(str(tmp_path / "tb"), histogram_freq=1)])
    for a, b in zip(plain, monitored):
        np.testing.assert_array_equal(a, b)


def test_callable_prior_is_called_once_per_build():
    calls = []

    def prior(shape, dtype):
        calls.append(shape)
        return tfd.Normal(np.zeros(shape, "float32"), 2.0)

    layer = tfbdl.layers.DenseFlipout(4, prior=prior)
    layer.build((None, 3))
    assert calls == [(3, 4)]


def test_import_tfbdl_does_not_need_pyplot():
    """`import keras` itself imports pyplot when matplotlib is installed (Keras 3.15's
    visualization utilities), so the check blocks pyplot and imports every tfbdl module:
    none of them may import it at import time."""
    code = ("import sys; sys.modules['matplotlib.pyplot'] = None\n"
            "import tfbdl, tfbdl.callbacks, tfbdl.plots, tfbdl.prediction, tfbdl.convert\n"
            "print('imported')")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert output.returncode == 0, output.stderr[-2000:]
    assert output.stdout.strip().splitlines()[-1] == "imported"


def test_models_made_from_configs_report_elbo_terms_on_their_first_fit(data):
    (x, y), _ = data
    model = moons_model()
    tfbdl.set_kl_weight(model, num_examples=len(x))
    for copy in (keras.models.clone_model(model), tfbdl.convert.to_bayesian(_deterministic_twin())):
        tfbdl.set_kl_weight(copy, num_examples=len(x))
        history = _compile(copy).fit(x, y, batch_size=50, epochs=1, verbose=0).history
        assert {"nll", "kl"} <= set(history)
        np.testing.assert_allclose(history["loss"], np.add(history["nll"], history["kl"]), rtol=RTOL)


def _deterministic_twin():
    return keras.Sequential([keras.Input((2,)), keras.layers.Dense(8, activation="tanh"),
                             keras.layers.Dense(1, activation="sigmoid")])
