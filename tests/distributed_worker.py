"""Worker processes for the distribution tests in test_runtime.py (run as scripts).

    python distributed_worker.py mirrored OUT.json
        Two logical CPU devices; one SGD(learning_rate=1) step of the same Bayesian model on
        the same batch with TensorFlow's default strategy and with MirroredStrategy over
        both devices. Writes the logged loss/nll/kl of each, the gradients (weights before
        minus after the step), and the KL / N recomputed from the variables.

    TF_CONFIG=... python distributed_worker.py multiworker OUT.npz
        One worker of a MultiWorkerMirroredStrategy cluster (tfbdl.runtime.strategy picks
        it from TF_CONFIG); trains 2 epochs with plain `model.fit` and saves the logged
        loss, nll and kl, the KL / N of its final variables, and the variables.
"""

import json
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

BATCH = 8
NUM_EXAMPLES = 64  # N in the KL weight


def _fixed_batch():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, 3)).astype("float32")
    y = (rng.uniform(size=(BATCH, 1)) < 0.5).astype("float32")
    return x, y


def _build(learning_rate):
    import keras

    import tfbdl

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((3,)),
            # Reparameterization: one kernel sample per batch, drawn from the layer's seed,
            # so each replica sees the same sample as the single device does.
            tfbdl.layers.DenseReparameterization(4, activation="tanh", seed=1, bias_prior=tfbdl.priors.Gaussian()),
            tfbdl.layers.DenseReparameterization(1, activation="sigmoid", seed=2, bias_prior=tfbdl.priors.Gaussian()),
        ]
    )
    tfbdl.set_kl_weight(model, num_examples=NUM_EXAMPLES)
    model.compile(keras.optimizers.SGD(learning_rate), "binary_crossentropy")
    return model


def _one_step(model, x, y):
    before = [v.numpy().copy() for v in model.trainable_variables]
    # fit (not train_on_batch, which hands every replica the whole batch) splits the
    # batch over the replicas: each sees BATCH / replicas examples.
    history = model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    after = [v.numpy() for v in model.trainable_variables]
    gradients = [b - a for b, a in zip(before, after)]  # SGD with learning rate 1
    return {k: v[0] for k, v in history.history.items()}, gradients


def mirrored(out_path):
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import tfbdl
    from training_support import model_kl_per_example

    x, y = _fixed_batch()
    single = _build(1.0)
    kl_expected = model_kl_per_example(single, NUM_EXAMPLES)
    single_logs, single_gradients = _one_step(single, x, y)

    strategy = tfbdl.runtime.strategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        mirrored_model = _build(1.0)
    mirrored_logs, mirrored_gradients = _one_step(mirrored_model, x, y)
    result = {
        "replicas": strategy.num_replicas_in_sync,
        "mirrored_strategy": isinstance(strategy, tf.distribute.MirroredStrategy),
        "kl_expected": kl_expected,
        "single": single_logs,
        "mirrored": mirrored_logs,
        "max_gradient": max(float(np.abs(g).max()) for g in single_gradients),
        "max_gradient_difference": max(
            float(np.abs(a - b).max()) for a, b in zip(single_gradients, mirrored_gradients)
        ),
        "gradient_names": [v.path for v in single.trainable_variables],
    }
    with open(out_path, "w") as f:
        json.dump(result, f)


def multiworker(out_path):
    import tfbdl

    strategy = tfbdl.runtime.strategy()
    with strategy.scope():
        model = _build(0.05)
    initial = [v.numpy().copy() for v in model.trainable_variables]
    rng = np.random.default_rng(1)
    x = rng.normal(size=(NUM_EXAMPLES, 3)).astype("float32")
    y = (x[:, :1] > 0).astype("float32")
    # Plain model.fit: each worker reads its shard of the batches (auto-sharding by data).
    history = model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0).history
    final = [v.numpy() for v in model.trainable_variables]
    np.savez(
        out_path,
        replicas=strategy.num_replicas_in_sync,
        multi_worker=isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy),
        loss=history["loss"],
        nll=history["nll"],
        kl=history["kl"],
        kl_expected=_kl_per_example(model),
        moved=max(float(np.abs(a - b).max()) for a, b in zip(initial, final)),
        **{f"variable_{i}": v for i, v in enumerate(final)},
    )


def _kl_per_example(model):
    from training_support import model_kl_per_example

    return model_kl_per_example(model, NUM_EXAMPLES)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    {"mirrored": mirrored, "multiworker": multiworker}[sys.argv[1]](sys.argv[2])
