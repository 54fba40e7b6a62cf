"""tfbdl.metrics: hand-computed cases, sklearn agreement, Keras metric classes, bad input."""

import types

import keras
import ml_dtypes
import numpy as np
import pytest
import sklearn.metrics
import tensorflow as tf

import tfbdl
from tfbdl import metrics

# Five examples, confidences 0.9, 0.7, 0.65, 0.55, 0.95 (none on a bin edge of 5 bins).
PROBS = np.array([[0.9, 0.1], [0.7, 0.3], [0.35, 0.65], [0.45, 0.55], [0.05, 0.95]])
LABELS = np.array([0, 1, 1, 0, 1])  # right, wrong, right, wrong, right


def test_accuracy_nll_brier_by_hand():
    assert metrics.accuracy(LABELS, PROBS) == pytest.approx(3 / 5)
    p_true = np.array([0.9, 0.3, 0.65, 0.45, 0.95])
    assert metrics.nll(LABELS, PROBS) == pytest.approx(-np.mean(np.log(p_true)))
    # Brier per example: 2 * (1 - p_true)^2 for two classes.
    assert metrics.brier(LABELS, PROBS) == pytest.approx(np.mean(2 * (1 - p_true) ** 2))


def test_reliability_and_ece_by_hand():
    bins = metrics.reliability(LABELS, PROBS, num_bins=5)
    np.testing.assert_allclose(bins.edges, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    np.testing.assert_array_equal(bins.count, [0, 0, 1, 2, 2])
    np.testing.assert_allclose(bins.confidence[2:], [0.55, 0.675, 0.925])
    np.testing.assert_allclose(bins.accuracy[2:], [0.0, 0.5, 1.0])
    assert np.isnan(bins.confidence[:2]).all() and np.isnan(bins.accuracy[:2]).all()
    # ECE = (1 * |0 - 0.55| + 2 * |0.5 - 0.675| + 2 * |1 - 0.925|) / 5 = 1.05 / 5
    assert metrics.expected_calibration_error(LABELS, PROBS, num_bins=5) == pytest.approx(0.21)


def test_binary_probabilities_of_class_one_equal_two_columns():
    for function in (
        metrics.accuracy,
        metrics.nll,
        metrics.brier,
        metrics.expected_calibration_error,
    ):
        assert function(LABELS, PROBS[:, 1]) == pytest.approx(function(LABELS, PROBS))


def test_ece_zero_when_confidence_equals_accuracy():
    # Bin (0.6, 0.8]: 4 examples of confidence 0.75, 3 of them right.
    probs = np.array([[0.75, 0.25]] * 4)
    assert metrics.expected_calibration_error([0, 0, 0, 1], probs, num_bins=5) == pytest.approx(0.0)
    assert metrics.expected_calibration_error([0, 1, 1, 1], probs, num_bins=5) == pytest.approx(0.5)


def test_auroc_equals_sklearn():
    rng = np.random.default_rng(0)
    positive = np.round(rng.normal(1.0, 1.0, 200), 1)  # rounding makes ties
    negative = np.round(rng.normal(0.0, 1.0, 300), 1)
    labels = np.r_[np.ones(200), np.zeros(300)]
    expected = sklearn.metrics.roc_auc_score(labels, np.r_[positive, negative])
    assert metrics.auroc(positive, negative) == pytest.approx(expected)
    assert metrics.auroc([2.0, 3.0], [0.0, 1.0]) == 1.0
    assert metrics.auroc([0.0, 1.0], [2.0, 3.0]) == 0.0


def _fake_result(probs, mutual_information):
    probs = np.asarray(probs)
    entropy = -np.sum(probs * np.log(probs), axis=1)
    return types.SimpleNamespace(
        mean=probs,
        entropy=entropy,
        aleatoric=entropy - mutual_information,
        mutual_information=np.asarray(mutual_information),
        predicted_class=probs.argmax(axis=1),
    )


def test_ood_and_misclassification_auroc_use_the_chosen_score():
    inside = _fake_result([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4]], [0.01, 0.02, 0.3])
    outside = _fake_result([[0.5, 0.5], [0.7, 0.3]], [0.2, 0.4])
    # mutual information: out scores 0.2, 0.4 vs in 0.01, 0.02, 0.3 -> 5 of 6 pairs ordered.
    assert metrics.ood_auroc(inside, outside) == pytest.approx(5 / 6)
    # max_prob score 1 - max p: out 0.5, 0.3 vs in 0.1, 0.2, 0.4 -> 5 of 6 pairs ordered.
    assert metrics.ood_auroc(inside, outside, score="max_prob") == pytest.approx(5 / 6)
    # wrong predictions (labels 1, 0, 1 vs predicted 0, 0, 0): examples 0 and 2.
    value = metrics.misclassification_auroc([1, 0, 1], inside, score="entropy")
    assert value == pytest.approx(metrics.auroc(inside.entropy[[0, 2]], inside.entropy[[1]]))


