"""Reliability: no silently wrong number, clear errors, nothing saved is lost.

Each test guards a defect found by trying tfbdl as a user would (see the issue
"Reliability"); each fails without its fix.
"""

import keras
import numpy as np
import pytest

import tensorflow_probability as tfp

import tfbdl
from training_support import gaussian_kl_from_variables

L = tfbdl.layers
tfd = tfp.distributions


def test_a_layer_called_twice_counts_its_kl_once():
    shared = L.DenseFlipout(3, activation="tanh", seed=1)
    left, right = keras.Input((2,)), keras.Input((2,))
    joined = keras.layers.Concatenate()([shared(left), shared(right)])
    model = keras.Model([left, right], L.DenseFlipout(1, seed=2)(joined))
    tfbdl.set_kl_weight(model, num_examples=10)
    x = np.ones((4, 2), "float32")
    model([x, x], training=True)
    expected = sum(gaussian_kl_from_variables(layer) for layer in tfbdl.bayesian_layers(model)) / 10
    np.testing.assert_allclose(float(keras.ops.sum(model.losses)), expected, rtol=1e-5)
    np.testing.assert_allclose(float(tfbdl.kl_loss(model)), expected, rtol=1e-5)


def test_local_reparameterization_under_float16_stays_finite_for_large_inputs():
    layer = L.DenseLocalReparameterization(4, dtype="mixed_float16", seed=0)
    x = np.full((8, 16), 300.0, "float32")  # x^2 = 90 000 > float16's 65 504
    outputs = layer(x, training=True)
    assert outputs.dtype == "float16"
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(outputs)))
    # The sampled pre-activations spread as N(x mu, x^2 sigma^2) says: sigma = 0.01 here.
    spread = np.std(keras.ops.convert_to_numpy(outputs) - keras.ops.convert_to_numpy(x @ layer.kernel.numpy()))
    assert 0.5 * 300 * 0.01 * 4 < spread < 2.0 * 300 * 0.01 * 4  # sqrt(16) inputs of 300 x 0.01


@pytest.mark.parametrize("make, argument", [
    (lambda: tfbdl.set_kl_weight(keras.Sequential([keras.Input((2,)), L.DenseFlipout(1)]), num_examples="1000"),
     "num_examples"),
    (lambda: tfbdl.set_kl_weight(keras.Sequential([keras.Input((2,)), L.DenseFlipout(1)]), weight="0.1"), "weight"),
    (lambda: tfbdl.priors.HalfNormalHierarchical(per_unit="False"), "per_unit"),
    (lambda: tfbdl.priors.HalfNormalHierarchical(scale="1.0"), "scale"),
    (lambda: tfbdl.priors.SpikeAndSlab(pi="0.5"), "pi"),
    (lambda: tfbdl.priors.SpikeAndSlab(spike_scale=1e-50), "spike_scale"),
    (lambda: tfbdl.posteriors.MeanFieldNormal(1e-50), "initial_scale"),
    (lambda: tfbdl.posteriors.MeanFieldNormal("0.1"), "initial_scale"),
    (lambda: tfbdl.priors.Gaussian(scale=1e-30), "scale"),
    (lambda: L.DenseFlipout(2, dtype="float64"), "dtype"),
    (lambda: L.DenseFlipout(2, prior=tfd.Normal(0.0, -1.0)), "Normal"),
])
def test_bad_arguments_get_a_value_error_naming_them(make, argument):
    with pytest.raises(ValueError, match=argument):
        make()


def test_an_unsavable_prior_warns_when_made_and_a_failed_save_keeps_the_old_file(tmp_path):
    path = tmp_path / "m.keras"
    good = keras.Sequential([keras.Input((2,)), L.DenseFlipout(1)])
    tfbdl.save_model(good, path)
    saved = path.read_bytes()
    with pytest.warns(UserWarning, match="cannot be saved.*register_keras_serializable"):
        bad = keras.Sequential([keras.Input((2,)),
                                L.DenseFlipout(1, prior=lambda shape, dtype: tfd.Normal(np.zeros(shape, "float32"), 2.0))])
    with pytest.raises(ValueError, match="cannot save this prior"):
        tfbdl.save_model(bad, path)
    assert path.read_bytes() == saved
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.keras"]  # no temporary left behind
    keras.saving.load_model(path)
    # Keras' own model.save fails with the same clear message (after opening its target:
    # that is why tfbdl.save_model exists).
    with pytest.raises(ValueError, match="cannot save this prior"):
        bad.save(tmp_path / "other.keras")


def test_save_model_replaces_the_file_only_when_the_write_succeeded(tmp_path, monkeypatch):
    path = tmp_path / "m.keras"
    model = keras.Sequential([keras.Input((2,)), L.DenseFlipout(1)])
    tfbdl.save_model(model, path)
    saved = path.read_bytes()

    def disk_full(self, filepath, **kwargs):
        with open(filepath, "wb") as f:
            f.write(b"PK partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(keras.Model, "save", disk_full)
    with pytest.raises(OSError, match="No space"):
        tfbdl.save_model(model, path)
    assert path.read_bytes() == saved and len(list(tmp_path.iterdir())) == 1


def test_atomic_writes_keep_the_permissions_a_plain_write_gives(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    fresh = tfbdl.saving.atomic_path(tmp_path / "fresh.txt", lambda t: open(t, "w").close())
    assert fresh.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777  # not mkstemp's 0600
    plain.chmod(0o640)
    tfbdl.saving.atomic_path(plain, lambda t: open(t, "w").close())
    assert plain.stat().st_mode & 0o777 == 0o640  # an existing file keeps its mode


def test_a_plot_that_fails_to_save_keeps_the_older_figure(tmp_path, monkeypatch):
    import matplotlib.figure

    path = tmp_path / "reliability.png"
    y, probs = np.array([0, 1, 1]), np.array([[0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
    tfbdl.plots.reliability_diagram(y, probs, path=path)
    saved = path.read_bytes()

    def disk_full(self, filename, **kwargs):
        with open(filename, "wb") as f:
            f.write(b"\x89PNG partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", disk_full)
    with pytest.raises(OSError, match="No space"):
        tfbdl.plots.reliability_diagram(y, probs, path=path)
    assert path.read_bytes() == saved and len(list(tmp_path.iterdir())) == 1


def test_a_saved_tfp_prior_keeps_validate_args(tmp_path):
    layer = L.DenseFlipout(2, prior=tfd.Laplace(0.0, 0.5, validate_args=True))
    restored = L.DenseFlipout.from_config(layer.get_config())
    assert restored.prior.distribution.validate_args
