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
so a pass costs no Python. A loop, not a tiled batch: each iteration draws fresh weights.

By default (`sampling="per_batch"`) each pass draws one weight sample for the whole batch
(`tfbdl.one_sample_per_batch`): one matmul or convolution per layer, where Flipout and
local reparameterization spend two. Under every estimator each example's weights are
distributed as q(W), so the per-example quantities above have the same distribution
either way (tests/test_prediction_sampling.py checks it against the Monte Carlo standard
error); `sampling="estimator"` keeps the layers' training estimators. Only `samples`
(with `return_samples=True`) differ jointly: within a batch, one pass is then one
posterior draw of the whole function. `num_samples=0` is one deterministic pass with the
posterior-mean weights.

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
from tfbdl._validation import integer, probability_sum_tolerance
from tfbdl.model_tools import bayesian_layers, one_sample_per_batch, posterior_mean

__all__ = ["predict", "PredictiveResult", "OUTPUTS"]

OUTPUTS = ("probabilities", "logits", "regression")
SAMPLING = ("per_batch", "estimator")

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


def _compiled_from_logits(model):
    """True if the model was compiled with a single loss that takes logits (`from_logits=True`)."""
    loss = getattr(model, "loss", None)
    if not isinstance(loss, keras.losses.Loss):
        return False
    return bool(loss.get_config().get("from_logits", False))


def detect_output(model):
    """ "probabilities" for a final softmax/sigmoid, "logits" for a final linear layer of a
    model compiled with a `from_logits=True` loss, else a ValueError asking for `output=`."""
    layer = _final_layer(model)
    if isinstance(layer, keras.layers.Softmax):
        return "probabilities"
    activation = getattr(layer, "activation", None)
    if activation in (keras.activations.softmax, keras.activations.sigmoid):
        return "probabilities"
    if activation in (None, keras.activations.linear) and _compiled_from_logits(model):
        return "logits"
    raise ValueError(
        f"predict: cannot tell from model {model.name!r}'s final layer "
        f"{getattr(layer, 'name', None)!r} (activation "
        f"{getattr(activation, '__name__', activation)!r}) whether it outputs logits or "
        f"regression values; pass output='logits' or output='regression' (one of {OUTPUTS})."
    )


def _declared_inputs(model):
    """The model's symbolic inputs, or None for a subclassed model that declares none."""
    try:
        return list(model.inputs) or None
    except (AttributeError, ValueError):
        return None


def _check_x_shapes(model, shapes):
    """ValueError unless the input shapes (batch first, one per model input) fit the model's."""
    inputs = _declared_inputs(model)
    if inputs is None:
        return
    if len(shapes) != len(inputs):
        raise ValueError(
            f"predict: model {model.name!r} has {len(inputs)} inputs, but `x` holds "
            f"{len(shapes)}; pass a list with one array per input, in the model's input order."
        )
    for position, (tensor, shape) in enumerate(zip(inputs, shapes)):
        expected, got = tuple(tensor.shape[1:]), tuple(shape[1:])
        if len(got) != len(expected) or any(
            e is not None and g is not None and e != g for e, g in zip(expected, got)
        ):
            where = "`x`" if len(inputs) == 1 else f"`x[{position}]`"
            raise ValueError(
                f"predict: {where} has shape {tuple(shape)}, but model {model.name!r} expects "
                f"inputs of shape (batch,) + {expected}."
            )


def _input_arrays(model, x):
    """`x` as a list of NumPy arrays, one per model input (a dict is matched by input name)."""
    inputs = _declared_inputs(model) or []
    if isinstance(x, dict):
        names = [tensor.name for tensor in inputs]
        if sorted(x) != sorted(names):
            raise ValueError(
                f"predict: `x` is a dict with keys {sorted(x)}, but model {model.name!r} has "
                f"inputs named {names}."
            )
        x = [x[name] for name in names]
    parts = list(x) if len(inputs) > 1 and isinstance(x, (list, tuple)) else [x]
    arrays = [np.asarray(part) for part in parts]
    if any(array.ndim == 0 or len(array) == 0 for array in arrays):
        raise ValueError(
            f"predict: `x` must be a non-empty batch of inputs, got shape(s) "
            f"{[array.shape for array in arrays]}."
        )
    if len({len(array) for array in arrays}) > 1:
        raise ValueError(
            "predict: the arrays in `x` must hold the same number of examples, got "
            f"{[len(array) for array in arrays]}."
        )
    _check_x_shapes(model, [array.shape for array in arrays])
    arrays = [
        array.astype(np.float32, copy=False) if np.issubdtype(array.dtype, np.floating) else array
        for array in arrays
    ]
    for array in arrays:
        if np.issubdtype(array.dtype, np.floating):
            _check_finite_rows(array, "`x` has NaN or infinite values", 0)
    return arrays


def _check_finite_rows(values, problem, offset):
    """ValueError naming the rows of `values` (offset into `x`) that hold a NaN or inf."""
    bad = np.flatnonzero(~np.isfinite(values.reshape(len(values), -1)).all(axis=1))
    if bad.size:
        raise ValueError(
            f"predict: {problem} in {bad.size} example(s) (rows {(offset + bad[:5]).tolist()}"
            f"{', ...' if bad.size > 5 else ''} of `x`); their predictions would be NaN. "
            "Remove or impute those inputs (or check the model's weights for divergence)."
        )


