"""Evaluation of predictive distributions: accuracy, NLL, Brier, calibration, AUROC.

Every function takes integer class labels `y` of shape (N,) and predictive class
probabilities `probs` of shape (N, C) (rows summing to 1), e.g. `tfbdl.predict(...).mean`;
a 1-D `probs` is read as p(y = 1) of a binary classifier. Inputs are checked before any
work: probabilities outside [0, 1] or not summing to 1, and labels out of range or not
integers, raise a `ValueError` that names the argument. Rows must sum to 1 within
`probability_sum_tolerance(probs.dtype)`: 1e-3 for float32/float64, looser for float16 and
bfloat16 (e.g. `model.predict` under the "mixed_bfloat16" policy); probabilities already cast
to float32 are held to float32's tolerance.

    result = tfbdl.predict(model, x_test, num_samples=100)
    tfbdl.metrics.accuracy(y_test, result.mean)
    tfbdl.metrics.expected_calibration_error(y_test, result.mean, num_bins=15)
    tfbdl.metrics.ood_auroc(result, tfbdl.predict(model, x_ood), score="mutual_information")

`ExpectedCalibrationError` and `NegativeLogLikelihood` are Keras metrics for
`model.compile(metrics=[...])`.
"""

import collections

import keras
import numpy as np
import sklearn.metrics
import tensorflow as tf

from tfbdl import _validation
from tfbdl._validation import probability_sum_tolerance
from tfbdl.prediction import predict

__all__ = [
    "accuracy",
    "nll",
    "brier",
    "expected_calibration_error",
    "reliability",
    "Reliability",
    "auroc",
    "ood_auroc",
    "misclassification_auroc",
    "uncertainty_score",
    "probability_sum_tolerance",
    "ExpectedCalibrationError",
    "NegativeLogLikelihood",
]

SCORES = ("mutual_information", "entropy", "aleatoric", "max_prob")


# ---------------------------------------------------------------------- input checks


def check_probabilities(probs, argument="probs"):
    """`probs` as a float64 (N, C) array; a 1-D array of p(y=1) becomes [1 - p, p].

    Rows must sum to 1 within `probability_sum_tolerance` of `probs`' own dtype (a NumPy
    array, ml_dtypes' bfloat16 included, or a tf.Tensor).
    """
    given = np.asarray(probs)
    probs = given.astype(np.float64)
    if probs.ndim == 1:
        probs = np.stack([1.0 - probs, probs], axis=-1)
    if probs.ndim != 2 or probs.shape[0] == 0 or probs.shape[1] < 2:
        raise ValueError(
            f"`{argument}` must be class probabilities of shape (N, C) with N >= 1 and C >= 2 "
            f"(or a 1-D array of p(y=1)), got shape {probs.shape}."
        )
    if not np.all(np.isfinite(probs)) or probs.min() < 0.0 or probs.max() > 1.0:
        raise ValueError(
            f"`{argument}` must hold probabilities in [0, 1], got values in "
            f"[{np.nanmin(probs)}, {np.nanmax(probs)}] (or non-finite values)."
        )
    sums = probs.sum(axis=1)
    worst = np.argmax(np.abs(sums - 1.0))
    tolerance = probability_sum_tolerance(given.dtype)
    if abs(sums[worst] - 1.0) > tolerance:
        raise ValueError(
            f"`{argument}` rows must sum to 1 within {tolerance:g} for {given.dtype} "
            f"(class probabilities, not logits or scores); row {worst} sums to {sums[worst]:.6g}."
        )
    return probs


def check_labels(y, num_classes, num_examples, argument="y", owner=None):
    """`y` as an int64 (N,) array of labels in [0, num_classes).

    Integer values stored as floats (3.0) are accepted; fractional or soft labels (0.5) are
    refused rather than truncated. `owner` (e.g. a metric's name) prefixes the errors.
    """
    prefix = f"{owner}: " if owner else ""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.shape[0] != num_examples:
        raise ValueError(
            f"{prefix}`{argument}` must be integer class labels of shape ({num_examples},), "
            f"got shape {y.shape}."
        )
    if y.size and not np.issubdtype(y.dtype, np.number):
        raise ValueError(
            f"{prefix}`{argument}` must hold integer class labels, got dtype {y.dtype} "
            f"with values such as {y[:3].tolist()}."
        )
    fractional = y[np.mod(y, 1) != 0]  # NaN included
    if fractional.size:
        raise ValueError(
            f"{prefix}`{argument}` must hold integer class labels (soft or fractional labels "
            f"are not supported), got dtype {y.dtype} with values such as "
            f"{fractional[:3].tolist()}."
        )
    y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(
            f"{prefix}`{argument}` labels must lie in [0, {num_classes}) for {num_classes} "
            f"classes, got labels in [{y.min()}, {y.max()}]."
        )
    return y


