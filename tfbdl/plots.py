"""Figures for Bayesian networks: training curves, uncertainty surfaces, calibration, samples.

Every function returns a `matplotlib.figure.Figure` and, given `path=`, also saves it
(PNG, PDF, ... by the extension). Figures are made with `matplotlib.figure.Figure`, not
`pyplot`, so they need no display, are never left open in pyplot's registry, and work
headless (Agg) in scripts and CI; notebooks show a returned figure as usual.

    result = tfbdl.predict(model, x_test, num_samples=100)
    tfbdl.plots.reliability_diagram(y_test, result.mean, path="reliability.png")
    tfbdl.plots.uncertainty_surface(model, x_train, y_train, quantity="std", path="std.png")
"""

import matplotlib.figure
import numpy as np
import sklearn.metrics

from tfbdl import metrics
from tfbdl.prediction import predict
from tfbdl.saving import atomic_path

__all__ = [
    "training_curves",
    "uncertainty_surface",
    "reliability_diagram",
    "uncertainty_histogram",
    "sample_histograms",
    "confusion_matrix",
]

CURVES = {"loss": "negative ELBO per example (loss)", "nll": "NLL (data term)", "kl": "KL / N"}
SURFACE_QUANTITIES = ("mean", "std", "entropy", "aleatoric", "mutual_information")


def _finish(figure, path):
    """Saves `figure` to `path` (if given) atomically: a failed write keeps an older file."""
    if path is not None:
        atomic_path(path, lambda temporary: figure.savefig(temporary, dpi=110, bbox_inches="tight"))
    return figure


def training_curves(history, path=None):
    """Negative ELBO (`loss`), `nll` and `kl` per epoch, training and validation, one panel each.

    `history` is a `keras.callbacks.History` (what `model.fit` returns) or its `.history` dict.
    """
    logs = getattr(history, "history", history)
    if not isinstance(logs, dict):
        raise ValueError(
            f"`history` must be a keras History or a dict of lists, got {type(history).__name__}."
        )
    keys = [key for key in CURVES if key in logs]
    if not keys:
        raise ValueError(
            f"`history` has none of the curves {tuple(CURVES)}; it has {sorted(logs)}."
        )
    figure = matplotlib.figure.Figure(figsize=(4.2 * len(keys), 3.4), layout="constrained")
    for ax, key in zip(figure.subplots(1, len(keys), squeeze=False)[0], keys):
        epochs = np.arange(1, len(logs[key]) + 1)
        ax.plot(epochs, logs[key], label="train")
        if f"val_{key}" in logs:
            ax.plot(epochs, logs[f"val_{key}"], label="validation")
        ax.set(title=CURVES[key], xlabel="epoch")
        ax.legend()
    return _finish(figure, path)


def uncertainty_surface(
    model,
    x,
    y=None,
    quantity="mean",
    num_samples=100,
    grid_size=100,
    class_index=-1,
    margin=0.5,
    path=None,
):
    """A predictive quantity of `model` over a grid covering 2-D inputs `x`, with the data on top.

    `quantity` is "mean" or "std" of the probability of class `class_index` (class 1 of a
    sigmoid classifier by default), or "entropy", "aleatoric", "mutual_information"
    (from `tfbdl.predict` with `num_samples` passes at each of grid_size^2 points).
    """
    if quantity not in SURFACE_QUANTITIES:
        raise ValueError(
            f"`quantity` must be one of {SURFACE_QUANTITIES}, got quantity={quantity!r}."
        )
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"`x` must be 2-D inputs of shape (N, 2), got shape {x.shape}.")
    low, high = x.min(axis=0) - margin, x.max(axis=0) + margin
    grid_x, grid_y = np.meshgrid(
        np.linspace(low[0], high[0], grid_size), np.linspace(low[1], high[1], grid_size)
    )
    grid = np.stack([grid_x.ravel(), grid_y.ravel()], axis=1).astype(np.float32)
    result = predict(model, grid, num_samples=num_samples, progress=False)
    values = getattr(result, quantity)
    if values is None:
        raise ValueError(
            f"`quantity`={quantity!r} needs a classifier; model gives {result.output!r} outputs."
        )
    if values.ndim == 2:
        class_index %= values.shape[1]
        values = values[:, class_index]

    figure = matplotlib.figure.Figure(figsize=(5.5, 4.5), layout="constrained")
    ax = figure.subplots()
    filled = ax.contourf(grid_x, grid_y, values.reshape(grid_x.shape), levels=20, cmap="viridis")
    figure.colorbar(
        filled, ax=ax, label=quantity if quantity != "mean" else f"p(class {class_index})"
    )
    if y is not None:
        ax.scatter(
            x[:, 0], x[:, 1], c=np.asarray(y), cmap="coolwarm", s=10, edgecolors="k", linewidths=0.3
        )
    label = f"class {class_index} " if quantity in ("mean", "std") else ""
    ax.set(
        title=f"predictive {label}{quantity} ({num_samples} samples)",
        xlabel="$x_1$",
        ylabel="$x_2$",
    )
    return _finish(figure, path)


