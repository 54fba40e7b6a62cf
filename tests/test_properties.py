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
