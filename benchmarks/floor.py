"""Lower bounds of a mean-field Bayesian layer's step: deterministic layers with two kernels.

Flipout, local reparameterization and any mean-field layer train two parameters per weight
(mu and rho, each with its gradient and Adam slots) and run two linear ops per layer (the
mean and the perturbation, or the mean and the variance). `TwoKernelDense` and
`TwoKernelConv2D` do just that and nothing else, no noise, no softplus, no KL:

    y = activation(linear(x, K1) + linear(x, K2) + b)

so their step time is a floor no such layer can go under on the same machine, and the
benchmark reports it next to each target.
"""

import keras
from keras import ops


class TwoKernels:
    """Mixin placed before a Keras layer class: a second kernel and the sum of two linear ops."""

    def build(self, input_shape):
        super().build(input_shape)
        self.second_kernel = self.add_weight(
            name="second_kernel", shape=self.kernel.shape, initializer=self.kernel_initializer
        )

    def call(self, inputs, training=None):
        outputs = self.linear(inputs, self.kernel) + self.linear(inputs, self.second_kernel)
        if self.use_bias:
            outputs = ops.add(outputs, self.bias)
        return outputs if self.activation is None else self.activation(outputs)


class TwoKernelDense(TwoKernels, keras.layers.Dense):
    def linear(self, inputs, kernel):
        return ops.matmul(inputs, kernel)


class TwoKernelConv2D(TwoKernels, keras.layers.Conv2D):
    def linear(self, inputs, kernel):
        return self.convolution_op(inputs, kernel)
