"""Device placement (a `tf.distribute` strategy for the machine at hand), mixed precision, seeding.

    strategy = tfbdl.runtime.strategy()          # GPU(s) if any, several workers via TF_CONFIG
    tfbdl.runtime.mixed_precision("auto")        # mixed_float16 on tensor-core GPUs
    with strategy.scope():
        model = build_model()
        tfbdl.set_kl_weight(model, num_examples=N)
        model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(dataset, epochs=10)

Under any strategy the objective is the same as on one device: Keras scales each replica's
loss, KL terms included, by 1 / replicas and sums the replicas' gradients, so the KL is
counted once. Under a mixed policy the Bayesian layers keep their variational means and
scales, hyperpriors and KL in float32 (they run with `autocast=False` and cast only what
they feed the matmul/convolution to the compute dtype).

Keras 3.15's own `model.fit` cannot run under a multi-worker strategy (it reduces the first
input batch eagerly and each step's scalar logs along an axis they lack, with plain Keras
layers too). `tfbdl.set_kl_weight`, called in the strategy's scope as above, gives a model
with Bayesian layers the narrow workarounds of `tfbdl._keras_internals`, so plain
`model.fit` trains it on every worker, with `nll` and `kl` logged. The workarounds switch
themselves off with a Keras that no longer needs them.

`tfbdl.runtime.seed(n)`, called first thing in a script, makes a run repeatable: it seeds
Python, NumPy and TensorFlow (so weight initialization, data shuffling and the noise of
tfbdl layers built without `seed=` repeat) and turns on TensorFlow's op determinism.
"""

import json
import logging
import os

import keras
import tensorflow as tf

from tfbdl import _validation

__all__ = ["strategy", "mixed_precision", "seed"]

logger = logging.getLogger("tfbdl")

MIXED_POLICIES = ("mixed_float16", "mixed_bfloat16")


def _tf_config_workers():
    """Number of chief + worker tasks named by the TF_CONFIG environment variable (0 if unset)."""
    raw = os.environ.get("TF_CONFIG", "")
    if not raw.strip():
        return 0
    try:
        cluster = json.loads(raw).get("cluster", {})
    except (json.JSONDecodeError, AttributeError) as error:
        raise ValueError(
            f"TF_CONFIG must be a JSON object with a 'cluster', got TF_CONFIG={raw!r} ({error})."
        ) from None
    return sum(len(cluster.get(task, [])) for task in ("chief", "worker"))


def _enable_memory_growth(gpus):
    """Lets TensorFlow allocate GPU memory as needed instead of all of it at start-up."""
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # the GPU was initialized already; its setting cannot change
            logger.warning(
                "tfbdl.runtime: %s is already initialized; memory growth unchanged.", gpu.name
            )


def _describe(strategy):
    if strategy is tf.distribute.get_strategy() and not tf.distribute.has_strategy():
        devices = [device.name for device in tf.config.list_logical_devices()]
        return f"default strategy (one replica), TensorFlow places ops on {devices}"
    devices = list(strategy.extended.worker_devices)
    text = (f"{type(strategy).__name__}: {strategy.num_replicas_in_sync} replica(s) in sync, "
            f"local devices {devices}")
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is not None and resolver.task_type is not None:
        text += f", this process is {resolver.task_type}:{resolver.task_id}"
    return text


def strategy(devices="auto"):
    """A `tf.distribute.Strategy` for the available devices; logs what it placed where.

    Args:
        devices: "auto" picks, in this order: `MultiWorkerMirroredStrategy` when
            TF_CONFIG names several workers; `MirroredStrategy` over several local
            GPUs; `OneDeviceStrategy` on a single GPU; TensorFlow's default strategy
            (CPU) otherwise. "cpu" forces the default strategy. A list of device names
            (e.g. ["/gpu:0", "/gpu:1"]) mirrors over exactly those.

    GPU memory growth is turned on for every visible GPU. Call this before TensorFlow
    has run anything on a GPU (memory growth can only be set before initialization).

    Example:
        >>> with tfbdl.runtime.strategy().scope():
        ...     model = build_model()
    """
    if isinstance(devices, (list, tuple)):
        if not devices or not all(isinstance(d, str) and d for d in devices):
            raise ValueError(
                "strategy: `devices` must be 'auto', 'cpu' or a non-empty list of device "
                f"names, got devices={devices!r}."
            )
    elif devices not in ("auto", "cpu"):
        raise ValueError(
            "strategy: `devices` must be 'auto', 'cpu' or a list of device names, "
            f"got devices={devices!r}."
        )
    workers = _tf_config_workers()
    gpus = tf.config.list_physical_devices("GPU")
    _enable_memory_growth(gpus)

    if isinstance(devices, (list, tuple)):
        chosen = (tf.distribute.OneDeviceStrategy(devices[0]) if len(devices) == 1
                  else tf.distribute.MirroredStrategy(list(devices)))
    elif devices == "cpu":
        chosen = tf.distribute.get_strategy()
    elif workers > 1:
        chosen = tf.distribute.MultiWorkerMirroredStrategy()
    elif len(gpus) > 1:
        chosen = tf.distribute.MirroredStrategy()
    elif len(gpus) == 1:
        chosen = tf.distribute.OneDeviceStrategy("/gpu:0")
    else:
        chosen = tf.distribute.get_strategy()
    logger.info("tfbdl.runtime: %s", _describe(chosen))
    return chosen


