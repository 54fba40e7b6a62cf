"""Gradient estimators: how a Bayesian layer turns q(W) into outputs for one batch.

Each estimator is a function `(layer, inputs, kernel, seed) -> (outputs, kernel_sample)`:

- `layer.linear(x, W)` is the layer's deterministic op (matmul or convolution), and
  `layer.channel_axis` its feature axis;
- `kernel` is the layer's `NormalWeights` (mu, sigma = softplus(rho)), float32;
- `seed` is a stateless seed (int32, shape [2]);
- `kernel_sample` is the weight sample the estimator drew (for a Monte Carlo KL), or
  None when it drew none.

Outputs are in the inputs' dtype (the layer's compute dtype), the variational math in float32.
"""

import ml_dtypes
import tensorflow as tf
import tensorflow_probability as tfp

from tfbdl import sampling


def reparameterization(layer, inputs, kernel, seed):
    """One weight sample per batch (Kingma & Welling 2014; Blundell et al. 2015).

        W = mu + sigma * eps,   y = x W

    Every example of the batch sees the same W, so their noise is correlated.
    """
    sample = kernel.sample(seed)
    return layer.linear(inputs, tf.cast(sample, inputs.dtype)), sample


def _per_example_shape(x, channel_axis):
    """[batch, 1, ..., 1, channels]: one value per example and channel, shared over space/time."""
    rank = x.shape.rank
    channel_axis %= rank
    dynamic = tf.shape(x)
    return tf.stack([dynamic[i] if i in (0, channel_axis) else 1 for i in range(rank)])


def flipout(layer, inputs, kernel, seed):
    """Flipout (Wen et al. 2018, "Flipout: Efficient Pseudo-Independent Weight Perturbations
    on Mini-Batches"): per-example weights W_n = mu + Delta W * (s_n r_n^T), with random signs
    s_n, r_n, without ever materializing them:

        y_n = x_n mu + ((x_n * s_n) Delta W) * r_n

    Cost: two linear ops and one weight-shaped noise draw per batch. Each example's
    marginal weight is exactly q(W); different examples' perturbations are decorrelated.
    """
    noise_seed, sign_in_seed, sign_out_seed = tfp.random.split_seed(seed, n=3)
    delta = kernel.scale() * sampling.standard_normal(kernel.shape, noise_seed)  # one draw per batch
    mean_outputs = layer.linear(inputs, tf.cast(kernel.loc, inputs.dtype))
    sign_in = sampling.rademacher(
        _per_example_shape(inputs, layer.channel_axis), inputs.dtype, sign_in_seed
    )
    perturbation = layer.linear(inputs * sign_in, tf.cast(delta, inputs.dtype))
    sign_out = sampling.rademacher(
        _per_example_shape(perturbation, layer.channel_axis), inputs.dtype, sign_out_seed
    )
    return mean_outputs + perturbation * sign_out, kernel.loc + delta


def local_reparameterization(layer, inputs, kernel, seed):
    """Local reparameterization (Kingma, Salimans & Welling 2015, "Variational Dropout and
    the Local Reparameterization Trick"): sample the pre-activations, not the weights.

        y ~ N(x mu, x^2 sigma^2)  (independently per example and unit)

    Exact for a linear op with independent Gaussian weights; draws no weight sample.
    """
    mean = layer.linear(inputs, tf.cast(kernel.loc, inputs.dtype))
    # The variance path runs in float32 whatever the compute dtype: x^2 overflows float16
    # from |x| = 256 on, where the mean path is still finite.
    variance = layer.linear(tf.square(tf.cast(inputs, tf.float32)), tf.square(kernel.scale()))
    # max(.., tiny) keeps d sqrt / d variance finite where an input row is all zeros.
    stddev = tf.sqrt(tf.maximum(variance, ml_dtypes.finfo("float32").tiny))
    eps = sampling.standard_normal(tf.shape(mean), seed, tf.float32)
    return mean + tf.cast(stddev * eps, mean.dtype), None