def _dataset_batches(model, x, steps):
    """(iterator over the input batches of a dataset, number of batches or None)."""
    if steps is not None:
        x = x.take(steps)
    elif x.cardinality() == tf.data.INFINITE_CARDINALITY:
        raise ValueError(
            "predict: `x` is an infinite tf.data.Dataset (it repeats forever); pass "
            "steps=<number of batches>, or drop the .repeat()."
        )
    spec = keras.utils.unpack_x_y_sample_weight(x.element_spec)[0]
    specs = spec if isinstance(spec, (list, tuple)) else [spec]
    if all(isinstance(item, tf.TensorSpec) for item in specs):
        _check_x_shapes(model, [item.shape for item in specs])
    cardinality = int(x.cardinality())
    batches = (keras.utils.unpack_x_y_sample_weight(element)[0] for element in x)
    return batches, (cardinality if cardinality >= 0 else None)


def _batches(model, x, batch_size, steps):
    """(iterator over input batches, number of batches or None), after checking `x`."""
    if isinstance(x, tf.data.Dataset):
        return _dataset_batches(model, x, steps)
    arrays = _input_arrays(model, x)
    starts = range(0, len(arrays[0]), batch_size)[:steps]

    def batch(start):
        tensors = [tf.convert_to_tensor(array[start : start + batch_size]) for array in arrays]
        return tensors[0] if len(tensors) == 1 else tensors

    return (batch(start) for start in starts), len(starts)


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
    steps=None,
    sampling="per_batch",
):
    """Posterior predictive summary of `model` on `x` from `num_samples` stochastic passes.

    Args:
        model: a Keras model (usually with tfbdl layers) with one output.
        x: a NumPy array (streamed in batches of `batch_size`; a list of arrays, or a dict
            keyed by input name, for a model with several inputs) or a batched
            `tf.data.Dataset` of inputs or of (inputs, labels, ...) tuples. Inputs with NaN
            or inf, and predictions that come out NaN or inf, raise a ValueError naming
            the rows.
        num_samples: S >= 1 forward passes, each with fresh weights; 0 means one pass with
            the posterior-mean weights (std and mutual information are then 0).
        output: "probabilities" (softmax or sigmoid outputs), "logits", or "regression";
            "auto" detects probabilities from a final softmax/sigmoid activation, and
            logits from a final linear layer of a model compiled with a
            `from_logits=True` loss. Probabilities must sum to 1 in every batch, within
            the rounding of the output's dtype (`tfbdl._validation.probability_sum_tolerance`).
        return_samples: also return all predictions as `samples`, shape (S, N, ...);
            otherwise memory is O(N) (running sums per batch, never S x N x C).
        progress: show a `keras.utils.Progbar` over batches.
        jit_compile: XLA-compile the per-batch sampling loop.
        steps: use only this many batches of `x` (as in `keras.Model.predict`); needed
            for an infinite (repeated) dataset, which is refused without it.
        sampling: "per_batch" (default): each pass draws one weight sample shared by the
            batch, one linear op per layer; "estimator": each layer's own estimator
            (Flipout's per-example perturbations, ...), about twice the cost. Per-example
            results have the same distribution (module docstring).

    Returns:
        A `PredictiveResult` (see its docstring and the module docstring for the math).

    Example:
        >>> result = tfbdl.predict(model, x_test, num_samples=100)
        >>> result.predicted_class, result.mutual_information
    """
    stochastic_layers = bayesian_layers(model)  # also checks that `model` is a Keras model
    integer(num_samples, "num_samples", "predict", 0)
    integer(batch_size, "batch_size", "predict", 1)
    if steps is not None:
        integer(steps, "steps", "predict", 1)
    if output == "auto":
        output = detect_output(model)
    elif output not in OUTPUTS:
        raise ValueError(
            f"predict: `output` must be 'auto' or one of {OUTPUTS}, got output={output!r}."
        )
    if sampling not in SAMPLING:
        raise ValueError(f"predict: `sampling` must be one of {SAMPLING}, got sampling={sampling!r}.")
    batches, num_batches = _batches(model, x, batch_size, steps)

    if not stochastic_layers or (num_samples > 0 and sampling == "estimator"):
        mode = contextlib.nullcontext()
    else:
        mode = posterior_mean(model) if num_samples == 0 else one_sample_per_batch(model)
    with mode:
        step = _cached_step(model, output, max(num_samples, 1), return_samples, jit_compile)
        parts, samples, offset = [], [], 0
        progbar = keras.utils.Progbar(num_batches, unit_name="batch") if progress else None
        for index, batch in enumerate(batches):
            state, batch_samples = step(batch)
            part = summarize_state(state, output != "regression")
            _check_finite_rows(part["mean"], "the predictions are NaN or infinite", offset)
            _check_probabilities(part["mean"], output, model, offset)
            parts.append(part)
            offset += len(part["mean"])
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


def _output_dtype(model):
    """The dtype the model's output is computed in (e.g. bfloat16 under mixed_bfloat16)."""
    outputs = getattr(model, "outputs", None)
    if outputs and len(outputs) == 1:
        return keras.backend.standardize_dtype(outputs[0].dtype)
    return model.compute_dtype


def _check_probabilities(mean, output, model, offset):
    """ValueError if a row of `mean` (rows offset.. of `x`) does not sum to 1 within the
    rounding of the output's dtype."""
    if output != "probabilities":
        return
    dtype = _output_dtype(model)
    tolerance = probability_sum_tolerance(dtype)
    error = np.abs(mean.sum(axis=-1) - 1.0)
    if error.max() <= tolerance:
        return
    multilabel = getattr(_final_layer(model), "activation", None) is keras.activations.sigmoid
    raise ValueError(
        f"predict: output='probabilities', but model {model.name!r}'s outputs do not sum to 1 "
        f"over the last axis (off by {error.max():.3g} at row {offset + int(error.argmax())} of "
        f"`x`; {tolerance:g} is allowed for {dtype} outputs). "
        + ("Several sigmoid units (multi-label) are not class probabilities. " if multilabel else "")
        + "Pass output='logits' or output='regression'."
    )
