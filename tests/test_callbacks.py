"""tfbdl.callbacks: KL annealing, the non-finite guard, and Keras' checkpoint callbacks."""

import logging

import keras
import numpy as np
import pytest

import tfbdl
from tfbdl.callbacks import KLAnnealing, TerminateOnNonFiniteELBO
from training_support import model_kl_per_example, moons, moons_model

RTOL = 1e-5  # float32 round-off on sums of a few hundred terms


@pytest.fixture
def data():
    return moons()


def _compiled(num_examples, learning_rate=0.05, **kwargs):
    model = moons_model(**kwargs)
    tfbdl.set_kl_weight(model, num_examples=num_examples)
    model.compile(keras.optimizers.Adam(learning_rate), "binary_crossentropy")
    return model


def _layer_weights(model):
    return [float(layer.kl_weight.numpy()) for layer in tfbdl.bayesian_layers(model)]


class Recorder(keras.callbacks.Callback):
    """Layer KL weights at each epoch / batch start, and the independent KL / N (weight 1/N)."""

    def __init__(self, num_examples):
        super().__init__()
        self.num_examples = num_examples
        self.epoch_weights, self.batch_weights, self.full_kl = [], [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_weights.append(_layer_weights(self.model))
        self.full_kl.append(model_kl_per_example(self.model, self.num_examples))

    def on_train_batch_begin(self, batch, logs=None):
        self.batch_weights.append(_layer_weights(self.model))


# --------------------------------------------------------------------------- KLAnnealing


def test_epoch_annealing_follows_the_linear_schedule_and_the_logged_kl_follows_it(data):
    (x, y), _ = data
    n, warmup = len(x), 3
    model = _compiled(n)
    recorder = Recorder(n)  # after KLAnnealing in the list: sees the weight of the epoch
    logs = model.fit(
        x, y, batch_size=n, epochs=5, verbose=0,
        callbacks=[KLAnnealing(num_examples=n, warmup_epochs=warmup), recorder],
    ).history
    expected = [min(1.0, (epoch + 1) / warmup) / n for epoch in range(5)]
    np.testing.assert_allclose(np.array(recorder.epoch_weights), np.tile(np.array(expected)[:, None], 2), rtol=RTOL)
    np.testing.assert_allclose(logs["kl_weight"], expected, rtol=RTOL)
    # Full batch: the epoch's one step sees the KL at the epoch's start, times fraction.
    fraction = np.array(expected) * n
    np.testing.assert_allclose(logs["kl"], fraction * np.array(recorder.full_kl), rtol=RTOL)
    np.testing.assert_allclose(logs["loss"], np.add(logs["nll"], logs["kl"]), rtol=RTOL)


def test_step_annealing_ramps_per_optimizer_step(data):
    (x, y), _ = data
    n, warmup = len(x), 6
    model = _compiled(n)
    recorder = Recorder(n)
    model.fit(
        x, y, batch_size=25, epochs=2, verbose=0,  # 4 steps per epoch, 8 in all
        callbacks=[KLAnnealing(num_examples=n, warmup_steps=warmup, schedule="cosine"), recorder],
    )
    steps = np.arange(8)
    progress = np.minimum(1.0, (steps + 1) / warmup)
    expected = 0.5 * (1 - np.cos(np.pi * progress)) / n
    np.testing.assert_allclose(np.array(recorder.batch_weights)[:, 0], expected, rtol=RTOL)
    assert expected[0] < expected[3] < expected[5] == expected[7] == pytest.approx(1 / n)


def _count_traces(model):
    """Wraps the model's compute_loss to count how often TensorFlow traces it."""
    traces = []
    compute_loss = model.compute_loss

    def counted(x=None, y=None, y_pred=None, sample_weight=None, training=True):
        traces.append(training)
        return compute_loss(x, y, y_pred, sample_weight, training=training)

    model.compute_loss = counted
    return traces


def test_annealing_does_not_retrace(data):
    (x, y), _ = data
    n = len(x)
    counts = []
    for callbacks in ([], [KLAnnealing(num_examples=n, warmup_steps=5)], [KLAnnealing(n, warmup_epochs=3)]):
        model = _compiled(n)
        traces = _count_traces(model)
        model.fit(x, y, batch_size=25, epochs=3, verbose=0, callbacks=callbacks)
        counts.append(len(traces))
    assert counts[0] >= 1
    assert counts[1] == counts[2] == counts[0]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_examples=0, warmup_epochs=2), "num_examples"),
        (dict(num_examples=10), "exactly one of"),
        (dict(num_examples=10, warmup_epochs=2, warmup_steps=5), "exactly one of"),
        (dict(num_examples=10, warmup_steps=-1), "warmup_steps"),
        (dict(num_examples=10, warmup_epochs=2, schedule="sigmoidal"), "schedule"),
    ],
)
def test_kl_annealing_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        KLAnnealing(**kwargs)


