"""tfbdl.convert.to_bayesian and tfbdl.prune."""

import keras
import numpy as np
import pytest

import tfbdl
from tfbdl import convert, pruning
from tfbdl.priors import Informed

RNG = np.random.default_rng(0)
X_FLAT = RNG.normal(size=(64, 6)).astype("float32")
X_IMAGE = RNG.normal(size=(32, 8, 8, 1)).astype("float32")
Y = RNG.integers(0, 3, size=64)


def _trained(model, x, y, epochs=2):
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=epochs, batch_size=16, verbose=0)
    return model


def _mlp():
    return _trained(
        keras.Sequential(
            [
                keras.Input((6,)),
                keras.layers.Dense(16, activation="relu"),
                keras.layers.Dropout(0.2),
                keras.layers.Dense(3, activation="softmax"),
            ]
        ),
        X_FLAT,
        Y,
    )


def _cnn_sequential():
    return _trained(
        keras.Sequential(
            [
                keras.Input((8, 8, 1)),
                keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
                keras.layers.BatchNormalization(),
                keras.layers.MaxPooling2D(),
                keras.layers.Flatten(),
                keras.layers.Dropout(0.3),
                keras.layers.Dense(3, activation="softmax"),
            ]
        ),
        X_IMAGE,
        Y[:32],
    )


def _cnn_functional_nested():
    head = keras.Sequential(
        [
            keras.Input((16,)),
            keras.layers.Dense(8, activation="tanh"),
            keras.layers.Dense(3, activation="softmax"),
        ],
        name="head",
    )
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.AveragePooling2D(2)(h)
    h = keras.layers.Conv2D(4, 3, activation="relu")(h)  # 6x6 -> 3x3 -> 1x1
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(16, activation="relu")(h)
    return _trained(keras.Model(inputs, head(h)), X_IMAGE, Y[:32])


def _layers(model):
    """All layers, nested models' included, without the input layers (clones rename those)."""
    return [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if not isinstance(layer, keras.layers.InputLayer)
    ]


MODELS = {
    "mlp": (_mlp, X_FLAT),
    "cnn_sequential": (_cnn_sequential, X_IMAGE),
    "cnn_functional_nested": (_cnn_functional_nested, X_IMAGE),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_posterior_mean_outputs_equal_the_original(name):
    build, x = MODELS[name]
    original = build()
    expected = original.predict(x, verbose=0)
    converted, report = convert.to_bayesian(original, verbose=False, return_report=True)
    with tfbdl.posterior_mean(converted):
        got = converted.predict(x, verbose=0)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)  # float32 round-off

    original_layers, new_layers = _layers(original), _layers(converted)
    assert len(original_layers) == len(new_layers)
    replaced = {r.name for r in report}
    for old, new in zip(original_layers, new_layers):
        assert old.name == new.name
        if isinstance(old, (keras.layers.Dense, keras.layers.Conv2D)):
            assert old.name in replaced
            assert type(new).__name__ == type(old).__name__ + "Flipout"
            np.testing.assert_array_equal(new.kernel.numpy(), old.kernel.numpy())
        elif not isinstance(old, keras.Model):
            assert type(new) is type(old)  # BatchNormalization, Dropout, Flatten, pooling kept
            for a, b in zip(new.get_weights(), old.get_weights()):
                np.testing.assert_array_equal(a, b)
    assert len(replaced) == sum(
        isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D)) for layer in original_layers
    )
    # The converted model is stochastic outside posterior_mean; the original is untouched.
    assert np.abs(converted.predict(x, verbose=0) - expected).max() > 0.0
    np.testing.assert_array_equal(original.predict(x, verbose=0), expected)


@pytest.mark.parametrize(
    "conv, shape",
    [
        (keras.layers.Conv1D(3, 3, padding="causal", dilation_rate=2), (10, 2)),
        (keras.layers.Conv3D(2, 2, strides=2), (4, 4, 4, 1)),
    ],
)
def test_conv1d_and_conv3d_outputs_are_kept(conv, shape):
    original = keras.Sequential(
        [keras.Input(shape), conv, keras.layers.Flatten(), keras.layers.Dense(2)]
    )
    x = RNG.normal(size=(5,) + shape).astype("float32")
    converted = convert.to_bayesian(original, estimator="reparameterization", verbose=False)
    assert [type(layer).__name__ for layer in tfbdl.bayesian_layers(converted)] == [
        type(conv).__name__ + "Reparameterization",
        "DenseReparameterization",
    ]
    with tfbdl.posterior_mean(converted):
        np.testing.assert_allclose(converted(x), original(x), rtol=1e-5, atol=1e-6)


