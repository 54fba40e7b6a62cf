"""Stateless random draws for the estimators: standard normals and random signs.

Both take a stateless seed (int32, shape [2], e.g. from a layer's `keras.random.SeedGenerator`
through `tfp.random.split_seed`), so a seeded layer is reproducible, and both are built from
TensorFlow's stateless Philox generator with cheap vectorized transforms: on CPU they cost
well under TensorFlow's own `tf.random.stateless_normal` and `tfp.random.rademacher`
(benchmarks/PROFILE.md).

    eps = tfbdl.sampling.standard_normal((784, 800), seed)    # eps ~ N(0, I)
    signs = tfbdl.sampling.rademacher((128, 784), tf.float32, seed)
"""

import math

import tensorflow as tf

__all__ = ["standard_normal", "rademacher"]


def standard_normal(shape, seed, dtype=tf.float32):
    """eps ~ N(0, I) of `shape` by the Box-Muller transform (Box & Muller 1958):

        u ~ U(0, 1], theta ~ U[0, 2 pi) independent,   r = sqrt(-2 log u)
        r cos(theta), r sin(theta)  are two independent N(0, 1) draws

    One random 32-bit Philox word makes one pair: its high 24 bits give u = 1 - k / 2^24,
    the resolution of a float32 uniform, so the tails reach 5.8 sigma as with TensorFlow's
    own normal kernel; its low 8 bits pick theta among 256 equally spaced angles (offset by
    half a step, so that neither cos theta nor sin theta is ever 0). An average over 256
    equally spaced angles is exact for trigonometric polynomials of degree below 256, so
    every joint moment E[z1^a z2^b] with a + b < 256 equals that of two independent
    normals. Half the random words of a draw with one uniform per normal, and the
    logarithm, square root and trigonometric functions run as vectorized elementwise ops:
    on CPU 40-45 % cheaper than `tf.random.stateless_normal` for weight-sized draws
    (benchmarks/PROFILE.md).
    Computed in float32 and cast to `dtype`.
    """
    size = tf.reduce_prod(shape)
    words = tf.random.stateless_uniform(
        [(size + 1) // 2], seed=seed, dtype=tf.uint32, minval=None, maxval=None
    )
    k = tf.cast(tf.bitwise.right_shift(words, 8), tf.float32)  # 0 <= k < 2^24, exact
    radius = tf.sqrt(-2.0 * tf.math.log1p(k * -(2.0**-24)))  # log(u), u = 1 - k / 2^24
    step = 2.0 * math.pi / 256
    angle = tf.cast(tf.bitwise.bitwise_and(words, 255), tf.float32) * step + step / 2
    pairs = tf.concat([radius * tf.cos(angle), radius * tf.sin(angle)], axis=0)
    return tf.cast(tf.reshape(pairs[:size], shape), dtype)


def rademacher(shape, dtype, seed):
    """Independent random signs of `shape`, +1 or -1 with probability 1/2 each.

    Every bit of a Philox word is an independent fair coin, so one random 32-bit word gives
    32 signs: a small draw and a bit unpacking. (`tfp.random.rademacher` draws integers in
    [0, 2) with `StatelessRandomUniformIntV2`, whose range reduction on CPU cost about as
    much as the whole weight-noise draw of a Flipout layer.)
    """
    size = tf.reduce_prod(shape)
    words = tf.random.stateless_uniform(
        [(size + 31) // 32, 1], seed=seed, dtype=tf.int32, minval=None, maxval=None
    )
    bits = tf.bitwise.bitwise_and(tf.bitwise.right_shift(words, tf.range(32)), 1)
    signs = tf.cast(2 * bits - 1, dtype)
    return tf.reshape(tf.reshape(signs, [-1])[:size], shape)
