"""Turn a trained Keras model's Dense/Conv layers into tfbdl Bayesian layers.

`to_bayesian(model)` clones a Sequential or functional model (nested models included) with
each `keras.layers.Dense` / `Conv1D` / `Conv2D` / `Conv3D` (exactly those classes) replaced
by its tfbdl twin built from the same `get_config()`. The twin's posterior means start at
the trained kernel (and bias), with a small posterior scale `initial_scale`, so under
`tfbdl.posterior_mean` the new model computes what the old one did. All other layers
(BatchNormalization, Dropout, pooling, ...) are cloned with their weights; the original
model is left untouched.

With `informed=True` each replaced kernel gets the prior `Informed(W_trained,
informed_scale)`: Bayesian fine-tuning that stays near the pretrained solution (transfer
learning with informed priors).

    bayesian = tfbdl.convert.to_bayesian(trained, estimator="flipout", informed=True)
    tfbdl.set_kl_weight(bayesian, num_examples=len(x_train))
    bayesian.compile("adam", "sparse_categorical_crossentropy")
    bayesian.fit(x_train, y_train, epochs=2)
"""

import collections

import keras

from tfbdl import layers as bayesian
from tfbdl.posteriors import MeanFieldNormal
from tfbdl.priors import Informed

__all__ = ["to_bayesian", "Replacement", "TWINS"]

# (Keras layer type, estimator) -> tfbdl twin.
TWINS = {
    ("Dense", "flipout"): bayesian.DenseFlipout,
    ("Dense", "reparameterization"): bayesian.DenseReparameterization,
    ("Conv1D", "flipout"): bayesian.Conv1DFlipout,
    ("Conv1D", "reparameterization"): bayesian.Conv1DReparameterization,
    ("Conv2D", "flipout"): bayesian.Conv2DFlipout,
    ("Conv2D", "reparameterization"): bayesian.Conv2DReparameterization,
    ("Conv3D", "flipout"): bayesian.Conv3DFlipout,
    ("Conv3D", "reparameterization"): bayesian.Conv3DReparameterization,
}
_KERAS_TYPES = {
    name: getattr(keras.layers, name) for name in ("Dense", "Conv1D", "Conv2D", "Conv3D")
}
ESTIMATORS = ("flipout", "reparameterization")

Replacement = collections.namedtuple(
    "Replacement", ["name", "original", "replacement", "kernel_shape"]
)
Replacement.__doc__ = "One replaced layer: its name, original and new class names, kernel shape."


def _check_arguments(model, layer_types, estimator, prior, informed, informed_scale):
    # Sequential and functional models run a graph of layers; subclassed models do not.
    graph_model = isinstance(model, keras.Sequential) or (
        isinstance(model, keras.Model) and hasattr(model, "_run_through_graph")
    )
    if not graph_model:
        raise ValueError(
            "to_bayesian: `model` must be a Keras Sequential or functional model, got "
            f"model={type(model).__name__} (subclassed models cannot be cloned; build the "
            "Bayesian version with tfbdl.layers directly)."
        )
    if isinstance(layer_types, str):
        layer_types = (layer_types,)
    unknown = [name for name in layer_types if name not in _KERAS_TYPES]
    if unknown or not layer_types:
        raise ValueError(
            f"to_bayesian: `layer_types` must be a non-empty subset of "
            f"{tuple(_KERAS_TYPES)}, got layer_types={layer_types!r}."
        )
    if estimator not in ESTIMATORS:
        raise ValueError(
            f"to_bayesian: `estimator` must be one of {ESTIMATORS}, got estimator={estimator!r}."
        )
    if informed and prior is not None:
        raise ValueError(
            "to_bayesian: give either `prior` or `informed=True` (an Informed prior "
            f"centred at each layer's trained kernel), not both; got prior={prior!r}."
        )
    if not informed_scale > 0:
        raise ValueError(
            f"to_bayesian: `informed_scale` must be > 0, got informed_scale={informed_scale!r}."
        )
    return tuple(layer_types)


def to_bayesian(
    model,
    layer_types=("Dense", "Conv1D", "Conv2D", "Conv3D"),
    estimator="flipout",
    prior=None,
    bias_prior=None,
    informed=False,
    informed_scale=0.1,
    initial_scale=0.01,
    verbose=True,
    return_report=False,
):
    """A new model with the `layer_types` layers of `model` replaced by tfbdl twins.

    Args:
        model: a built Keras Sequential or functional model (nested models are converted too).
        layer_types: Keras class names to replace; only these exact classes are replaced.
        estimator: "flipout" or "reparameterization".
        prior: kernel prior of every replaced layer (default `tfbdl.priors.Gaussian(1.0)`).
        bias_prior: bias prior; `None` keeps each bias a deterministic (trained) weight.
        informed: give each replaced kernel the prior `Informed(trained kernel, informed_scale)`.
        initial_scale: posterior sigma of every replaced weight at the start.
        verbose: print the report of replaced and kept layers.
        return_report: return `(new_model, report)` instead of `new_model`; `report` is a list
            of `Replacement(name, original, replacement, kernel_shape)`.
    """
    layer_types = _check_arguments(model, layer_types, estimator, prior, informed, informed_scale)
    if not model.built:
        raise ValueError(f"to_bayesian: `model` {model.name!r} must be built (trained) first.")
    posterior = MeanFieldNormal(initial_scale=initial_scale)
    pairs = []  # (original layer, clone)

    def clone(layer):
        if type(layer) in [_KERAS_TYPES[name] for name in layer_types]:
            twin = TWINS[(type(layer).__name__, estimator)]
            kernel_prior = (
                Informed(keras.ops.convert_to_numpy(layer.kernel), informed_scale)
                if informed
                else prior
            )
            new = twin.from_config(
                {
                    **layer.get_config(),
                    "prior": kernel_prior,
                    "bias_prior": bias_prior,
                    "posterior": posterior,
                }
            )
        else:
            new = layer.__class__.from_config(layer.get_config())
        pairs.append((layer, new))
        return new

    converted = keras.models.clone_model(model, clone_function=clone, recursive=True)
    report = []
    for layer, new in pairs:
        if isinstance(new, bayesian.BayesianLayer) and type(new) is not type(layer):
            new.kernel.assign(layer.kernel)  # the posterior mean variable
            if layer.use_bias:
                new.bias.assign(layer.bias)
            report.append(
                Replacement(
                    layer.name, type(layer).__name__, type(new).__name__, tuple(layer.kernel.shape)
                )
            )
        else:
            new.set_weights(layer.get_weights())
    if verbose:
        print(format_report(report, [layer for layer, new in pairs if type(new) is type(layer)]))
    return (converted, report) if return_report else converted


def format_report(report, kept):
    """A short text table of replaced layers and the kept layer types."""
    lines = [f"to_bayesian: replaced {len(report)} layer(s)"]
    lines += [
        f"  {r.name}: {r.original} -> {r.replacement}, kernel {r.kernel_shape}" for r in report
    ]
    kept_types = collections.Counter(type(layer).__name__ for layer in kept)
    if kept_types:
        lines.append(
            "  kept with their weights: "
            + ", ".join(f"{n} x{c}" for n, c in sorted(kept_types.items()))
        )
    return "\n".join(lines)
