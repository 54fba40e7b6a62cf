"""The benchmark cases: models, training steps, timing and peak-memory measurement.

Imported only inside worker processes. One code path serves Keras 3 (Keras and tfbdl
layers) and tf_keras (tfp.layers, with TF_USE_LEGACY_KERAS=1): a case names a library and
an estimator, and `layer_classes` resolves them to that library's Keras module and classes.

Every timed step is the same `tf.function`: forward pass, softmax cross-entropy plus the
layers' KL losses (weighted 1/N through each library's own mechanism), gradients, and an
Adam update.
"""

import os
import time

import numpy as np
import tensorflow as tf

NUM_TRAINING_EXAMPLES = 60_000  # N of the KL weight 1/N (MNIST's training set)
LIBRARIES = ("keras", "tfbdl", "tfp", "tf_keras", "floor")
ESTIMATORS = ("Reparameterization", "Flipout", "LocalReparameterization")


def layer_classes(library, estimator):
    """(keras module, dense class, conv2d class or None) of `library` with `estimator`."""
    if library == "keras":
        import keras

        return keras, keras.layers.Dense, keras.layers.Conv2D
    if library == "floor":  # two kernels, two linear ops: the floor of a mean-field layer
        import keras

        from benchmarks import floor

        return keras, floor.TwoKernelDense, floor.TwoKernelConv2D
    if library == "tfbdl":
        import keras

        import tfbdl

        conv = getattr(tfbdl.layers, f"Conv2D{estimator}", None)
        return keras, getattr(tfbdl.layers, f"Dense{estimator}"), conv
    if library in ("tfp", "tf_keras") and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        raise ValueError(f"{library} cases run on tf_keras: set TF_USE_LEGACY_KERAS=1.")
    if library == "tf_keras":  # the deterministic baseline of the tfp.layers peers
        import tf_keras

        return tf_keras, tf_keras.layers.Dense, tf_keras.layers.Conv2D
    if library == "tfp":
        import tensorflow_probability as tfp
        import tf_keras

        kl = {"kernel_divergence_fn": _scaled_tfp_kl}
        dense = getattr(tfp.layers, f"Dense{estimator}")
        conv = getattr(tfp.layers, f"Convolution2D{estimator}", None)
        return (
            tf_keras,
            lambda *args, **kwargs: dense(*args, **kl, **kwargs),
            None if conv is None else lambda *args, **kwargs: conv(*args, **kl, **kwargs),
        )
    raise ValueError(f"`library` must be one of {LIBRARIES}, got library={library!r}.")


def _scaled_tfp_kl(posterior, prior, _sample):
    """tfp.layers' default closed-form KL, divided by N as tfbdl's kl_weight does."""
    import tensorflow_probability as tfp

    return tfp.distributions.kl_divergence(posterior, prior) / NUM_TRAINING_EXAMPLES


def build_model(case):
    """The case's model: "mlp" (784-800-800-10), "cnn" (the MNIST CNN) or "square"
    (one width x width layer). Every dense/conv layer comes from the case's library; the
    hidden layers use case["activation"] (default tanh)."""
    keras, dense, conv = layer_classes(case["library"], case.get("estimator"))
    kind, activation = case["kind"], case.get("activation", "tanh")
    if kind == "mlp":
        widths = case.get("widths", (784, 800, 800, 10))
        layers = [keras.Input((widths[0],))]
        layers += [dense(units, activation=activation) for units in widths[1:-1]]
        layers.append(dense(widths[-1]))
    elif kind == "cnn":
        if conv is None:
            raise ValueError(f"{case['library']} has no Conv2D{case.get('estimator')}.")
        filters, units = case.get("filters", 32), case.get("units", 256)
        layers = [
            keras.Input((28, 28, 1)),
            conv(filters, 5, activation=activation),
            keras.layers.MaxPooling2D(2),
            conv(filters, 5, activation=activation),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            dense(units, activation=activation),
            dense(10),
        ]
    elif kind == "square":
        layers = [keras.Input((case["width"],)), dense(case["width"])]
    else:
        raise ValueError(f"`kind` must be 'mlp', 'cnn' or 'square', got kind={kind!r}.")
    model = keras.Sequential(layers)
    if case["library"] == "tfbdl":
        import tfbdl

        tfbdl.set_kl_weight(model, num_examples=NUM_TRAINING_EXAMPLES)
    return model


