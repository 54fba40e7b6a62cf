"""Property-based tests (hypothesis): over arguments, input shapes and dtypes, a tfbdl layer,
`tfbdl.predict` and the metric functions either work, with the shape Keras' own twin gives,
or raise a ValueError/TypeError that names the argument or the value. Never a deep
TensorFlow error, never a silently wrong result."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tfbdl

L = tfbdl.layers
# The layers here are called with training=True outside a model on purpose: no KL weight.
pytestmark = pytest.mark.filterwarnings("ignore:tfbdl. training .* with no KL weight:UserWarning")
SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])

BAD_VALUES = st.one_of(st.integers(-3, 0), st.floats(-2.0, 2.5), st.text(max_size=3), st.none(),
                       st.booleans())


def _outcome(make, x):
    """("ok", output shape) or ("error", exception) of building a layer and calling it on x."""
    try:
        layer = make()
        return "ok", tuple(layer(x, training=True).shape)
    except (ValueError, TypeError) as error:
        return "error", error


def _assert_agrees_with_twin(twin, bayesian, x, arguments):
    """Where the Bayesian layer works, its Keras twin works too, with the same output shape;
    where the twin refuses, the Bayesian layer refuses; its errors name an argument or a value
    (it may be stricter than its twin, e.g. refuse units=True)."""
    expected, got = _outcome(twin, x), _outcome(bayesian, x)
    if got[0] == "ok":
        assert got == expected, (arguments, expected, got)
        return
    message = str(got[1])
    assert any(name in message or repr(value) in message or str(value) in message
               for name, value in arguments.items()), (arguments, message)


@SETTINGS
@given(
    layer=st.sampled_from([L.DenseFlipout, L.DenseReparameterization, L.DenseLocalReparameterization]),
    units=st.one_of(st.integers(1, 6), BAD_VALUES),
    activation=st.sampled_from([None, "relu", "tanh", "softmax", "no_such_activation"]),
    use_bias=st.booleans(),
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    batch=st.integers(1, 3),
)
def test_dense_layers_work_where_keras_dense_works(layer, units, activation, use_bias, shape, batch):
    x = np.ones([batch] + shape, "float32")
    arguments = {"units": units, "activation": activation, "input shape": tuple(x.shape)}
    _assert_agrees_with_twin(
        lambda: keras.layers.Dense(units, activation=activation, use_bias=use_bias),
        lambda: layer(units, activation=activation, use_bias=use_bias, seed=0),
        x, arguments)


@SETTINGS
@given(
    layer=st.sampled_from([L.Conv2DFlipout, L.Conv2DReparameterization]),
    filters=st.one_of(st.integers(1, 4), BAD_VALUES),
    kernel_size=st.one_of(st.integers(1, 4), st.tuples(st.integers(1, 3), st.integers(1, 3)), BAD_VALUES),
    strides=st.integers(1, 3),
    padding=st.sampled_from(["valid", "same", "full"]),
    spatial=st.tuples(st.integers(1, 7), st.integers(1, 7)),
    channels=st.integers(1, 3),
)
def test_conv2d_layers_work_where_keras_conv2d_works(layer, filters, kernel_size, strides, padding,
                                                     spatial, channels):
    x = np.ones((2,) + spatial + (channels,), "float32")
    arguments = {"filters": filters, "kernel_size": kernel_size, "padding": padding,
                 "input shape": tuple(x.shape)}
    options = dict(strides=strides, padding=padding)
    _assert_agrees_with_twin(
        lambda: keras.layers.Conv2D(filters, kernel_size, **options),
        lambda: layer(filters, kernel_size, seed=0, **options),
        x, arguments)


@SETTINGS
@given(
    dtype=st.sampled_from(["float16", "bfloat16", "float32", "float64", "int32", "uint8"]),
    scale=st.sampled_from([1.0, 1e4]),
)
def test_dense_flipout_accepts_any_numeric_input_dtype_and_stays_finite(dtype, scale):
    layer = L.DenseFlipout(3, seed=0)
    x = tf.cast(tf.fill((4, 5), scale), dtype)
    outputs = layer(x, training=True)
    assert outputs.dtype == "float32" and tuple(outputs.shape) == (4, 3)
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(outputs)))


def _named_error(call, *names):
    """Runs `call`; returns None, or the message of a ValueError, which must name one of `names`."""
    try:
        call()
    except ValueError as error:
        assert any(name in str(error) for name in names), str(error)
        return str(error)
    return None


DEFECTS = ("none", "fractional label", "label too large", "negative label", "string label",
           "unnormalized probabilities", "no examples", "label count differs")


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    rows=st.integers(1, 6),
    classes=st.integers(1, 4),
    label_dtype=st.sampled_from(["int32", "int64", "float32", "float64"]),
    prob_dtype=st.sampled_from(["float16", "float32", "float64"]),
    defect=st.sampled_from(DEFECTS),
)
def test_metric_functions_give_a_valid_number_or_name_the_argument(
        rows, classes, label_dtype, prob_dtype, defect):
    rng = np.random.default_rng(rows * 7 + classes)
    probs = (rng.dirichlet(np.ones(classes), size=rows) if classes > 1 else rng.uniform(size=rows))
    num_classes = max(classes, 2)  # a 1-D probs is p(y = 1) of a binary classifier
    labels = rng.integers(0, num_classes, size=rows).astype(label_dtype)
    if defect == "fractional label":
        labels = labels.astype("float64") + 0.5
    elif defect == "label too large":
        labels[0] = num_classes
    elif defect == "negative label":
        labels[0] = -1
    elif defect == "string label":
        labels = labels.astype("<U2")
    elif defect == "unnormalized probabilities":
        probs = probs + 1.0  # rows sum to 1 + C; a 1-D p(y = 1) leaves [0, 1]
    elif defect == "no examples":
        labels, probs = labels[:0], probs[:0]
    elif defect == "label count differs":
        labels = np.concatenate([labels, labels[:1]])
    probs = probs.astype(prob_dtype)
    for function, high in [(tfbdl.metrics.accuracy, 1.0), (tfbdl.metrics.nll, np.inf),
                           (tfbdl.metrics.expected_calibration_error, 1.0), (tfbdl.metrics.brier, 2.0)]:
        value = []
        message = _named_error(lambda: value.append(function(labels, probs)), "`y`", "`probs`")
        assert (message is None) == (defect == "none"), (function.__name__, defect, message)
        if message is None:
            assert np.isfinite(value[0]) and 0.0 <= value[0] <= high, (function.__name__, value)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    rows=st.integers(0, 4),
    features=st.sampled_from([(3,), (3,), (3,), (2,), (3, 1), ()]),
    dtype=st.sampled_from(["float16", "float32", "float64", "int32", "bool"]),
    num_samples=st.sampled_from([0, 1, 3, -1, 2.5, True]),
    batch_size=st.sampled_from([1, 2, 5, 0, "8"]),
    non_finite=st.booleans(),
)
def test_predict_returns_one_row_per_example_or_names_the_argument(
        rows, features, dtype, num_samples, batch_size, non_finite):
    shape = (rows,) + features
    x = np.ones(shape, dtype)
    if non_finite and x.size and dtype.startswith("float"):
        x.flat[-1] = np.nan
    result = []
    message = _named_error(
        lambda: result.append(tfbdl.predict(_PREDICT_MODEL, x, num_samples=num_samples,
                                            batch_size=batch_size, progress=False)),
        "`x`", "`num_samples`", "`batch_size`")
    valid = (features == (3,) and rows > 0 and num_samples in (0, 1, 3)
             and not isinstance(num_samples, bool) and batch_size in (1, 2, 5)
             and np.all(np.isfinite(x.astype("float64"))))
    assert (message is None) == valid, (shape, dtype, num_samples, batch_size, message)
    if message is None:
        assert result[0].mean.shape == (shape[0], 2) and np.all(np.isfinite(result[0].mean))
        np.testing.assert_allclose(result[0].mean.sum(axis=-1), 1.0, rtol=1e-5)


_PREDICT_MODEL = keras.Sequential(
    [keras.Input((3,)), L.DenseFlipout(4, activation="tanh", seed=0),
     L.DenseFlipout(2, activation="softmax", seed=1)])
