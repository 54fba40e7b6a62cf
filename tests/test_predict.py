"""tfbdl.predict: accumulators vs direct NumPy, streaming vs all samples, modes, bad input."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfbdl
from tfbdl import metrics
from tfbdl import prediction as predict_module
from tfbdl.layers import DenseFlipout, DenseReparameterization
from tfbdl.posteriors import MeanFieldNormal


def _numpy_summary(samples):
    """The all-samples computation: predictive quantities from an (S, N, C) array."""
    mean = samples.mean(axis=0)
    entropy = -np.sum(mean * np.log(mean), axis=-1)
    aleatoric = np.mean(-np.sum(samples * np.log(samples), axis=-1), axis=0)
    return {
        "mean": mean,
        "std": samples.std(axis=0),
        "entropy": entropy,
        "aleatoric": aleatoric,
        "mutual_information": entropy - aleatoric,
    }


def _classifier(layer=DenseFlipout, initial_scale=0.3, units=3, activation="softmax", seed=0):
    posterior = MeanFieldNormal(initial_scale=initial_scale)
    return keras.Sequential(
        [
            keras.Input((2,)),
            layer(16, activation="tanh", posterior=posterior, seed=seed),
            layer(units, activation=activation, posterior=posterior, seed=seed + 1),
        ]
    )


X = np.random.default_rng(0).normal(size=(70, 2)).astype("float32")


def test_accumulators_on_hand_made_samples_equal_numpy():
    rng = np.random.default_rng(0)
    samples = rng.dirichlet([1.0, 2.0, 3.0], size=(7, 5)).astype("float32")  # (S=7, N=5, C=3)
    state = predict_module.initial_state(tf.constant(samples[0]), True)
    for sample in samples[1:]:
        state = predict_module.update_state(state, tf.constant(sample), True)
    summary = predict_module.summarize_state(state, True)
    for name, expected in _numpy_summary(samples.astype("float64")).items():
        np.testing.assert_allclose(summary[name], expected, atol=2e-6, err_msg=name)

    values = rng.normal(3.0, 2.0, size=(9, 4, 2)).astype("float32")  # regression
    state = predict_module.initial_state(tf.constant(values[0]), False)
    for value in values[1:]:
        state = predict_module.update_state(state, tf.constant(value), False)
    summary = predict_module.summarize_state(state, False)
    assert set(summary) == {"mean", "std"}
    np.testing.assert_allclose(summary["mean"], values.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(summary["std"], values.std(axis=0), atol=1e-5)


@pytest.mark.parametrize("layer", [DenseFlipout, DenseReparameterization])
def test_streaming_summary_equals_all_samples(layer):
    model = _classifier(layer)
    # 70 examples in batches of 32: the last batch is smaller.
    result = tfbdl.predict(
        model, X, num_samples=25, batch_size=32, return_samples=True, progress=False
    )
    assert result.samples.shape == (25, 70, 3)
    for name, expected in _numpy_summary(result.samples.astype("float64")).items():
        np.testing.assert_allclose(getattr(result, name), expected, atol=3e-6, err_msg=name)
    np.testing.assert_array_equal(result.predicted_class, result.mean.argmax(axis=1))
    # Each pass draws fresh weights (also for reparameterization, one sample per batch).
    assert np.abs(result.samples[0] - result.samples[1]).max() > 1e-3
    assert result.mutual_information.min() > 0.0
    without = tfbdl.predict(model, X, num_samples=25, batch_size=32, progress=False)
    assert without.samples is None and without.mean.shape == (70, 3)


def test_mutual_information_vanishes_as_sigma_goes_to_zero():
    tiny = tfbdl.predict(_classifier(initial_scale=1e-7), X, num_samples=20, progress=False)
    broad = tfbdl.predict(_classifier(initial_scale=0.5), X, num_samples=20, progress=False)
    assert tiny.mutual_information.max() < 1e-5 and tiny.std.max() < 1e-5
    assert broad.mutual_information.mean() > 1e-3


def test_zero_samples_is_the_posterior_mean_pass():
    model = _classifier()
    with tfbdl.posterior_mean(model):
        expected = model.predict(X, verbose=0)
    result = tfbdl.predict(model, X, num_samples=0, progress=False)
    np.testing.assert_allclose(result.mean, expected, atol=1e-6)
    assert result.std.max() == 0.0 and result.mutual_information.max() == 0.0
    np.testing.assert_allclose(
        result.entropy, -np.sum(expected * np.log(expected), axis=1), atol=1e-5
    )
    # The model is stochastic again afterwards.
    again = tfbdl.predict(model, X, num_samples=5, progress=False)
    assert again.std.max() > 0.0


def test_binary_sigmoid_logits_and_regression_outputs():
    sigmoid = _classifier(units=1, activation="sigmoid")
    binary = tfbdl.predict(sigmoid, X, num_samples=0, progress=False)
    with tfbdl.posterior_mean(sigmoid):
        p = sigmoid.predict(X, verbose=0)[:, 0]
    np.testing.assert_allclose(binary.mean, np.stack([1 - p, p], axis=1), atol=1e-6)

    linear = _classifier(activation=None)
    with pytest.raises(ValueError, match="output='logits' or output='regression'"):
        tfbdl.predict(linear, X, num_samples=2, progress=False)
    logits = tfbdl.predict(linear, X, num_samples=0, output="logits", progress=False)
    with tfbdl.posterior_mean(linear):
        expected = keras.ops.convert_to_numpy(keras.ops.softmax(linear.predict(X, verbose=0)))
    np.testing.assert_allclose(logits.mean, expected, atol=1e-6)

    regression = tfbdl.predict(
        linear, X, num_samples=30, output="regression", return_samples=True, progress=False
    )
    assert regression.entropy is None and regression.predicted_class is None
    np.testing.assert_allclose(regression.mean, regression.samples.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(regression.std, regression.samples.std(axis=0), atol=1e-5)


def test_dataset_input_equals_array_input():
    model = _classifier()
    labels = np.zeros(len(X), dtype="int64")
    dataset = tf.data.Dataset.from_tensor_slices((X, labels)).batch(16)
    from_dataset = tfbdl.predict(model, dataset, num_samples=0, progress=True)
    from_array = tfbdl.predict(model, X, num_samples=0, progress=False)
    np.testing.assert_allclose(from_dataset.mean, from_array.mean, atol=1e-6)


def test_repeated_calls_do_not_retrace_and_xla_agrees():
    model = _classifier()
    for _ in range(3):
        tfbdl.predict(model, X, num_samples=4, batch_size=32, progress=False)
    (step,) = predict_module._STEPS[model].values()
    traces = step.experimental_get_tracing_count()
    tfbdl.predict(model, X, num_samples=4, batch_size=32, progress=False)
    assert step.experimental_get_tracing_count() == traces
    plain = tfbdl.predict(model, X, num_samples=0, progress=False)
    xla = tfbdl.predict(model, X, num_samples=0, progress=False, jit_compile=True)
    np.testing.assert_allclose(xla.mean, plain.mean, atol=1e-5)
    xla_stochastic = tfbdl.predict(model, X, num_samples=4, progress=False, jit_compile=True)
    assert xla_stochastic.mutual_information.max() > 0.0


def test_output_detected_through_nested_models_and_softmax_layers():
    head = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    inputs = keras.Input((2,))
    nested = keras.Model(inputs, head(DenseFlipout(4)(inputs)))
    softmax_layer = keras.Sequential([keras.Input((2,)), DenseFlipout(3), keras.layers.Softmax()])
    for model in (nested, softmax_layer):
        assert predict_module.detect_output(model) == "probabilities"
        assert tfbdl.predict(model, X, num_samples=2, progress=False).mean.shape == (70, 3)


def test_ood_auroc_from_a_model_and_inputs():
    model = _classifier(initial_scale=0.5)
    far = X * 20.0
    inside = tfbdl.predict(model, X, num_samples=0, progress=False)
    outside = tfbdl.predict(model, far, num_samples=0, progress=False)
    expected = metrics.auroc(outside.entropy, inside.entropy)
    value = metrics.ood_auroc(X, far, score="entropy", model=model, num_samples=0, progress=False)
    assert value == pytest.approx(expected)


def test_bad_input_names_the_argument():
    model = _classifier()
    with pytest.raises(ValueError, match="`model` must be a Keras model"):
        tfbdl.predict(None, X)
    with pytest.raises(ValueError, match="`num_samples`.*-1"):
        tfbdl.predict(model, X, num_samples=-1)
    with pytest.raises(ValueError, match="`batch_size`"):
        tfbdl.predict(model, X, batch_size=0)
    with pytest.raises(ValueError, match="`x` has shape \\(70, 3\\)"):
        tfbdl.predict(model, np.zeros((70, 3)))
    with pytest.raises(ValueError, match="`x` has shape"):
        tfbdl.predict(
            model, tf.data.Dataset.from_tensor_slices(np.zeros((4, 5), "float32")).batch(2)
        )
    with pytest.raises(ValueError, match="`output`"):
        tfbdl.predict(model, X, output="probs")
    multilabel = _classifier(activation="sigmoid")
    with pytest.raises(ValueError, match="do not sum to 1"):
        tfbdl.predict(multilabel, X, num_samples=2, progress=False)


# ---------------------------------------------------------------------- reliability


def test_probabilities_are_checked_in_every_batch_not_only_the_first():
    identity = keras.Sequential([keras.Input((2,)), keras.layers.Identity()])
    x = np.array([[0.5, 0.5], [0.25, 0.75], [0.9, 0.9], [0.5, 0.5]], "float32")
    with pytest.raises(ValueError, match="do not sum to 1.*at row 2 of `x`"):
        tfbdl.predict(identity, x, output="probabilities", batch_size=2, progress=False)


def test_non_finite_inputs_and_predictions_name_the_rows():
    model = _classifier()
    x = X.copy()
    x[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"`x` has NaN or infinite values in 1 example\(s\) \(rows \[3\]"):
        tfbdl.predict(model, x, num_samples=2, progress=False)
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(2)  # no up-front check: the outputs are
    with pytest.raises(ValueError, match=r"predictions are NaN or infinite.*rows \[3\]"):
        tfbdl.predict(model, dataset, num_samples=2, progress=False)


def test_an_infinite_dataset_needs_steps():
    model = _classifier()
    dataset = tf.data.Dataset.from_tensor_slices(X).batch(10).repeat()
    with pytest.raises(ValueError, match="infinite tf.data.Dataset.*steps="):
        tfbdl.predict(model, dataset, num_samples=2, progress=False)
    result = tfbdl.predict(model, dataset, num_samples=2, steps=9, progress=False)
    assert result.mean.shape == (90, 3)
    with pytest.raises(ValueError, match="`steps`"):
        tfbdl.predict(model, dataset, steps=0)
    assert tfbdl.predict(model, X, num_samples=2, batch_size=20, steps=2, progress=False).mean.shape == (40, 3)


def test_a_two_input_model_takes_a_list_a_dict_or_a_dataset():
    first, second = keras.Input((2,), name="first"), keras.Input((3,), name="second")
    joined = keras.layers.Concatenate()([first, second])
    outputs = DenseFlipout(4, activation="softmax", seed=0)(joined)
    model = keras.Model([first, second], outputs)
    x1, x2 = X[:20], np.random.default_rng(1).normal(size=(20, 3)).astype("float32")
    expected = tfbdl.predict(model, [x1, x2], num_samples=0, batch_size=8, progress=False).mean
    with tfbdl.posterior_mean(model):
        np.testing.assert_allclose(expected, model([x1, x2]).numpy(), rtol=1e-5, atol=1e-6)
    by_name = tfbdl.predict(model, {"second": x2, "first": x1}, num_samples=0, progress=False)
    np.testing.assert_allclose(by_name.mean, expected, rtol=1e-6)
    dataset = tf.data.Dataset.from_tensor_slices(((x1, x2),)).batch(8)
    np.testing.assert_allclose(
        tfbdl.predict(model, dataset, num_samples=0, progress=False).mean, expected, rtol=1e-6
    )
    with pytest.raises(ValueError, match=r"`x\[1\]` has shape \(20, 2\)"):
        tfbdl.predict(model, [x1, x1], progress=False)
    with pytest.raises(ValueError, match="same number of examples"):
        tfbdl.predict(model, [x1, x2[:5]], progress=False)
    with pytest.raises(ValueError, match="inputs named"):
        tfbdl.predict(model, {"first": x1, "other": x2}, progress=False)


def test_a_linear_output_compiled_with_from_logits_is_read_as_logits():
    model = _classifier(activation=None)
    with pytest.raises(ValueError, match="pass output='logits'"):
        predict_module.detect_output(model)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert predict_module.detect_output(model) == "logits"
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy())
    with pytest.raises(ValueError, match="pass output='logits'"):
        predict_module.detect_output(model)


def test_bfloat16_softmax_outputs_are_accepted_within_their_rounding(mixed_bfloat16):
    model = keras.Sequential([keras.Input((2,)), DenseFlipout(10, seed=0), keras.layers.Softmax()])
    x = np.random.default_rng(0).normal(scale=3.0, size=(200, 2)).astype("float32")
    sums = keras.ops.convert_to_numpy(keras.ops.cast(model(x), "float32")).sum(axis=-1)
    assert np.abs(sums - 1.0).max() > 1e-3  # the float32 tolerance would refuse these rows
    result = tfbdl.predict(model, x, num_samples=3, progress=False)
    assert result.mean.shape == (200, 10)
