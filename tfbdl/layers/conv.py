"""Bayesian twins of `keras.layers.Conv1D/2D/3D` with reparameterization and Flipout."""

import keras
from keras import ops

from tfbdl.layers import estimators
from tfbdl.layers.base import BayesianLayer

register = keras.saving.register_keras_serializable(package="tfbdl")


class BayesianConv(BayesianLayer):
    """Convolution family hooks; mixed before `keras.layers.Conv{1,2,3}D`."""

    @property
    def channel_axis(self):
        return -1 if self.data_format == "channels_last" else 1

    def weight_shapes(self, input_shape):
        input_channel = input_shape[self.channel_axis]
        self.input_spec = keras.layers.InputSpec(
            min_ndim=self.rank + 2, axes={self.channel_axis: input_channel}
        )
        if input_channel % self.groups != 0:
            raise ValueError(
                "The number of input channels must be evenly divisible by `groups`, got "
                f"groups={self.groups} for {input_channel} input channels "
                f"(input shape {tuple(input_shape)})."
            )
        # Validates the input shape (e.g. a kernel larger than the input).
        self.compute_output_shape(input_shape)
        kernel_shape = self.kernel_size + (input_channel // self.groups, self.filters)
        return kernel_shape, (self.filters,)

    def linear(self, inputs, kernel):
        if self.padding == "causal":  # Conv1D only: left-pad, then a valid convolution.
            inputs = ops.pad(inputs, self._compute_causal_padding())
            return ops.conv(
                inputs, kernel, strides=list(self.strides), padding="valid",
                dilation_rate=self.dilation_rate, data_format=self.data_format,
            )
        return self.convolution_op(inputs, kernel)

    def add_bias(self, outputs, bias):
        if self.data_format == "channels_last":
            bias_shape = (1,) * (self.rank + 1) + (self.filters,)
        else:
            bias_shape = (1, self.filters) + (1,) * self.rank
        return ops.add(outputs, ops.reshape(bias, bias_shape))


_REPARAMETERIZATION_DOC = """{twin} with one kernel sample W ~ q(W) per batch (reparameterization).

    W = mu + sigma * eps,   eps ~ N(0, I),   y = activation(conv(x, W) + b)

Blundell et al. 2015, "Weight Uncertainty in Neural Networks". Takes the arguments of
`keras.layers.{twin}` plus `prior=`, `bias_prior=`, `posterior=`, `seed=`.

Example:
    >>> layer = tfbdl.layers.{name}(32, {kernel_size}, activation="tanh")
"""

_FLIPOUT_DOC = """{twin} with Flipout: per-example sign-flipped kernel perturbations.

    y_n = activation(conv(x_n, mu) + conv(x_n * s_n, Delta W) * r_n + b),
    Delta W = sigma * eps,   s_n (per input channel), r_n (per filter) ~ Rademacher

Wen et al. 2018, "Flipout: Efficient Pseudo-Independent Weight Perturbations on
Mini-Batches". Takes the arguments of `keras.layers.{twin}` plus `prior=`, `bias_prior=`,
`posterior=`, `seed=`.

Example:
    >>> layer = tfbdl.layers.{name}(32, {kernel_size}, activation="tanh")
"""


def _doc(template, name, twin, rank):
    return template.format(name=name, twin=twin, kernel_size=(5,) * rank)


@register
class Conv1DReparameterization(BayesianConv, keras.layers.Conv1D):
    __doc__ = _doc(_REPARAMETERIZATION_DOC, "Conv1DReparameterization", "Conv1D", 1)
    estimator = estimators.reparameterization


@register
class Conv2DReparameterization(BayesianConv, keras.layers.Conv2D):
    __doc__ = _doc(_REPARAMETERIZATION_DOC, "Conv2DReparameterization", "Conv2D", 2)
    estimator = estimators.reparameterization


@register
class Conv3DReparameterization(BayesianConv, keras.layers.Conv3D):
    __doc__ = _doc(_REPARAMETERIZATION_DOC, "Conv3DReparameterization", "Conv3D", 3)
    estimator = estimators.reparameterization


@register
class Conv1DFlipout(BayesianConv, keras.layers.Conv1D):
    __doc__ = _doc(_FLIPOUT_DOC, "Conv1DFlipout", "Conv1D", 1)
    estimator = estimators.flipout


@register
class Conv2DFlipout(BayesianConv, keras.layers.Conv2D):
    __doc__ = _doc(_FLIPOUT_DOC, "Conv2DFlipout", "Conv2D", 2)
    estimator = estimators.flipout


@register
class Conv3DFlipout(BayesianConv, keras.layers.Conv3D):
    __doc__ = _doc(_FLIPOUT_DOC, "Conv3DFlipout", "Conv3D", 3)
    estimator = estimators.flipout