def reliability_diagram(y, probs, num_bins=15, path=None):
    """Accuracy per confidence bin against the diagonal (perfect calibration), with the ECE."""
    bins = metrics.reliability(y, probs, num_bins)
    ece = metrics.expected_calibration_error(y, probs, num_bins)
    centres = (bins.edges[:-1] + bins.edges[1:]) / 2
    width = bins.edges[1] - bins.edges[0]
    figure = matplotlib.figure.Figure(figsize=(4.5, 5.5), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.bar(centres, np.nan_to_num(bins.accuracy), width=width, edgecolor="k", label="accuracy")
    top.bar(
        centres,
        np.nan_to_num(bins.confidence - bins.accuracy),
        bottom=np.nan_to_num(bins.accuracy),
        width=width,
        color="tab:red",
        alpha=0.3,
        label="gap to confidence",
    )
    top.plot([0, 1], [0, 1], "k--", label="calibrated")
    top.set(ylabel="accuracy", title=f"reliability (ECE = {ece:.3f})", xlim=(0, 1), ylim=(0, 1))
    top.legend(loc="upper left")
    bottom.bar(centres, bins.count, width=width, edgecolor="k")
    bottom.set(xlabel="confidence (max probability)", ylabel="examples")
    return _finish(figure, path)


def uncertainty_histogram(y, result, score="entropy", bins=30, path=None):
    """Histograms of an uncertainty score (see `tfbdl.metrics.uncertainty_score`) for correct
    and wrong predictions of a `tfbdl.predict` result; the title gives the misclassification
    AUROC."""
    y = metrics.check_labels(y, result.mean.shape[-1], result.mean.shape[0])
    values = metrics.uncertainty_score(result, score)
    correct = result.predicted_class == y
    figure = matplotlib.figure.Figure(figsize=(5, 3.6), layout="constrained")
    ax = figure.subplots()
    edges = np.histogram_bin_edges(values, bins=bins)
    for mask, label, color in ((correct, "correct", "tab:blue"), (~correct, "wrong", "tab:red")):
        if mask.any():
            ax.hist(
                values[mask],
                bins=edges,
                density=True,
                alpha=0.5,
                color=color,
                label=f"{label} ({int(mask.sum())})",
            )
    title = score
    if correct.any() and not correct.all():
        title += (
            f" (misclassification AUROC {metrics.auroc(values[~correct], values[correct]):.3f})"
        )
    ax.set(xlabel=score, ylabel="density", title=title)
    ax.legend()
    return _finish(figure, path)


def sample_histograms(samples, indices, class_names=None, bins=20, path=None):
    """Histograms of the sampled class probabilities for chosen inputs (one panel per input).

    `samples` is an (S, N, C) array or a `tfbdl.predict(..., return_samples=True)` result.
    Wide histograms mean the posterior disagrees about an input (epistemic uncertainty).
    """
    samples = getattr(samples, "samples", samples)
    if samples is None or np.ndim(samples) != 3:
        raise ValueError(
            "`samples` must be an (S, N, C) array or a tfbdl.predict result made with "
            "return_samples=True."
        )
    samples = np.asarray(samples)
    indices = list(np.atleast_1d(indices))
    bad = [i for i in indices if not 0 <= i < samples.shape[1]]
    if bad or not indices:
        raise ValueError(
            f"`indices` must be non-empty and in [0, {samples.shape[1]}), got {indices}."
        )
    names = class_names or [f"class {c}" for c in range(samples.shape[2])]
    figure = matplotlib.figure.Figure(figsize=(3.4 * len(indices), 3.0), layout="constrained")
    for ax, index in zip(figure.subplots(1, len(indices), squeeze=False, sharey=True)[0], indices):
        for c, name in enumerate(names):
            ax.hist(samples[:, index, c], bins=np.linspace(0, 1, bins + 1), alpha=0.5, label=name)
        ax.set(title=f"input {index}", xlabel="sampled probability")
    figure.axes[0].set_ylabel(f"of {samples.shape[0]} samples")
    figure.axes[0].legend()
    return _finish(figure, path)


def confusion_matrix(y, predicted, class_names=None, normalize=None, path=None):
    """Confusion matrix (rows: true class) via `sklearn.metrics.ConfusionMatrixDisplay`;
    `normalize` is None, "true", "pred" or "all" as in scikit-learn."""
    figure = matplotlib.figure.Figure(figsize=(5.5, 5), layout="constrained")
    ax = figure.subplots()
    sklearn.metrics.ConfusionMatrixDisplay.from_predictions(
        np.asarray(y),
        np.asarray(predicted),
        display_labels=class_names,
        normalize=normalize,
        ax=ax,
        colorbar=False,
        values_format=".2f" if normalize else "d",
    )
    return _finish(figure, path)
