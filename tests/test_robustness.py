"""Numerical robustness: 5000 training steps of a small Bayesian MLP on two moons under each
built-in prior and estimator, in float32, mixed_float16 and mixed_bfloat16, with inputs
scaled by 1 and by 1e4: the loss, the KL and every weight stay finite."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfbdl

L = tfbdl.layers
STEPS = 5000
PRIORS = {
    "gaussian": lambda: tfbdl.priors.Gaussian(1.0),
    "hierarchical": lambda: tfbdl.priors.HalfNormalHierarchical(1.0),
    "spike_and_slab": lambda: tfbdl.priors.SpikeAndSlab(),
    "informed": lambda: tfbdl.priors.Informed(0.0, 0.5),
    "tfp_laplace": lambda: tfp.distributions.Laplace(0.0, 1.0),  # a DistributionPrior, Monte Carlo KL
}
ESTIMATORS = (L.DenseFlipout, L.DenseReparameterization, L.DenseLocalReparameterization)


@pytest.fixture(params=["float32", "mixed_float16", "mixed_bfloat16"])
def policy(request):
    keras.mixed_precision.set_dtype_policy(request.param)
    try:
        yield request.param
    finally:
        keras.mixed_precision.set_dtype_policy("float32")


def _finite(value):
    return bool(np.all(np.isfinite(keras.ops.convert_to_numpy(value))))


@pytest.mark.slow
@pytest.mark.parametrize("input_scale", [1.0, 1e4])
@pytest.mark.parametrize("prior", sorted(PRIORS))
def test_5000_steps_keep_loss_kl_and_weights_finite(policy, prior, input_scale):
    (x, y), _ = tfbdl.data.two_moons(200, 0.2, seed=0)
    x = (x * input_scale).astype("float32")
    for layer in ESTIMATORS:
        model = keras.Sequential([
            keras.Input((2,)),
            layer(8, activation="tanh", prior=PRIORS[prior](), seed=0),
            layer(1, activation="sigmoid", prior=PRIORS[prior](), seed=1, dtype="float32"),
        ])
        tfbdl.set_kl_weight(model, num_examples=len(x))
        model.compile(keras.optimizers.Adam(0.01), "binary_crossentropy", steps_per_execution=100)
        batches = tf.data.Dataset.from_tensor_slices((x, y)).batch(len(x) // 2).repeat()
        guard = tfbdl.callbacks.TerminateOnNonFiniteELBO()
        history = model.fit(batches, steps_per_epoch=STEPS, epochs=1, verbose=0, callbacks=[guard])
        where = f"{layer.__name__}, prior {prior}, {policy}, inputs x{input_scale:g}"
        assert guard.message is None, f"{where}: {guard.message}"
        assert all(np.isfinite(history.history[key]).all() for key in ("loss", "kl", "nll")), where
        assert all(_finite(weight) for weight in model.weights), where