def _labels_and_probs(y, probs):
    probs = check_probabilities(probs)
    return check_labels(y, probs.shape[1], probs.shape[0]), probs


# ---------------------------------------------------------------------- scores


def accuracy(y, probs):
    """Fraction of examples whose most probable class is the label."""
    y, probs = _labels_and_probs(y, probs)
    return float(np.mean(np.argmax(probs, axis=1) == y))


def nll(y, probs):
    """Mean negative log-likelihood, -1/N sum_n log p(y_n | x_n) (nats).

    Probabilities are clipped below at 1e-12 so a confidently wrong prediction costs
    at most log(1e12) = 27.6 nats instead of infinity.
    """
    y, probs = _labels_and_probs(y, probs)
    return float(-np.mean(np.log(np.maximum(probs[np.arange(len(y)), y], 1e-12))))


def brier(y, probs):
    """Multi-class Brier score, 1/N sum_n sum_c (p_nc - [y_n = c])^2 (Brier 1950); in [0, 2]."""
    y, probs = _labels_and_probs(y, probs)
    one_hot = np.eye(probs.shape[1])[y]
    return float(np.mean(np.sum((probs - one_hot) ** 2, axis=1)))


Reliability = collections.namedtuple("Reliability", ["edges", "confidence", "accuracy", "count"])
Reliability.__doc__ = """Per-bin calibration statistics.

edges: (num_bins + 1,) bin edges on [0, 1]; confidence, accuracy: (num_bins,) mean
confidence and accuracy of the examples in each bin (NaN for an empty bin); count: (num_bins,)
number of examples per bin."""


