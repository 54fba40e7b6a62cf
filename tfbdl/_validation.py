"""Argument checks shared by the public API: each error names the owner, the argument,
the value given and what was expected, and is raised before any state changes."""

import numbers

import keras
import numpy as np

# The smallest scale whose square is a normal float32: below it, sigma^2 or 1 / sigma^2
# under- or overflows in float32 and a KL or log-density turns into inf or NaN.
MIN_SCALE = float(np.sqrt(np.finfo(np.float32).tiny))


def is_number(value):
    """A real number (a Python or NumPy scalar), not a bool or a string."""
    return isinstance(value, (numbers.Real, np.floating, np.integer)) and not isinstance(value, (bool, np.bool_))


def positive_number(value, argument, owner, minimum=MIN_SCALE):
    """`value` as a float, if it is a finite number >= `minimum`; else a ValueError."""
    if not is_number(value) or not np.isfinite(value) or not value >= minimum:
        raise ValueError(
            f"{owner}: `{argument}` must be a finite number >= {minimum:.3g}, got {argument}={value!r}."
        )
    return float(value)


def positive_array(value, argument, owner, minimum=MIN_SCALE):
    """`value` as a float32 array, if every element is a finite number >= `minimum`."""
    try:
        array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        array = None
    if array is None or array.size == 0 or not np.all(np.isfinite(array)) or not np.all(array >= minimum):
        raise ValueError(
            f"{owner}: `{argument}` must be finite and >= {minimum:.3g} (a number or an array), "
            f"got {argument}={value!r}."
        )
    return array


def is_integer(value):
    """A Python or NumPy integer, not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def integer(value, argument, owner, minimum, maximum=None):
    """`value` as an int, if it is an integer >= `minimum` (and < `maximum`); else a ValueError."""
    if not is_integer(value) or value < minimum or (maximum is not None and value >= maximum):
        expected = f"in [{minimum}, {maximum})" if maximum is not None else f">= {minimum}"
        raise ValueError(f"{owner}: `{argument}` must be an integer {expected}, got {argument}={value!r}.")
    return int(value)


def boolean(value, argument, owner):
    """`value` if it is a bool (strings such as "False" are refused, not read by truthiness)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{owner}: `{argument}` must be True or False, got {argument}={value!r}.")
    return bool(value)


# |sum_c p_c - 1| allowed for class probabilities computed in each dtype: a few units of
# the dtype's rounding error (float16: eps = 2^-10, bfloat16: eps = 2^-7) over a softmax.
_PROBABILITY_SUM_TOLERANCE = {"float16": 1e-2, "bfloat16": 2e-2}


def probability_sum_tolerance(dtype):
    """How far rows of probabilities computed in `dtype` may sum from 1 (1e-3 for float32)."""
    return _PROBABILITY_SUM_TOLERANCE.get(keras.backend.standardize_dtype(dtype), 1e-3)
