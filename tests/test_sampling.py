"""tfbdl.sampling: the estimators' standard normals and random signs, checked statistically.

Tolerances: every estimate below is compared with its exact value within 5 standard errors
(SE stated per check), so with the fixed seeds a correct sampler fails a check with
probability below 6e-7; a wrong variance, a bias or a correlation larger than about 1 %
fails it.
"""

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

from tfbdl import sampling

SEED = tf.constant([12, 34], tf.int32)


@pytest.fixture(scope="module")
def normals():
    return sampling.standard_normal((1024, 1024), SEED).numpy().ravel().astype(np.float64)


def test_standard_normal_moments_and_tails(normals):
    n = normals.size
    assert abs(normals.mean()) < 5 / np.sqrt(n)  # SE of the mean: 1 / sqrt(n)
    assert abs(normals.var() - 1.0) < 5 * np.sqrt(2.0 / n)  # SE of the variance: sqrt(2 / n)
    tail = 2 * scipy.stats.norm.sf(3.0)  # P(|z| > 3)
    assert abs(np.mean(np.abs(normals) > 3.0) - tail) < 5 * np.sqrt(tail * (1 - tail) / n)
    # Kolmogorov-Smirnov against N(0, 1); a p-value of 1e-4 is about 4 sigma.
    assert scipy.stats.kstest(normals, "norm").pvalue > 1e-4


def test_box_muller_partners_are_independent(normals):
    # Draws i and i + n/2 come from the same Philox word (one radius, one angle); they must be
    # uncorrelated, and so must their squares (dependence through the shared radius).
    # SE: 1 / sqrt(n/2).
    first, second = np.split(normals, 2)
    tolerance = 5 / np.sqrt(first.size)
    assert abs(np.corrcoef(first, second)[0, 1]) < tolerance
    assert abs(np.corrcoef(first**2, second**2)[0, 1]) < tolerance


def test_standard_normal_shapes_dtypes_and_seeds():
    draw = tf.function(lambda shape, seed: sampling.standard_normal(shape, seed, tf.float16))
    odd = draw(tf.constant([3, 5, 7]), SEED)  # odd size, dynamic shape
    assert odd.shape == (3, 5, 7) and odd.dtype == tf.float16
    np.testing.assert_array_equal(odd.numpy(), draw(tf.constant([3, 5, 7]), SEED).numpy())
    other = draw(tf.constant([3, 5, 7]), SEED + 1).numpy()
    assert not np.array_equal(odd.numpy(), other)


def test_rademacher_signs_are_fair_and_independent():
    signs = sampling.rademacher((1000, 999), tf.float32, SEED).numpy()
    assert signs.shape == (1000, 999)
    assert set(np.unique(signs)) == {-1.0, 1.0}
    flat = signs.ravel().astype(np.float64)
    tolerance = 5 / np.sqrt(flat.size)  # SE of a mean or lag correlation of +-1 signs
    assert abs(flat.mean()) < tolerance
    # Neighbouring bits of one word, and the same bit of neighbouring words (lag 32).
    for lag in (1, 31, 32):
        assert abs(np.mean(flat[:-lag] * flat[lag:])) < tolerance, lag


def test_rademacher_dynamic_odd_shape_and_seed():
    draw = tf.function(lambda shape, seed: sampling.rademacher(shape, tf.float16, seed))
    signs = draw(tf.constant([7, 1, 1, 3]), SEED)
    assert signs.shape == (7, 1, 1, 3) and signs.dtype == tf.float16
    np.testing.assert_array_equal(signs.numpy(), draw(tf.constant([7, 1, 1, 3]), SEED).numpy())