# --------------------------------------------------------------------------- non-finite guard


def test_nan_in_the_inputs_stops_training_naming_the_nll(data, caplog):
    (x, y), _ = data
    x = x.copy()
    x[30] = np.nan
    model = _compiled(len(x))
    guard = TerminateOnNonFiniteELBO()
    with caplog.at_level(logging.ERROR, logger="tfbdl"):
        history = model.fit(x, y, batch_size=25, epochs=3, verbose=0, callbacks=[guard])
    assert len(history.history["loss"]) == 1  # stopped in the first epoch
    assert "batch 2" in guard.message  # example 30 is in the second batch of 25
    assert "first non-finite term: nll" in guard.message
    assert guard.message in caplog.text


def test_a_non_finite_kl_stops_training_naming_the_layer(data):
    (x, y), _ = data
    model = _compiled(len(x))
    second = tfbdl.bayesian_layers(model)[1]
    # sigma = softplus(-inf) = 0 for one weight: KL(q || p) = +inf, outputs stay finite.
    rho = second.kernel_posterior.untransformed_scale
    rho.assign(np.where(np.arange(rho.shape[0])[:, None] == 0, -np.inf, rho.numpy()).astype("float32"))
    guard = TerminateOnNonFiniteELBO(raise_error=True)
    with pytest.raises(RuntimeError, match=rf"first non-finite term: KL of layer '{second.name}'"):
        model.fit(x, y, batch_size=25, epochs=2, verbose=0, callbacks=[guard])
    assert "nll" not in guard.message


# --------------------------------------------------------------------------- Keras checkpointing


class InterruptAfterEpoch(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt(f"simulated kill after epoch {epoch + 1}")


class EpochLog(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs, self.weights_at_start = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)
        self.weights_at_start.append([w.copy() for w in self.model.get_weights()])

    def on_epoch_end(self, epoch, logs=None):
        self.last_weights = [w.copy() for w in self.model.get_weights()]


def test_backup_and_restore_resumes_a_killed_fit(tmp_path, data):
    (x, y), _ = data
    n = len(x)
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    first, first_log = _compiled(n), EpochLog()
    with pytest.raises(KeyboardInterrupt):
        first.fit(x, y, batch_size=25, epochs=4, verbose=0,
                  callbacks=[first_log, backup, InterruptAfterEpoch(1)])
    assert first_log.epochs == [0, 1]

    # A fresh process would build a fresh model (other initial weights) and fit again.
    second = _compiled(n)
    second_log = EpochLog()
    history = second.fit(x, y, batch_size=25, epochs=4, verbose=0,
                         callbacks=[keras.callbacks.BackupAndRestore(str(tmp_path / "backup")), second_log])
    assert second_log.epochs == [2, 3]  # resumed at epoch 3 (index 2) and finished
    for restored, saved in zip(second_log.weights_at_start[0], first_log.last_weights):
        np.testing.assert_array_equal(restored, saved)
    np.testing.assert_allclose(history.history["loss"], np.add(history.history["nll"], history.history["kl"]), rtol=RTOL)


def test_model_checkpoint_saves_a_loadable_bayesian_model(tmp_path, data):
    (x, y), _ = data
    model = _compiled(len(x))
    path = tmp_path / "epoch{epoch}.keras"
    model.fit(x, y, batch_size=50, epochs=2, verbose=0, callbacks=[keras.callbacks.ModelCheckpoint(str(path))])
    loaded = keras.saving.load_model(tmp_path / "epoch2.keras")
    for saved, original in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(saved, original)
    with tfbdl.posterior_mean(model), tfbdl.posterior_mean(loaded):
        np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
