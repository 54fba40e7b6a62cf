"""Weight pruning by signal-to-noise ratio |mu| / sigma (Blundell et al. 2015, sec. 5.1).

A weight whose posterior mean is small compared with its posterior standard deviation
carries little information; Blundell et al. ("Weight Uncertainty in Neural Networks")
remove the weights of lowest SNR and find the test error barely changes until most are
gone, which is how a spike-and-slab prior's sparsity becomes a smaller model.

    tfbdl.pruning.signal_to_noise(model)            # all SNRs, e.g. for a histogram
    fraction = tfbdl.prune(model, snr_threshold=1.0)
"""

import numpy as np
import tensorflow as tf

from tfbdl.model_tools import _require_bayesian_layers
from tfbdl.posteriors import _softplus_inverse

__all__ = ["prune", "signal_to_noise"]

# sigma given to a pruned weight: softplus(rho) = 1e-30 is exactly representable in float32
# and makes every sample of the weight 0 + 1e-30 * eps, i.e. 0 at float32 precision.
PRUNED_SCALE = 1e-30


def _posteriors(model):
    """q(w) of every stochastic weight of `model` (`BayesianLayer.weight_distributions`)."""
    return [
        posterior
        for layer in _require_bayesian_layers(model)
        for posterior in layer.weight_distributions().values()
    ]


def _prunable_posteriors(model):
    """The variational variables of every stochastic weight, which `prune` zeroes; refused
    for a non-centred prior, whose variables are not the weights."""
    posteriors = []
    for layer in _require_bayesian_layers(model):
        for name, (posterior, term) in layer.variational_weights().items():
            if not term.centred:
                raise ValueError(
                    f"prune: layer '{layer.name}' has a non-centred prior on its {name} "
                    f"({type(term).__name__}), whose weights w = w_pop + tau * eps cannot be "
                    "zeroed through their variables; use a centred prior to prune."
                )
            posteriors.append(posterior)
    return posteriors


def _snr(posterior):
    return tf.abs(tf.convert_to_tensor(posterior.loc)) / posterior.scale()


def signal_to_noise(model):
    """|mu| / sigma of every stochastic weight of `model` (kernels and Bayesian biases), 1-D."""
    return np.concatenate(
        [tf.reshape(_snr(posterior), [-1]).numpy() for posterior in _posteriors(model)]
    )


def prune(model, snr_threshold):
    """Sets every stochastic weight with |mu| / sigma < `snr_threshold` to exactly zero.

    The pruned weight's mean becomes 0 and its sigma `PRUNED_SCALE`, so it is zero under
    `tfbdl.posterior_mean` and in stochastic passes alike. Returns the fraction of the
    stochastic weights (kernels and Bayesian biases) pruned. Threshold 0 prunes nothing.
    """
    if isinstance(snr_threshold, bool) or not np.isscalar(snr_threshold) or not snr_threshold >= 0:
        raise ValueError(
            f"prune: `snr_threshold` must be a number >= 0, got snr_threshold={snr_threshold!r}."
        )
    posteriors = _prunable_posteriors(model)
    pruned_rho = tf.constant(_softplus_inverse(PRUNED_SCALE), tf.float32)
    pruned = total = 0
    for posterior in posteriors:
        mask = _snr(posterior) < snr_threshold
        posterior.loc.assign(tf.where(mask, 0.0, posterior.loc))
        posterior.untransformed_scale.assign(
            tf.where(mask, pruned_rho, posterior.untransformed_scale)
        )
        pruned += int(tf.reduce_sum(tf.cast(mask, tf.int64)))
        total += int(np.prod(posterior.shape))
    return pruned / total
