"""ELBO reporting: `nll` and `kl` beside `loss` in fit/evaluate logs and in custom loops."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfbdl
from training_support import model_kl_per_example, moons, moons_model

# float32 sums of a few hundred terms of size ~1: relative round-off well below 1e-5.
RTOL = 1e-5


class RecordIndependentKL(keras.callbacks.Callback):
    """The model's KL / N recomputed from its variables at each epoch's start and end."""

    def __init__(self, num_examples):
        super().__init__()
        self.num_examples = num_examples
        self.at_begin, self.at_end = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.at_begin.append(model_kl_per_example(self.model, self.num_examples))

    def on_epoch_end(self, epoch, logs=None):
        self.at_end.append(model_kl_per_example(self.model, self.num_examples))


@pytest.fixture
def data():
    return moons()


def _compiled(num_examples, **kwargs):
    model = moons_model(**kwargs)
    tfbdl.set_kl_weight(model, num_examples=num_examples)
    model.compile(keras.optimizers.Adam(0.05), "binary_crossentropy", metrics=["accuracy"])
    return model


def test_fit_logs_nll_kl_and_their_sum_is_the_loss(data):
    (x, y), (xt, yt) = data
    n = len(x)
    model = _compiled(n)
    recorder = RecordIndependentKL(n)
    # Full batch: one step per epoch, so the step's KL is the KL at the epoch's start.
    history = model.fit(x, y, batch_size=n, epochs=3, validation_data=(xt, yt), verbose=0, callbacks=[recorder])
    logs = history.history
    for key in ("loss", "nll", "kl", "val_loss", "val_nll", "val_kl"):
        assert len(logs[key]) == 3, key
    np.testing.assert_allclose(logs["loss"], np.add(logs["nll"], logs["kl"]), rtol=RTOL)
    np.testing.assert_allclose(logs["val_loss"], np.add(logs["val_nll"], logs["val_kl"]), rtol=RTOL)
    # kl == sum of layer KLs / N, checked against the closed form from the variables.
    np.testing.assert_allclose(logs["kl"], recorder.at_begin, rtol=RTOL)
    np.testing.assert_allclose(logs["val_kl"], recorder.at_end, rtol=RTOL)
    # Training moved the posterior, so the check above compared different values per epoch.
    assert len(set(np.round(recorder.at_end, 6))) == 3


class LogKeys(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.batch, self.epoch = set(), set()

    def on_train_batch_end(self, batch, logs=None):
        self.batch |= set(logs)

    def on_epoch_end(self, epoch, logs=None):
        self.epoch |= set(logs)


def test_progress_bar_and_callbacks_see_nll_and_kl(data, capsys):
    (x, y), (xt, yt) = data
    model = _compiled(len(x))
    keys = LogKeys()
    model.fit(x, y, batch_size=50, epochs=1, validation_data=(xt, yt), verbose=2, callbacks=[keys])
    printed = capsys.readouterr().out
    for term in (" loss: ", " nll: ", " kl: ", " val_nll: ", " val_kl: "):
        assert term in printed, term
    assert {"loss", "nll", "kl"} <= keys.batch
    assert {"loss", "nll", "kl", "val_loss", "val_nll", "val_kl"} <= keys.epoch


def test_minibatch_fit_keeps_loss_equal_to_nll_plus_kl(data):
    (x, y), _ = data
    model = _compiled(len(x))
    logs = model.fit(x, y, batch_size=16, epochs=2, verbose=0).history  # last batch is partial
    np.testing.assert_allclose(logs["loss"], np.add(logs["nll"], logs["kl"]), rtol=RTOL)


def test_evaluate_reports_the_data_term_as_nll(data):
    _, (xt, yt) = data
    model = _compiled(500)
    with tfbdl.posterior_mean(model):  # deterministic outputs: nll is computable outside
        result = model.evaluate(xt, yt, batch_size=len(xt), return_dict=True, verbose=0)
        probabilities = model.predict(xt, verbose=0)
    expected_nll = float(keras.losses.binary_crossentropy(yt[:, None], probabilities).numpy().mean())
    np.testing.assert_allclose(result["nll"], expected_nll, rtol=1e-4)
    np.testing.assert_allclose(result["kl"], model_kl_per_example(model, 500), rtol=RTOL)
    np.testing.assert_allclose(result["loss"], result["nll"] + result["kl"], rtol=RTOL)


def test_custom_loop_with_compute_loss_and_kl_loss(data):
    (x, y), _ = data
    n = len(x)
    model = _compiled(n)
    loss_fn = keras.losses.BinaryCrossentropy()
    model.reset_metrics()
    with tf.GradientTape() as tape:
        y_pred = model(x, training=True)
        loss = model.compute_loss(x, y[:, None], y_pred)
    kl = tfbdl.kl_loss(model)
    nll = loss_fn(y[:, None], y_pred)
    np.testing.assert_allclose(float(kl), model_kl_per_example(model, n), rtol=RTOL)
    np.testing.assert_allclose(float(loss), float(nll) + float(kl), rtol=RTOL)
    # A loop that sums model.losses itself gets the same split.
    np.testing.assert_allclose(float(tf.add_n(model.losses)), float(kl), rtol=RTOL)
    # compute_loss also fed the model's metrics, as in fit.
    reported = tfbdl.elbo.elbo_terms_metric(model).result()
    assert tfbdl.elbo.elbo_terms_metric(model) in model.metrics
    np.testing.assert_allclose(float(reported["kl"]), float(kl), rtol=RTOL)
    np.testing.assert_allclose(float(reported["nll"]), float(nll), rtol=RTOL)
    assert all(g is not None for g in tape.gradient(loss, model.trainable_variables))


def test_other_losses_are_reported_apart_from_nll_and_kl(data):
    (x, y), _ = data
    model = moons_model(kernel_regularizer=keras.regularizers.L2(0.1))
    tfbdl.set_kl_weight(model, num_examples=len(x))
    model.compile("adam", "binary_crossentropy")
    logs = model.fit(x, y, batch_size=len(x), epochs=2, verbose=0).history
    assert min(logs["other_losses"]) > 0
    np.testing.assert_allclose(
        logs["loss"], np.add(np.add(logs["nll"], logs["kl"]), logs["other_losses"]), rtol=RTOL
    )


def test_set_kl_weight_after_compile_and_fit_still_reports(data):
    (x, y), _ = data
    model = moons_model()
    model.compile("adam", "binary_crossentropy")
    with pytest.warns(UserWarning, match="no KL weight set"):
        model.fit(x, y, epochs=1, verbose=0)
    tfbdl.set_kl_weight(model, num_examples=len(x))
    logs = model.fit(x, y, batch_size=len(x), epochs=1, verbose=0).history
    np.testing.assert_allclose(logs["loss"], np.add(logs["nll"], logs["kl"]), rtol=RTOL)


def test_kl_loss_rejects_a_model_without_bayesian_layers():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="no tfbdl Bayesian layers"):
        tfbdl.kl_loss(model)


def test_saved_model_round_trips_with_elbo_reporting(tmp_path, data):
    (x, y), _ = data
    model = _compiled(len(x))
    model.fit(x, y, epochs=1, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    tfbdl.set_kl_weight(loaded, num_examples=len(x))
    result = loaded.evaluate(x, y, return_dict=True, verbose=0)
    np.testing.assert_allclose(result["kl"], model_kl_per_example(model, len(x)), rtol=RTOL)
