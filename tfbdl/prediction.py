"""Monte Carlo posterior predictive: `tfbdl.predict(model, x, num_samples=S)`.

Runs S stochastic forward passes (a fresh weight sample each) and summarizes them, per
example, without ever holding all S predictions (unless `return_samples=True`):

    mean                p_bar = 1/S sum_s p_s                 (predictive probabilities or mean)
    std                 sqrt(1/S sum_s (p_s - p_bar)^2)       (per class or per output)
    entropy             H[p_bar] = -sum_c p_bar_c log p_bar_c            (total uncertainty)
    aleatoric           1/S sum_s H[p_s]                      (expected entropy)
    mutual_information  H[p_bar] - 1/S sum_s H[p_s] >= 0      (epistemic; Depeweg et al. 2018,
                                                               Gal 2016 ch. 3.3)

The running sums use Welford's update (numerically stable variance). All S passes for one
batch run inside one traced `tf.function` (a `tf.while_loop`, optionally XLA-compiled),
so a pass costs no Python. A loop, not a tiled batch: each iteration draws fresh weights,
which is right for every estimator (a tiled batch would share one reparameterization
sample). `num_samples=0` is one deterministic pass with the posterior-mean weights.

    result = tfbdl.predict(model, x_test, num_samples=100)
    result.mean.shape, result.mutual_information.shape   # (N, C), (N,)
    tfbdl.metrics.expected_calibration_error(y_test, result.mean)
"""

import contextlib
import dataclasses
import weakref

import keras
import numpy as np
import tensorflow as tf

from tfbdl import _keras_internals
from tfbdl.model_tools import bayesian_layers, posterior_mean

__all__ = ["predict", "PredictiveResult", "OUTPUTS"]

OUTPUTS = ("probabilities", "logits", "regression")
_SUM_TOLERANCE = 1e-3  # |sum_c p_c - 1| allowed for float32 probability outputs

# model -> {key: traced step}. The steps hold only a weak reference to their model.
_STEPS = weakref.WeakKeyDictionary()


@dataclasses.dataclass(frozen=True)
class PredictiveResult:
    """Summary of S posterior predictive samples for N examples.

    Classification (`output` "probabilities" or "logits"): `mean`, `std` are (N, C) (a single
    sigmoid unit becomes the two classes [1 - p, p]); `entropy`, `aleatoric`,
    `mutual_information` (nats) and `predicted_class` are (N,). Regression: `mean`, `std`
    have the output's shape and the rest is None. `samples` is (S, N, ...) only when asked.
    """

    mean: np.ndarray
    std: np.ndarray
    entropy: np.ndarray | None
    aleatoric: np.ndarray | None
    mutual_information: np.ndarray | None
    predicted_class: np.ndarray | None
    samples: np.ndarray | None
    output: str
    num_samples: int


# ---------------------------------------------------------------------- accumulators


def _entropy(p):
    """-sum_c p_c log p_c over the last axis (0 log 0 = 0)."""
    return -tf.reduce_sum(tf.math.xlogy(p, p), axis=-1)


def initial_state(prediction, classification):
    """Running sums after the first sample: (count, mean, M2, sum of entropies)."""
    sum_entropy = _entropy(prediction) if classification else tf.zeros(())
    return (tf.constant(1.0), prediction, tf.zeros_like(prediction), sum_entropy)


def update_state(state, prediction, classification):
    """Welford's update with one more sample (Welford 1962):
    mean_k = mean_{k-1} + (p - mean_{k-1}) / k,  M2_k = M2_{k-1} + (p - mean_{k-1}) (p - mean_k)."""
    count, mean, m2, sum_entropy = state
    count = count + 1.0
    delta = prediction - mean
    mean = mean + delta / count
    m2 = m2 + delta * (prediction - mean)
    if classification:
        sum_entropy = sum_entropy + _entropy(prediction)
    return (count, mean, m2, sum_entropy)


def summarize_state(state, classification):
    """The predictive quantities (NumPy) from the running sums."""
    count, mean, m2, sum_entropy = state
    summary = {"mean": mean.numpy(), "std": tf.sqrt(tf.maximum(m2 / count, 0.0)).numpy()}
    if classification:
        entropy = _entropy(mean)
        aleatoric = sum_entropy / count
        # Mutual information is >= 0 (Jensen); clip float32 round-off below zero.
        summary.update(
            entropy=entropy.numpy(),
            aleatoric=aleatoric.numpy(),
            mutual_information=tf.maximum(entropy - aleatoric, 0.0).numpy(),
        )
    return summary


