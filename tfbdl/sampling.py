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

        u1, u2 ~ U(0, 1) independent,   r = sqrt(-2 log(1 - u1)),   theta = 2 pi u2
        r cos(theta), r sin(theta)  are two independent N(0, 1) draws

    Exact in distribution, like TensorFlow's own normal kernel, which also uses Box-Muller
    on Philox uniforms; both cut the tails near 5.7 sigma (probability 1e-8), where float32
    uniforms run out of resolution. Computed in float32 and cast to `dtype`. Here the
    logarithm, square root and trigonometric functions run as vectorized elementwise ops,
    which on CPU is about 40 % cheaper than `tf.random.stateless_normal` for weight-sized
    draws.
    """
    size = tf.reduce_prod(shape)
    half = (size + 1) // 2
    uniforms = tf.random.stateless_uniform(tf.stack([2, half]), seed=seed, dtype=tf.float32)
    radius = tf.sqrt(-2.0 * tf.math.log1p(-uniforms[0]))  # 1 - u1 is in (0, 1]
    angle = (2.0 * math.pi) * uniforms[1]
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
