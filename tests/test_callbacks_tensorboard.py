"""PosteriorMonitor and keras.callbacks.TensorBoard event files, read back with TensorBoard itself."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import keras
import matplotlib.pyplot as plt
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import tfbdl
from tfbdl.callbacks import PosteriorMonitor
from training_support import moons

EPOCHS = 3


def _hierarchical_and_spike_model():
    return keras.Sequential(
        [
            keras.Input((2,)),
            tfbdl.layers.DenseFlipout(8, activation="tanh", prior=tfbdl.priors.HalfNormalHierarchical(1.0),
                                      name="hidden", seed=0),
            tfbdl.layers.DenseFlipout(1, activation="sigmoid", prior=tfbdl.priors.SpikeAndSlab(),
                                      bias_prior=tfbdl.priors.Gaussian(), name="output", seed=1),
        ]
    )


def _scatter_figure(model):
    figure, axes = plt.subplots(figsize=(2, 2))
    axes.plot(model.layers[0].kernel.numpy().ravel(), "o")
    return figure


def _read(run_dir):
    """{tag: (plugin name, [(step, value as array)])} via TensorBoard's EventAccumulator."""
    accumulator = EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    accumulator.Reload()
    events = {}
    for tag in accumulator.Tags()["tensors"]:
        plugin = accumulator.SummaryMetadata(tag).plugin_data.plugin_name
        events[tag] = (plugin, [(e.step, tf.make_ndarray(e.tensor_proto)) for e in accumulator.Tensors(tag)])
    return events


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    """One fit writing PosteriorMonitor and keras TensorBoard logs to the same log_dir."""
    keras.utils.set_random_seed(0)
    log_dir = tmp_path_factory.mktemp("tb")
    (x, y), (xt, yt) = moons()
    model = _hierarchical_and_spike_model()
    tfbdl.set_kl_weight(model, num_examples=len(x))
    model.compile(keras.optimizers.Adam(0.05), "binary_crossentropy")
    model.fit(
        x, y, batch_size=50, epochs=EPOCHS, validation_data=(xt, yt), verbose=0,
        callbacks=[
            PosteriorMonitor(log_dir, histogram_freq=2, image_fn=_scatter_figure, image_freq=1),
            keras.callbacks.TensorBoard(log_dir, histogram_freq=1, write_graph=True),
        ],
    )
    yield log_dir, model
    keras.backend.clear_session()


def test_posterior_monitor_writes_scalars_histograms_and_image(logged_run):
    log_dir, model = logged_run
    events = _read(log_dir / "posterior")
    for layer in ("hidden", "output"):
        for quantity in ("kl", "sigma_mean", "snr_below_1"):
            plugin, values = events[f"{quantity}/{layer}"]
            assert plugin == "scalars" and [step for step, _ in values] == list(range(EPOCHS))
        for quantity in ("mu", "sigma", "snr"):
            plugin, values = events[f"{quantity}/{layer}"]
            assert plugin == "histograms" and [step for step, _ in values] == [0, 2]  # histogram_freq=2
    assert events["tau/hidden"][0] == "scalars"
    assert "tau/output" not in events  # SpikeAndSlab learns no scale
    plugin, images = events["posterior_predictive"]
    assert plugin == "images" and len(images) == EPOCHS


def test_posterior_monitor_values_match_the_model(logged_run):
    log_dir, model = logged_run
    events = _read(log_dir / "posterior")
    hidden, output = tfbdl.bayesian_layers(model)
    last = EPOCHS - 1
    value = {tag: dict((step, v) for step, v in steps)[last] for tag, (_, steps) in events.items()}
    # Closed-form KL (hierarchical prior) and tau are deterministic functions of the variables.
    np.testing.assert_allclose(value["kl/hidden"], float(hidden.kl_divergence()), rtol=1e-5)
    np.testing.assert_allclose(value["tau/hidden"], float(hidden.kernel_prior_term.tau), rtol=1e-6)
    for layer in (hidden, output):
        posteriors = [p for p in (layer.kernel_posterior, layer.bias_posterior) if p is not None]
        mu = np.concatenate([p.loc.numpy().ravel() for p in posteriors])
        sigma = np.concatenate([np.logaddexp(0, p.untransformed_scale.numpy()).ravel() for p in posteriors])
        np.testing.assert_allclose(value[f"sigma_mean/{layer.name}"], sigma.mean(), rtol=1e-5)
        np.testing.assert_allclose(value[f"snr_below_1/{layer.name}"], np.mean(np.abs(mu) / sigma < 1))
        # The last histogram (step 2) of mu spans the posterior means of every variational
        # weight of the layer; rows are (left edge, right edge, count).
        histogram = dict(events[f"mu/{layer.name}"][1])[2]
        assert histogram[:, 2].sum() == mu.size
        np.testing.assert_allclose([histogram[0, 0], histogram[-1, 1]], [mu.min(), mu.max()], rtol=1e-6)