def test_keras_metrics_equal_the_functions():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(64, 4))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = rng.integers(0, 4, size=64)
    ece, nll = metrics.ExpectedCalibrationError(num_bins=10), metrics.NegativeLogLikelihood()
    for part in (slice(0, 40), slice(40, 64)):  # two batches accumulate
        ece.update_state(labels[part], probs[part].astype("float32"))
        nll.update_state(labels[part], probs[part].astype("float32"))
    assert float(ece.result()) == pytest.approx(
        metrics.expected_calibration_error(labels, probs, 10), abs=1e-5
    )
    assert float(nll.result()) == pytest.approx(metrics.nll(labels, probs), rel=1e-5)
    from_logits = metrics.NegativeLogLikelihood(from_logits=True)
    from_logits.update_state(keras.utils.to_categorical(labels, 4), logits.astype("float32"))
    assert float(from_logits.result()) == pytest.approx(metrics.nll(labels, probs), rel=1e-5)
    ece.reset_state()
    assert float(ece.result()) == 0.0


def test_keras_metrics_in_compile_for_a_sigmoid_classifier():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(128, 3)).astype("float32")
    y = (x[:, 0] > 0).astype("float32")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(
        "adam",
        "binary_crossentropy",
        metrics=[metrics.ExpectedCalibrationError(num_bins=5), metrics.NegativeLogLikelihood()],
    )
    history = model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    assert {"ece", "negative_log_likelihood"} <= set(history.history)
    logs = model.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    p = model.predict(x, verbose=0)[:, 0]
    assert logs["ece"] == pytest.approx(
        metrics.expected_calibration_error(y.astype(int), p, 5), abs=1e-5
    )
    assert logs["negative_log_likelihood"] == pytest.approx(metrics.nll(y.astype(int), p), rel=1e-5)
    # binary cross-entropy is the NLL
    assert logs["negative_log_likelihood"] == pytest.approx(logs["loss"], rel=1e-4)


@pytest.mark.parametrize(
    "function",
    [
        metrics.accuracy,
        metrics.nll,
        metrics.brier,
        metrics.expected_calibration_error,
        metrics.reliability,
    ],
)
def test_bad_input_names_the_argument(function):
    with pytest.raises(ValueError, match="`probs`.*sum to 1"):
        function(LABELS, PROBS * 0.8)
    with pytest.raises(ValueError, match="`probs`.*in \\[0, 1\\]"):
        function(LABELS, PROBS * 2 - 0.5)
    with pytest.raises(ValueError, match="`y`.*\\[0, 2\\)"):
        function(LABELS + 1, PROBS)
    with pytest.raises(ValueError, match="`y`.*shape"):
        function(LABELS[:3], PROBS)


def test_bad_num_bins_and_score():
    with pytest.raises(ValueError, match="`num_bins`"):
        metrics.expected_calibration_error(LABELS, PROBS, num_bins=0)
    with pytest.raises(ValueError, match="`score`"):
        metrics.ood_auroc(
            _fake_result(PROBS, np.zeros(5)), _fake_result(PROBS, np.zeros(5)), score="variance"
        )
    with pytest.raises(ValueError, match="`scores_negative`"):
        metrics.auroc([1.0], [])


def test_keras_metrics_beside_the_elbo_terms_of_a_bayesian_model():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(64, 2)).astype("float32")
    y = rng.integers(0, 3, size=64)
    model = keras.Sequential(
        [keras.Input((2,)), tfbdl.layers.DenseFlipout(3, activation="softmax")]
    )
    tfbdl.set_kl_weight(model, num_examples=len(x))
    model.compile(
        "adam",
        "sparse_categorical_crossentropy",
        metrics=[metrics.ExpectedCalibrationError(), metrics.NegativeLogLikelihood()],
    )
    history = model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    assert {"loss", "nll", "kl", "ece", "negative_log_likelihood"} <= set(history.history)
    assert all(np.isfinite(values[-1]) for values in history.history.values())


KERAS_METRICS = [
    (metrics.ExpectedCalibrationError, "ExpectedCalibrationError metric ece"),
    (metrics.NegativeLogLikelihood, "NegativeLogLikelihood metric negative_log_likelihood"),
]
_TEN_CLASS_PROBS = np.full((4, 10), 0.1, dtype="float32")