def to_predictions(outputs, output):
    """Model outputs as float32 probabilities (N, C) or regression values."""
    outputs = tf.cast(outputs, tf.float32)
    if output == "regression":
        return outputs
    binary = outputs.shape[-1] == 1
    if output == "logits":
        outputs = tf.sigmoid(outputs) if binary else tf.nn.softmax(outputs, axis=-1)
    if binary:
        outputs = tf.concat([1.0 - outputs, outputs], axis=-1)
    return outputs


# ---------------------------------------------------------------------- traced step


def _make_step(model, output, num_samples, return_samples, jit_compile):
    """A tf.function: batch -> (running sums, (S, B, ...) samples or a placeholder), S passes."""
    model_ref = weakref.ref(model)
    classification = output != "regression"

    def sample(x):
        return to_predictions(model_ref()(x, training=False), output)

    @tf.function(jit_compile=jit_compile, reduce_retracing=True)
    def step(x):
        first = sample(x)
        state = initial_state(first, classification)
        # All samples only when asked for; otherwise a placeholder rides through the loop.
        samples = (
            tf.TensorArray(tf.float32, size=num_samples, element_shape=first.shape).write(0, first)
            if return_samples
            else tf.zeros(())
        )

        def body(i, state, samples):
            prediction = sample(x)
            if return_samples:
                samples = samples.write(i, prediction)
            return i + 1, update_state(state, prediction, classification), samples

        _, state, samples = tf.while_loop(
            lambda i, *_: i < num_samples, body, (tf.constant(1), state, samples)
        )
        return state, (samples.stack() if return_samples else samples)

    return step


def _cached_step(model, output, num_samples, return_samples, jit_compile):
    """One traced step per (model, settings), so repeated calls don't retrace (the inference
    mode is a variable the traced step reads)."""
    key = (output, num_samples, return_samples, jit_compile)
    steps = _STEPS.setdefault(model, {})
    if key not in steps:
        steps[key] = _make_step(model, output, num_samples, return_samples, jit_compile)
    return steps[key]


# ---------------------------------------------------------------------- inputs


def _final_layer(model):
    """The layer producing the model's (single) output, looking inside nested models."""
    outputs = getattr(model, "outputs", None) if isinstance(model, keras.Model) else None
    if outputs and len(outputs) == 1:
        layer = _keras_internals.output_layer(outputs[0])
    elif isinstance(model, keras.Sequential) and model.layers:
        layer = model.layers[-1]
    else:
        return None
    return _final_layer(layer) if isinstance(layer, keras.Model) else layer


def detect_output(model):
    """ "probabilities" for a final softmax/sigmoid, else a ValueError asking for `output=`."""
    layer = _final_layer(model)
    if isinstance(layer, keras.layers.Softmax):
        return "probabilities"
    activation = getattr(layer, "activation", None)
    if activation in (keras.activations.softmax, keras.activations.sigmoid):
        return "probabilities"
    raise ValueError(
        f"predict: cannot tell from model {model.name!r}'s final layer "
        f"{getattr(layer, 'name', None)!r} (activation "
        f"{getattr(activation, '__name__', activation)!r}) whether it outputs logits or "
        f"regression values; pass output='logits' or output='regression' (one of {OUTPUTS})."
    )