def reliability(y, probs, num_bins=15):
    """Bins the confidences max_c p_nc into `num_bins` equal-width bins (lo, hi] of [0, 1].

    Returns a `Reliability(edges, confidence, accuracy, count)`; a calibrated model has
    accuracy == confidence in every bin (Guo et al. 2017, "On Calibration of Modern Neural
    Networks"). A confidence of exactly 0 falls into the first bin.
    """
    _validation.integer(num_bins, "num_bins", "reliability", 1)
    y, probs = _labels_and_probs(y, probs)
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    bins = np.searchsorted(edges[1:-1], confidence, side="left")  # edges[b] < conf <= edges[b+1]
    count = np.bincount(bins, minlength=num_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(bins, weights=confidence, minlength=num_bins) / count
        mean_accuracy = np.bincount(bins, weights=correct, minlength=num_bins) / count
    return Reliability(edges, mean_confidence, mean_accuracy, count)


def expected_calibration_error(y, probs, num_bins=15):
    """ECE = sum_b (n_b / N) |accuracy_b - confidence_b| over equal-width confidence bins.

    Naeini, Cooper & Hauskrecht 2015; Guo et al. 2017. 0 for a perfectly calibrated model.
    """
    bins = reliability(y, probs, num_bins)
    filled = bins.count > 0
    gaps = np.abs(bins.accuracy[filled] - bins.confidence[filled])
    return float(np.sum(bins.count[filled] * gaps) / np.sum(bins.count))


def auroc(scores_positive, scores_negative):
    """Area under the ROC curve separating positives from negatives by score (higher =
    more positive): P(score_pos > score_neg) + P(tie) / 2, via `sklearn.metrics.roc_auc_score`."""
    positive = np.ravel(np.asarray(scores_positive, dtype=np.float64))
    negative = np.ravel(np.asarray(scores_negative, dtype=np.float64))
    for argument, scores in (("scores_positive", positive), ("scores_negative", negative)):
        if scores.size == 0 or not np.all(np.isfinite(scores)):
            raise ValueError(
                f"`{argument}` must be a non-empty array of finite scores, "
                f"got {scores.size} values."
            )
    labels = np.concatenate([np.ones(positive.size), np.zeros(negative.size)])
    return float(sklearn.metrics.roc_auc_score(labels, np.concatenate([positive, negative])))


def uncertainty_score(result, score="mutual_information"):
    """The per-example uncertainty `score` of a `tfbdl.predict` result (higher = less certain):
    "mutual_information" (epistemic), "entropy" (total), "aleatoric", or "max_prob"
    (1 - max_c p_c)."""
    if score not in SCORES:
        raise ValueError(f"`score` must be one of {SCORES}, got score={score!r}.")
    if getattr(result, "entropy", None) is None:
        raise ValueError(
            "uncertainty scores need a classification result of tfbdl.predict (with "
            f"`entropy`), got {type(result).__name__}."
        )
    if score == "max_prob":
        return 1.0 - np.max(result.mean, axis=-1)
    return getattr(result, score)


def ood_auroc(
    in_distribution, out_of_distribution, score="mutual_information", model=None, **predict_kwargs
):
    """AUROC of telling out-of-distribution inputs (positives) from in-distribution ones by an
    uncertainty score; 0.5 is chance, 1 perfect.

    `in_distribution` and `out_of_distribution` are `tfbdl.predict` results, or inputs, in
    which case `model` is required and `tfbdl.predict(model, x, **predict_kwargs)` runs.

        tfbdl.metrics.ood_auroc(x_mnist, x_fashion, model=model, num_samples=100)
    """
    if score not in SCORES:
        raise ValueError(f"`score` must be one of {SCORES}, got score={score!r}.")
    results = []
    for argument, value in (
        ("in_distribution", in_distribution),
        ("out_of_distribution", out_of_distribution),
    ):
        if not hasattr(value, "mutual_information"):  # inputs, not a tfbdl.predict result
            if model is None:
                raise ValueError(
                    f"`{argument}` is not a tfbdl.predict result, so `model` is needed "
                    "to predict it; got model=None."
                )
            value = predict(model, value, **predict_kwargs)
        results.append(value)
    return auroc(uncertainty_score(results[1], score), uncertainty_score(results[0], score))


def misclassification_auroc(y, result, score="entropy"):
    """AUROC of telling wrong predictions (positives) from right ones by an uncertainty score."""
    y = check_labels(y, result.mean.shape[-1], result.mean.shape[0])
    values = uncertainty_score(result, score)
    wrong = result.predicted_class != y
    if wrong.all() or not wrong.any():
        raise ValueError(
            "misclassification_auroc needs both right and wrong predictions, got "
            f"{int(wrong.sum())} wrong of {len(y)}."
        )
    return auroc(values[wrong], values[~wrong])


# ---------------------------------------------------------------------- Keras metrics


def _probabilities(y_pred, from_logits):
    """(batch, C) probabilities from softmax/sigmoid outputs or logits (one unit = binary)."""
    y_pred = tf.cast(y_pred, tf.float32)
    binary = y_pred.shape[-1] == 1
    if from_logits:
        y_pred = tf.sigmoid(y_pred) if binary else tf.nn.softmax(y_pred, axis=-1)
    if binary:
        y_pred = tf.concat([1.0 - y_pred, y_pred], axis=-1)
    return y_pred


def _sparse_labels(y_true, probs, owner):
    """(labels, poison): int32 labels (batch,) from sparse labels (batch,) / (batch, 1) or
    one-hot (batch, C), and a float32 (batch,) of 0 (NaN where a label is invalid, see
    `_asserted_labels`).

    Sparse labels must be integers (3.0 is fine, 0.5 is not) in [0, C): checked with a
    ValueError naming `owner` when running eagerly, with assertions in a traced graph.
    """
    y_true = tf.convert_to_tensor(y_true)
    num_classes = probs.shape[-1]
    if y_true.shape.rank == 2 and y_true.shape[-1] == num_classes:
        labels = tf.argmax(y_true, axis=-1, output_type=tf.int32)
        return labels, tf.zeros(tf.shape(labels), tf.float32)
    labels = tf.cast(tf.reshape(y_true, [-1]), tf.float64)
    if not tf.executing_eagerly():
        return _asserted_labels(labels, num_classes, owner)
    if labels.shape[0]:
        check_labels(labels.numpy(), num_classes, probs.shape[0], "y_true", owner)
    return tf.cast(labels, tf.int32), tf.zeros(tf.shape(labels), tf.float32)


def _asserted_labels(labels, num_classes, owner):
    """`_sparse_labels` in a traced graph: tf.debugging assertions (InvalidArgumentError when
    the graph runs) that `labels` (float64) are integers in [0, num_classes). XLA compiles
    assertions out, so invalid labels also become label 0 with a NaN poison, and the metric
    reads NaN rather than a plausible number."""
    integral = tf.equal(labels, tf.floor(labels))  # False for NaN
    in_range = (labels >= 0) & (labels < num_classes)
    first_fractional = tf.gather(labels, tf.argmin(tf.cast(integral, tf.int32)))
    checks = [  # data printed as "[text] [value] ..." (tf.strings.format does not compile)
        tf.debugging.Assert(tf.reduce_all(integral), [
            f"{owner}: `y_true` must hold integer class labels (soft or fractional labels "
            "are not supported), got the label", first_fractional,
        ]),
        tf.debugging.Assert(tf.reduce_all(in_range | ~integral), [
            f"{owner}: `y_true` labels must lie in [0, {num_classes}) for {num_classes} "
            "classes, got labels from", tf.reduce_min(labels), "to", tf.reduce_max(labels),
        ]),
    ]
    valid = integral & in_range
    with tf.control_dependencies(checks):
        labels = tf.cast(tf.where(valid, labels, tf.zeros_like(labels)), tf.int32)
        return labels, tf.where(valid, 0.0, float("nan"))


@keras.saving.register_keras_serializable(package="tfbdl")
class NegativeLogLikelihood(keras.metrics.Mean):
    """Mean -log p(y | x) of the model's (stochastic) predictions during `fit`/`evaluate`.

    Labels are sparse integers or one-hot (batch, C); predictions are probabilities
    (softmax, or one sigmoid unit for binary) or, with `from_logits=True`, logits.
    Sparse labels outside [0, C) or not integers (0.5; 3.0 is fine) raise a ValueError when
    `update_state` runs eagerly, and a `tf.errors.InvalidArgumentError` from a tf.debugging
    assertion inside a traced graph (`fit`/`evaluate`); under XLA (`jit_compile=True`), which
    compiles assertions out, the metric reads NaN.

        model.compile("adam", "sparse_categorical_crossentropy",
                      metrics=[tfbdl.metrics.NegativeLogLikelihood()])
    """

    def __init__(self, from_logits=False, name="negative_log_likelihood", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.from_logits = bool(from_logits)

    def update_state(self, y_true, y_pred, sample_weight=None):
        probs = _probabilities(y_pred, self.from_logits)
        labels, poison = _sparse_labels(y_true, probs, f"{type(self).__name__} metric {self.name}")
        p_true = tf.gather(probs, labels, axis=1, batch_dims=1)
        nll = -tf.math.log(tf.maximum(p_true, 1e-12)) + poison
        return super().update_state(nll, sample_weight)

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits}


@keras.saving.register_keras_serializable(package="tfbdl")
class ExpectedCalibrationError(keras.metrics.Metric):
    """Expected calibration error over all batches seen (same binning as
    `expected_calibration_error`), accumulated as per-bin counts and sums.

    Labels and predictions as for `NegativeLogLikelihood`, with the same checks of the
    labels (ValueError eagerly, InvalidArgumentError in a traced graph, NaN under XLA).

        model.compile("adam", "sparse_categorical_crossentropy",
                      metrics=[tfbdl.metrics.ExpectedCalibrationError(num_bins=15)])
    """

    def __init__(self, num_bins=15, from_logits=False, name="ece", dtype=None):
        _validation.integer(num_bins, "num_bins", "ExpectedCalibrationError", 1)
        super().__init__(name=name, dtype=dtype)
        self.num_bins = int(num_bins)
        self.from_logits = bool(from_logits)
        shape = (self.num_bins,)
        self.counts = self.add_variable(shape=shape, initializer="zeros", name="counts")
        self.confidence_sums = self.add_variable(
            shape=shape, initializer="zeros", name="confidence_sums"
        )
        self.correct_sums = self.add_variable(shape=shape, initializer="zeros", name="correct_sums")

    def update_state(self, y_true, y_pred, sample_weight=None):
        probs = _probabilities(y_pred, self.from_logits)
        labels, poison = _sparse_labels(y_true, probs, f"{type(self).__name__} metric {self.name}")
        confidence = tf.reduce_max(probs, axis=-1)
        correct = tf.cast(
            tf.equal(tf.argmax(probs, axis=-1, output_type=tf.int32), labels), tf.float32
        ) + poison
        boundaries = np.linspace(0.0, 1.0, self.num_bins + 1)[1:-1]
        bins = tf.searchsorted(tf.constant(boundaries, tf.float32), confidence, side="left")
        weight = (
            tf.ones_like(confidence)
            if sample_weight is None
            else tf.reshape(tf.cast(sample_weight, tf.float32), [-1])
        )
        for variable, values in (
            (self.counts, weight),
            (self.confidence_sums, weight * confidence),
            (self.correct_sums, weight * correct),
        ):
            variable.assign_add(tf.math.unsorted_segment_sum(values, bins, self.num_bins))

    def result(self):
        gaps = tf.abs(self.correct_sums - self.confidence_sums)
        return tf.math.divide_no_nan(tf.reduce_sum(gaps), tf.reduce_sum(self.counts))

    def reset_state(self):
        for variable in (self.counts, self.confidence_sums, self.correct_sums):
            variable.assign(tf.zeros_like(variable))

    def get_config(self):
        return {**super().get_config(), "num_bins": self.num_bins, "from_logits": self.from_logits}