@pytest.mark.parametrize("metric, owner", KERAS_METRICS)
@pytest.mark.parametrize("bad, low, high", [(10, 0, 10), (-1, -1, 3)])
def test_keras_metric_out_of_range_label_is_a_value_error_eagerly(metric, owner, bad, low, high):
    labels = np.array([0, 3, bad, 2])
    with pytest.raises(ValueError) as raised:
        metric().update_state(labels, _TEN_CLASS_PROBS)
    message = str(raised.value)
    assert message.startswith(owner) and "`y_true`" in message
    assert f"[0, 10) for 10 classes, got labels in [{low}, {high}]" in message


@pytest.mark.parametrize("metric, owner", KERAS_METRICS)
def test_keras_metric_fractional_label_is_refused_but_integral_floats_and_one_hot_work(
    metric, owner
):
    with pytest.raises(ValueError, match=f"^{owner}: `y_true` must hold integer.*0.5"):
        metric().update_state(np.array([0.0, 0.5, 1.0, 2.0], "float32"), _TEN_CLASS_PROBS)
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(16, 10))
    probs = (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)).astype("float32")
    labels = rng.integers(0, 10, size=16)
    values = []
    for y in (labels, labels.astype("float32"), keras.utils.to_categorical(labels, 10)):
        instance = metric()
        instance.update_state(y, probs)
        values.append(float(instance.result()))
    assert values[1] == pytest.approx(values[0]) and values[2] == pytest.approx(values[0])


@pytest.mark.parametrize("metric, owner", KERAS_METRICS)
@pytest.mark.parametrize(
    "labels, expected",
    [
        ([0.0, 3.0, 10.0, 2.0], r"\[0, 10\) for 10 classes, got labels from\] \[0\] \[to\] \[10\]"),
        ([0.0, 0.5, 1.0, 2.0], r"must hold integer class labels.*got the label\] \[0.5\]"),
    ],
)
def test_keras_metric_bad_label_in_a_traced_graph_fails_its_assertion(
    metric, owner, labels, expected
):
    instance = metric()
    update = tf.function(instance.update_state)
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"{owner}: `y_true`.*{expected}"):
        update(tf.constant(labels), tf.constant(_TEN_CLASS_PROBS))


@pytest.mark.parametrize("metric, owner", KERAS_METRICS)
def test_keras_metric_bad_label_under_xla_reads_nan(metric, owner):
    instance = metric()
    update = tf.function(instance.update_state, jit_compile=True)
    update(tf.constant([0.0, 3.0, 10.0, 2.0]), tf.constant(_TEN_CLASS_PROBS))
    assert np.isnan(float(instance.result()))
    instance.reset_state()
    update(tf.constant([0.0, 3.0, 9.0, 2.0]), tf.constant(_TEN_CLASS_PROBS))
    assert np.isfinite(float(instance.result()))


def test_probability_sum_tolerance_follows_the_dtype():
    for dtype, expected in [
        ("float32", 1e-3), (np.dtype("float64"), 1e-3), (tf.float32, 1e-3),
        ("float16", 1e-2), (np.dtype("float16"), 1e-2), (tf.float16, 1e-2),
        ("bfloat16", 2e-2), (np.dtype(ml_dtypes.bfloat16), 2e-2), (tf.bfloat16, 2e-2),
    ]:
        assert metrics.probability_sum_tolerance(dtype) == expected, dtype


def test_functional_metrics_accept_bfloat16_softmax_outputs(mixed_bfloat16):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(10, activation="softmax")])
    x = np.random.default_rng(5).normal(size=(256, 4)).astype("float32") * 3
    y = np.random.default_rng(6).integers(0, 10, size=256)
    predicted, called = model.predict(x, verbose=0), model(x)
    assert predicted.dtype == ml_dtypes.bfloat16 and called.dtype == tf.bfloat16
    error = np.abs(predicted.astype("float64").sum(axis=1) - 1.0).max()
    assert 1e-3 < error < 2e-2  # beyond float32's tolerance, within bfloat16's
    for probs in (predicted, called):
        for function in (metrics.accuracy, metrics.nll, metrics.brier):
            assert np.isfinite(function(y, probs))
        ece = metrics.expected_calibration_error(y, probs, num_bins=10)
        assert 0.0 <= ece <= 1.0
    # Cast to float32 first, the same numbers are held to float32's tolerance.
    with pytest.raises(ValueError, match="`probs` rows must sum to 1 within 0.001 for float32"):
        metrics.expected_calibration_error(y, predicted.astype("float32"))