def synthetic_batch(model, batch_size, seed=0):
    """Standard-normal inputs and random labels (or regression targets) for one batch."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch_size,) + tuple(model.input_shape[1:]), dtype=np.float32)
    outputs = model.output_shape[-1]
    return tf.constant(x), tf.constant(rng.integers(0, outputs, batch_size, dtype=np.int32))


def training_step(model, keras, learning_rate=1e-3, strategy=None):
    """A traced step: cross-entropy + the model's (KL) losses, gradients, Adam update; run
    by `strategy.run` when a strategy is given (its variables must be built in its scope)."""
    optimizer = keras.optimizers.Adam(learning_rate)
    optimizer.build(model.trainable_variables)

    def replica_step(x, y):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
            if model.losses:
                loss += tf.add_n(model.losses)
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    @tf.function(reduce_retracing=True)  # one more trace at most, for an epoch's smaller last batch
    def step(x, y):
        return replica_step(x, y) if strategy is None else strategy.run(replica_step, args=(x, y))

    return step


class TimedCase:
    """A built model and its traced step, timed by `time(warmup, steps)`."""

    def __init__(self, case, strategy=None):
        keras = layer_classes(case["library"], case.get("estimator"))[0]
        keras.utils.set_random_seed(0)
        self.model = build_model(case)
        self.step = training_step(self.model, keras, strategy=strategy)
        self.batch = synthetic_batch(self.model, case["batch"])

    def time(self, warmup, steps):
        """{"wall": [...], "cpu": [...]}: wall and process CPU seconds of each timed step.

        CPU time (all threads of this process) hardly changes when other processes compete
        for the cores, wall time does: on a shared machine it is the steadier cross-check.
        """
        for _ in range(warmup):
            self.step(*self.batch).numpy()
        times = {"wall": [], "cpu": []}
        for _ in range(steps):
            wall, cpu = time.perf_counter(), time.process_time()
            self.step(*self.batch).numpy()  # .numpy() waits for the step to finish
            times["cpu"].append(time.process_time() - cpu)
            times["wall"].append(time.perf_counter() - wall)
        return times


def _status_kib(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}.")


def peak_memory_above_baseline(case, steps):
    """Peak resident memory (bytes) of building `case` and running `steps` training steps,
    above the process's resident memory after imports and data.

    Linux's own high-water mark (VmHWM) is exact, with no sampling gap: writing 5 to
    /proc/self/clear_refs resets it to the current RSS once imports and data are in place.
    Call it in a fresh process per case, so no allocator cache from an earlier case hides
    or adds memory.
    """
    keras = layer_classes(case["library"], case.get("estimator"))[0]
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((case["batch"], case["width"]), dtype=np.float32))
    y = tf.constant(rng.integers(0, case["width"], case["batch"], dtype=np.int32))
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    baseline = _status_kib("VmRSS")
    model = build_model(case)
    step = training_step(model, keras)
    for _ in range(steps):
        step(x, y).numpy()
    return (_status_kib("VmHWM") - baseline) * 1024


def prediction_times(images, num_samples, batch_size, repeats):
    """Seconds for `tfbdl.predict(num_samples)` with the Bayesian (Flipout) MNIST CNN, in its
    default mode (one weight sample per batch) and with the layers' Flipout estimator, and
    for `num_samples` deterministic passes of the same CNN built from keras.layers, over
    `images`.

    The deterministic passes are the cheapest plain way: one traced forward per batch,
    called `num_samples` times. The three alternate within each repeat, after a warm-up
    (tracing) on one batch.
    """
    import keras

    import tfbdl

    keras.utils.set_random_seed(0)
    bayesian = build_model({"kind": "cnn", "library": "tfbdl", "estimator": "Flipout"})
    plain = build_model({"kind": "cnn", "library": "keras"})
    for model in (bayesian, plain):  # probabilities out, as a classifier's predict gives
        model.layers[-1].activation = keras.activations.softmax
    forward = tf.function(lambda x: plain(x, training=False))
    batches = [images[start:start + batch_size] for start in range(0, len(images), batch_size)]

    def deterministic(batches):
        for batch in batches:
            batch = tf.constant(batch)
            for _ in range(num_samples):
                forward(batch).numpy()

    def monte_carlo(sampling):
        def predict(batches):
            tfbdl.predict(bayesian, np.concatenate(batches), num_samples=num_samples,
                          batch_size=batch_size, progress=False, sampling=sampling)
        return predict

    runs = {"deterministic": deterministic, "tfbdl.predict": monte_carlo("per_batch"),
            "tfbdl.predict, sampling='estimator'": monte_carlo("estimator")}
    for run in runs.values():  # warm-up (tracing) on one batch
        run(batches[:1])
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run(batches)
            times[name].append(time.perf_counter() - start)
    return times