def _auto_policy():
    """mixed_float16 if every GPU has tensor cores (compute capability >= 7.0), else float32."""
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "float32"
    capabilities = [tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0))
                    for gpu in gpus]
    return "mixed_float16" if all(tuple(c) >= (7, 0) for c in capabilities) else "float32"


def mixed_precision(policy="auto"):
    """Sets Keras' global dtype policy; returns it. Call before building the model.

    Args:
        policy: "mixed_float16", "mixed_bfloat16", None (plain float32), or "auto":
            mixed_float16 on GPUs with tensor cores, float32 otherwise (on CPUs
            bfloat16 is usually emulated and no faster).

    Under a mixed policy tfbdl layers compute their matmul/convolution in the compute
    dtype while their variational parameters, hyperpriors and KL stay float32.
    `model.compile` wraps the optimizer in a loss-scale optimizer for mixed_float16.

    Example:
        >>> tfbdl.runtime.mixed_precision("mixed_bfloat16")
        >>> model = build_model()        # layers compute in bfloat16, variables float32
    """
    if policy is not None and policy not in ("auto", "float32") + MIXED_POLICIES:
        raise ValueError(
            "mixed_precision: `policy` must be 'auto', 'mixed_float16', 'mixed_bfloat16', "
            f"'float32' or None, got policy={policy!r}."
        )
    name = _auto_policy() if policy == "auto" else (policy or "float32")
    keras.mixed_precision.set_dtype_policy(name)
    logger.info("tfbdl.runtime: dtype policy %s", name)
    return keras.mixed_precision.dtype_policy()


def seed(n):
    """Makes a run reproducible: seeds every random number generator and fixes op order.

    Call it once, at the start of the program, before building models or data pipelines.
    It calls `keras.utils.set_random_seed(n)`, which seeds Python's `random`, NumPy's
    global generator and TensorFlow's global seed, and resets Keras' global
    `SeedGenerator`. Everything drawn afterwards then repeats from run to run: Keras
    initializers without a seed, `fit`'s shuffling, and the `keras.random.SeedGenerator`
    of every tfbdl layer built without `seed=` (its starting seed is drawn from Python's
    `random`, so layers get the same seeds as long as they are created in the same order).

    It also calls `tf.config.experimental.enable_op_determinism()`, so that ops whose
    kernels otherwise add in a thread-dependent order (mostly on GPU, e.g. some cuDNN
    convolutions and gradient reductions) and parallel `tf.data` maps give bit-identical
    results; ops without a deterministic kernel then raise `UnimplementedError` instead of
    running. This can slow GPU training (and stateful `Dataset.map`s) noticeably, and
    TensorFlow has no public call to switch it off again in the same process.

    A tfbdl layer created with an explicit `seed=` draws its weight noise from its own
    stateless (Philox) seeds, so its sampling is reproducible whether or not `seed` is
    called; `seed` is still needed for the rest (initial weights, shuffling).

    Args:
        n: an integer in [0, 2**32).

    Example:
        >>> tfbdl.runtime.seed(1234)
        >>> model = build_model()       # same initial weights, noise and shuffling every run
    """
    n = _validation.integer(n, "n", "seed", 0, 2**32)
    keras.utils.set_random_seed(n)
    tf.config.experimental.enable_op_determinism()
    logger.info("tfbdl.runtime: seeded Python, NumPy and TensorFlow with %d; op determinism on", n)