def test_converted_model_trains_and_round_trips_through_keras_file(tmp_path):
    converted = convert.to_bayesian(
        _cnn_functional_nested(), estimator="reparameterization", informed=True, verbose=False
    )
    tfbdl.set_kl_weight(converted, num_examples=32)
    converted.compile("adam", "sparse_categorical_crossentropy")
    before = [w.numpy().copy() for w in converted.trainable_weights]
    history = converted.fit(X_IMAGE, Y[:32], epochs=2, batch_size=16, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert any(np.abs(w.numpy() - b).max() > 0 for w, b in zip(converted.trainable_weights, before))

    path = tmp_path / "converted.keras"
    converted.save(path)
    loaded = keras.saving.load_model(path)
    with tfbdl.posterior_mean(converted), tfbdl.posterior_mean(loaded):
        np.testing.assert_allclose(
            loaded.predict(X_IMAGE, verbose=0),
            converted.predict(X_IMAGE, verbose=0),
            rtol=1e-6,
            atol=1e-7,
        )
    assert {type(layer).__name__ for layer in tfbdl.bayesian_layers(loaded)} == {
        "Conv2DReparameterization",
        "DenseReparameterization",
    }


def test_informed_priors_are_centred_at_the_trained_kernels():
    original = _mlp()
    converted = convert.to_bayesian(original, informed=True, informed_scale=0.05, verbose=False)
    dense = [layer for layer in original.layers if isinstance(layer, keras.layers.Dense)]
    for old, new in zip(dense, tfbdl.bayesian_layers(converted)):
        assert isinstance(new.prior, Informed)
        np.testing.assert_array_equal(new.prior.loc, old.kernel.numpy())
        np.testing.assert_allclose(new.prior.scale, 0.05)


def test_layer_types_selects_what_is_replaced(capsys):
    original = _cnn_sequential()
    converted = convert.to_bayesian(original, layer_types=("Conv2D",))
    assert [type(layer).__name__ for layer in tfbdl.bayesian_layers(converted)] == ["Conv2DFlipout"]
    assert isinstance(converted.layers[-1], keras.layers.Dense)
    printed = capsys.readouterr().out
    assert "Conv2D -> Conv2DFlipout" in printed and "Dense x1" in printed


def test_bad_arguments_name_the_argument():
    original = _mlp()
    with pytest.raises(ValueError, match="`layer_types`.*'LSTM'"):
        convert.to_bayesian(original, layer_types=("Dense", "LSTM"))
    with pytest.raises(ValueError, match="`estimator`"):
        convert.to_bayesian(original, estimator="local")
    with pytest.raises(ValueError, match="`prior` or `informed=True`"):
        convert.to_bayesian(original, informed=True, prior=tfbdl.priors.Gaussian(1.0))

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="`model` must be a Keras Sequential or functional"):
        convert.to_bayesian(Subclassed())


def _bayesian_mlp(use_bias=True):
    return keras.Sequential(
        [
            keras.Input((6,)),
            tfbdl.layers.DenseFlipout(
                32,
                activation="tanh",
                use_bias=use_bias,
                posterior=tfbdl.posteriors.MeanFieldNormal(0.05),
            ),
            tfbdl.layers.DenseReparameterization(
                3, use_bias=use_bias, bias_prior=tfbdl.priors.Gaussian(1.0) if use_bias else None
            ),
        ]
    )


def _means(model):
    return np.concatenate(
        [
            p.loc.numpy().ravel()
            for layer in tfbdl.bayesian_layers(model)
            for p in (layer.kernel_posterior, layer.bias_posterior)
            if p is not None
        ]
    )


def test_prune_fraction_matches_the_zeroed_weights():
    model = _bayesian_mlp()
    means = _means(model)
    assert tfbdl.prune(model, 0.0) == 0.0
    np.testing.assert_array_equal(_means(model), means)

    snr = pruning.signal_to_noise(model)
    threshold = float(np.median(snr))
    fraction = tfbdl.prune(model, threshold)
    zeroed = _means(model) == 0.0
    assert fraction == pytest.approx(zeroed.mean())
    assert fraction == pytest.approx(np.mean(snr < threshold))
    np.testing.assert_array_equal(_means(model)[~zeroed], means[~zeroed])  # the rest untouched

    assert tfbdl.prune(model, 1e30) == 1.0
    assert np.all(_means(model) == 0.0)


def test_pruned_weights_are_zero_in_stochastic_passes_too():
    model = _bayesian_mlp(use_bias=False)
    tfbdl.prune(model, np.inf)
    np.testing.assert_array_equal(model(X_FLAT, training=False).numpy(), 0.0)


def test_prune_bad_threshold():
    with pytest.raises(ValueError, match="`snr_threshold`.*-1"):
        tfbdl.prune(_bayesian_mlp(), -1)
    with pytest.raises(ValueError, match="no tfbdl Bayesian layers"):
        tfbdl.prune(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]), 1.0)