def _check_int(value, argument, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(
            f"predict: `{argument}` must be an integer >= {minimum}, got {argument}={value!r}."
        )


def _check_x_shape(model, shape):
    """ValueError if an input of `shape` (batch first) cannot feed the model's single input."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return  # a subclassed model without a declared input
    if not inputs or len(inputs) != 1:
        return
    expected = tuple(inputs[0].shape[1:])
    got = tuple(shape[1:])
    if len(got) != len(expected) or any(
        e is not None and g is not None and e != g for e, g in zip(expected, got)
    ):
        raise ValueError(
            f"predict: `x` has shape {tuple(shape)}, but model {model.name!r} expects inputs "
            f"of shape (batch,) + {expected}."
        )


def _batches(model, x, batch_size):
    """(iterator over input batches, number of batches or None), after checking `x`."""
    if isinstance(x, tf.data.Dataset):
        spec = keras.utils.unpack_x_y_sample_weight(x.element_spec)[0]
        if isinstance(spec, tf.TensorSpec):
            _check_x_shape(model, spec.shape)
        cardinality = int(x.cardinality())
        batches = (keras.utils.unpack_x_y_sample_weight(element)[0] for element in x)
        return batches, (cardinality if cardinality >= 0 else None)
    x = np.asarray(x)
    if x.ndim == 0 or len(x) == 0:
        raise ValueError(f"predict: `x` must be a non-empty batch of inputs, got shape {x.shape}.")
    _check_x_shape(model, x.shape)
    if np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32, copy=False)
    starts = range(0, len(x), batch_size)
    return (tf.convert_to_tensor(x[start : start + batch_size]) for start in starts), len(starts)


# ---------------------------------------------------------------------- predict


def predict(
    model,
    x,
    num_samples=100,
    batch_size=500,
    output="auto",
    return_samples=False,
    progress=True,
    jit_compile=False,
):
    """Posterior predictive summary of `model` on `x` from `num_samples` stochastic passes.

    Args:
        model: a Keras model (usually with tfbdl layers) with one output.
        x: a NumPy array (streamed in batches of `batch_size`) or a batched `tf.data.Dataset`
            of inputs or of (inputs, labels, ...) tuples.
        num_samples: S >= 1 forward passes, each with fresh weights; 0 means one pass with
            the posterior-mean weights (std and mutual information are then 0).
        output: "probabilities" (softmax or sigmoid outputs), "logits", or "regression";
            "auto" detects probabilities from a final softmax/sigmoid activation.
        return_samples: also return all predictions as `samples`, shape (S, N, ...);
            otherwise memory is O(N) (running sums per batch, never S x N x C).
        progress: show a `keras.utils.Progbar` over batches.
        jit_compile: XLA-compile the per-batch sampling loop.

    Returns:
        A `PredictiveResult` (see its docstring and the module docstring for the math).

    Example:
        >>> result = tfbdl.predict(model, x_test, num_samples=100)
        >>> result.predicted_class, result.mutual_information
    """
    stochastic_layers = bayesian_layers(model)  # also checks that `model` is a Keras model
    _check_int(num_samples, "num_samples", 0)
    _check_int(batch_size, "batch_size", 1)
    if output == "auto":
        output = detect_output(model)
    elif output not in OUTPUTS:
        raise ValueError(
            f"predict: `output` must be 'auto' or one of {OUTPUTS}, got output={output!r}."
        )
    batches, num_batches = _batches(model, x, batch_size)

    deterministic = num_samples == 0
    mode = (
        posterior_mean(model) if deterministic and stochastic_layers else contextlib.nullcontext()
    )
    with mode:
        step = _cached_step(model, output, max(num_samples, 1), return_samples, jit_compile)
        parts, samples = [], []
        progbar = keras.utils.Progbar(num_batches, unit_name="batch") if progress else None
        for index, batch in enumerate(batches):
            state, batch_samples = step(batch)
            parts.append(summarize_state(state, output != "regression"))
            if index == 0:
                _check_probabilities(parts[0]["mean"], output, model)
            if return_samples:
                samples.append(batch_samples.numpy())
            if progbar is not None:
                progbar.update(index + 1)
    if not parts:
        raise ValueError("predict: `x` yielded no batches.")
    summary = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    classification = output != "regression"
    return PredictiveResult(
        mean=summary["mean"],
        std=summary["std"],
        entropy=summary.get("entropy"),
        aleatoric=summary.get("aleatoric"),
        mutual_information=summary.get("mutual_information"),
        predicted_class=np.argmax(summary["mean"], axis=-1) if classification else None,
        samples=np.concatenate(samples, axis=1) if return_samples else None,
        output=output,
        num_samples=num_samples,
    )


def _check_probabilities(mean, output, model):
    if output != "probabilities":
        return
    worst = np.abs(mean.sum(axis=-1) - 1.0).max()
    if worst > _SUM_TOLERANCE:
        raise ValueError(
            f"predict: output='probabilities', but model {model.name!r}'s outputs do not sum to 1 "
            f"over the last axis (off by up to {worst:.3g}); several sigmoid units (multi-label) "
            "are not class probabilities. Pass output='logits' or output='regression'."
        )