def test_keras_tensorboard_works_with_bayesian_layers(logged_run):
    log_dir, _ = logged_run
    train = _read(log_dir / "train")
    validation = _read(log_dir / "validation")
    for tag in ("epoch_loss", "epoch_nll", "epoch_kl"):
        assert train[tag][0] == "scalars" and len(train[tag][1]) == EPOCHS
        assert validation[tag][0] == "scalars" and len(validation[tag][1]) == EPOCHS
    for step in range(EPOCHS):
        loss, nll, kl = (dict(train[t][1])[step] for t in ("epoch_loss", "epoch_nll", "epoch_kl"))
        np.testing.assert_allclose(loss, nll + kl, rtol=1e-5)
    weight_histograms = [t for t, (plugin, _) in train.items() if plugin == "histograms"]
    assert any(t.endswith("hidden/kernel_loc/histogram") for t in weight_histograms)
    assert any(t.endswith("hidden/kernel_untransformed_scale/histogram") for t in weight_histograms)
    assert train["keras"][0] == "graph_keras_model"  # write_graph=True: the model's graph
    assert json.loads(dict(train["keras"][1])[0].item())["config"]["layers"]


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_tensorboard_server_serves_the_scalar_tags(logged_run):
    log_dir, _ = logged_run
    port = _free_port()
    tensorboard = os.path.join(os.path.dirname(sys.executable), "tensorboard")
    process = subprocess.Popen(
        [tensorboard, "--logdir", str(log_dir), "--host", "127.0.0.1", "--port", str(port),
         "--load_fast", "false", "--reload_interval", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/data/plugin/scalars/tags"
    tags, deadline = {}, time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            assert process.poll() is None, "tensorboard exited early"
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    tags = json.load(response)
            except (urllib.error.URLError, ConnectionError):
                pass
            if "kl/hidden" in tags.get("posterior", {}) and "epoch_nll" in tags.get("train", {}):
                break
            time.sleep(1)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert {"kl/hidden", "sigma_mean/hidden", "snr_below_1/output", "tau/hidden"} <= set(tags["posterior"])
    assert {"epoch_loss", "epoch_nll", "epoch_kl"} <= set(tags["train"]) & set(tags["validation"])


def test_per_unit_tau_is_logged_as_mean_and_histogram(tmp_path):
    (x, y), _ = moons()
    model = keras.Sequential([
        keras.Input((2,)),
        tfbdl.layers.DenseFlipout(4, activation="tanh", name="hidden",
                                  prior=tfbdl.priors.HalfNormalHierarchical(1.0, per_unit=True)),
        tfbdl.layers.DenseFlipout(1, activation="sigmoid", name="output"),
    ])
    tfbdl.set_kl_weight(model, num_examples=len(x))
    model.compile("adam", "binary_crossentropy")
    model.fit(x, y, epochs=1, verbose=0, callbacks=[PosteriorMonitor(tmp_path)])
    events = _read(tmp_path / "posterior")
    tau = model.get_layer("hidden").kernel_prior_term.tau.numpy()
    assert tau.shape == (4,)
    np.testing.assert_allclose(events["tau/hidden"][1][0][1], tau.mean(), rtol=1e-6)
    plugin, histograms = events["tau/hidden/per_unit"]
    assert plugin == "histograms" and histograms[0][1][:, 2].sum() == 4


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(log_dir=3), "log_dir"),
        (dict(log_dir="d", histogram_freq=-1), "histogram_freq"),
        (dict(log_dir="d", image_fn="plot"), "image_fn"),
        (dict(log_dir="d", image_freq=0), "image_freq"),
        (dict(log_dir="d", snr_threshold=0), "snr_threshold"),
    ],
)
def test_posterior_monitor_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PosteriorMonitor(**kwargs)
