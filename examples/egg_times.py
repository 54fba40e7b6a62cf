"""Egg boiling times: a small Flipout network from (weight, minutes boiled) to the outcome.

The study: "Bayesian Neural Networks 2: Fully Connected in TensorFlow and PyTorch"
(DoctorLoop, data from DoctorLoop/BayesianDeepLearning): 639 eggs, each weighed and
boiled for some minutes, came out underdone (202), soft-boiled (117) or hard-boiled (320).
There a deterministic net reached 0.84-0.86 and a TFP Flipout net 0.89-0.91 accuracy on 64
held-out eggs. Here: a 2-8-8-3 tanh `DenseFlipout` network, N(0, 1) priors, loss
NLL + KL / N (N the training eggs), scored by stratified 10-fold cross-validation
(accuracy and NLL of the posterior predictive mean, mean and spread over the folds).
Each fold standardizes the inputs with its own training eggs' mean and std (a
`keras.layers.Normalization` layer inside the model), so no test egg leaks in.

Class imbalance: likelihood weighting with class weights w_c = N / (3 N_c) (mean weight
1, so the KL weight 1 / N stays the honest one): each class carries the same total
weight in the fit, so the 117 soft-boiled eggs -- a narrow band of times between the
other two classes -- shape the boundaries as much as the 320 hard-boiled ones. A weighted
fit models class frequencies of 1/3 each, p_w(c | x) proportional to w_c p(c | x); the
predictions are turned back to the real mix by Bayes' rule, p(c | x) proportional to
p_w(c | x) / w_c (per weight sample), so that accuracy and NLL on the real mix are not
paid for a balanced fit. Class weights rather than resampling: every egg is used once
per epoch and the ELBO stays a (weighted) sum over the same N eggs.
`--class-weighting none` fits the plain likelihood.

Hyperparameters (width 8, Adam 0.01, batch 64, 200 epochs) were chosen by 5-fold CV
inside the 575 training eggs of outer fold 0 (seed 0): width 8 gave accuracy 0.929 /
NLL 0.189 there, width 16 0.927 / 0.200. The 64 test eggs of that fold were not used;
the other folds' test eggs were among those 575, so the CV figures are, strictly, a
nested estimate only for fold 0.

Figures: predictive probability of each outcome over the (weight, time) plane and
histograms of 5000 posterior predictive samples of p(soft-boiled) for three eggs, both
from a model fit on all 639 eggs (its training is what TensorBoard shows).

    python examples/egg_times.py --help
    tensorboard --logdir tensorboard_logs/egg_times
"""

import pathlib
import time

import keras
import matplotlib.figure
import numpy as np
from sklearn.model_selection import StratifiedKFold

import common
import tfbdl

CLASSES = ("underdone", "soft-boiled", "hard-boiled")
# Three 55 g eggs: on the underdone/soft border, mid soft-boiled, on the soft/hard border.
CHOSEN_EGGS = np.array([[55.0, 3.2], [55.0, 4.1], [55.0, 5.0]], dtype="float32")


def parse_args(argv=None):
    parser = common.parser("egg_times", __doc__)
    parser.add_argument("--folds", type=int, default=10, help="stratified cross-validation folds")
    parser.add_argument("--hidden", type=int, default=8, help="units in each of the 2 hidden layers")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=0.01)
    parser.add_argument("--class-weighting", choices=("balanced", "none"), default="balanced")
    parser.add_argument("--num-samples", type=int, default=200, help="posterior samples per CV prediction")
    parser.add_argument("--histogram-samples", type=int, default=5000,
                        help="predictive samples for the chosen eggs' histograms")
    args = parser.parse_args(argv)
    if args.folds < 2:
        parser.error(f"--folds must be >= 2, got {args.folds}")
    return args


def class_weights(y, mode):
    """w_c = N / (K N_c) (mean weight 1 over the eggs), or all 1 with mode 'none'."""
    counts = np.bincount(y, minlength=len(CLASSES))
    if mode == "none":
        return np.ones(len(CLASSES))
    return len(y) / (len(CLASSES) * counts)


def build_model(x_train, hidden, seed):
    """Normalization (training eggs' statistics) -> 2 tanh DenseFlipout layers -> softmax."""
    return keras.Sequential([
        keras.Input((2,)),
        keras.layers.Normalization(mean=x_train.mean(axis=0), variance=x_train.var(axis=0)),
        tfbdl.layers.DenseFlipout(hidden, activation="tanh", seed=seed),
        tfbdl.layers.DenseFlipout(hidden, activation="tanh", seed=seed + 1),
        tfbdl.layers.DenseFlipout(len(CLASSES), activation="softmax", seed=seed + 2),
    ], name="egg_times")


def fit(x, y, args, seed, callbacks=()):
    """A model fit on (x, y) with the weighted ELBO; returns (model, class weights, history)."""
    keras.utils.set_random_seed(seed)
    model = build_model(x, args.hidden, seed)
    tfbdl.set_kl_weight(model, num_examples=len(x))
    model.compile(keras.optimizers.Adam(args.learning_rate), "sparse_categorical_crossentropy")
    weights = class_weights(y, args.class_weighting)
    history = model.fit(x, y, epochs=args.epochs, batch_size=args.batch_size, verbose=0,
                        class_weight=dict(enumerate(weights)), callbacks=list(callbacks))
    return model, weights, history


def reweight(probabilities, weights):
    """Bayes' rule back to the real class mix: p(c) proportional to p_w(c) / w_c (last axis)."""
    corrected = probabilities / weights
    return corrected / corrected.sum(axis=-1, keepdims=True)


def predictive_mean(model, weights, x, num_samples):
    """Posterior predictive class probabilities, each weight sample corrected by `reweight`."""
    samples = tfbdl.predict(model, x, num_samples=num_samples, return_samples=True, progress=False).samples
    return reweight(samples, weights).mean(axis=0)


def cross_validate(x, y, args):
    """Stratified k-fold accuracy and NLL per fold (lists), printing one line per fold."""
    folds = StratifiedKFold(args.folds, shuffle=True, random_state=args.seed)
    accuracies, nlls = [], []
    for k, (train, test) in enumerate(folds.split(x, y)):
        start = time.perf_counter()
        model, weights, _ = fit(x[train], y[train], args, seed=args.seed + 10 * k)
        probabilities = predictive_mean(model, weights, x[test], args.num_samples)
        accuracies.append(tfbdl.metrics.accuracy(y[test], probabilities))
        nlls.append(tfbdl.metrics.nll(y[test], probabilities))
        if args.verbose:
            print(f"fold {k + 1}/{args.folds}: accuracy {accuracies[-1]:.3f}, NLL {nlls[-1]:.3f} "
                  f"({len(test)} eggs, {time.perf_counter() - start:.0f} s)", flush=True)
    return accuracies, nlls


def plane_figure(model, weights, x, y, num_samples=100, grid_size=80):
    """Predictive probability of each outcome over the (weight, time) plane, eggs on top."""
    low, high = x.min(axis=0), x.max(axis=0)
    grid_w, grid_t = np.meshgrid(np.linspace(low[0], high[0], grid_size),
                                 np.linspace(low[1], high[1], grid_size))
    grid = np.stack([grid_w.ravel(), grid_t.ravel()], axis=1).astype("float32")
    probabilities = predictive_mean(model, weights, grid, num_samples)
    figure = matplotlib.figure.Figure(figsize=(13, 3.8), layout="constrained")
    for c, ax in enumerate(figure.subplots(1, len(CLASSES), sharey=True)):
        filled = ax.contourf(grid_w, grid_t, probabilities[:, c].reshape(grid_w.shape),
                             levels=np.linspace(0, 1, 11), cmap="viridis")
        ax.scatter(*x[y == c].T, s=6, c="w", edgecolors="k", linewidths=0.3)
        ax.set(title=f"p({CLASSES[c]}), {CLASSES[c]} eggs shown", xlabel="weight (g)")
    figure.axes[0].set_ylabel("time boiled (min)")
    figure.colorbar(filled, ax=figure.axes, label="predictive probability")
    return figure


def histogram_figure(model, weights, num_samples):
    """Histograms of sampled p(soft-boiled) for the chosen eggs (the study's figure)."""
    samples = tfbdl.predict(model, CHOSEN_EGGS, num_samples=num_samples, return_samples=True,
                            progress=False).samples
    soft = reweight(samples, weights)[..., 1]
    figure = matplotlib.figure.Figure(figsize=(11, 3.2), layout="constrained")
    for (grams, minutes), values, ax in zip(CHOSEN_EGGS, soft.T, figure.subplots(1, 3, sharey=True)):
        ax.hist(values, bins=np.linspace(0, 1, 41), color="tab:orange")
        ax.axvline(values.mean(), color="k", linestyle="--", label=f"mean {values.mean():.2f}")
        ax.set(title=f"{grams:.0f} g egg, {minutes:.1f} min", xlabel="p(soft-boiled)")
        ax.legend()
    figure.axes[0].set_ylabel(f"of {num_samples} predictive samples")
    return figure


def final_model(x, y, args):
    """The model fit on all eggs, logged to TensorBoard with the posterior monitor."""
    callbacks = [keras.callbacks.TensorBoard(args.logdir),
                 tfbdl.callbacks.PosteriorMonitor(args.logdir, histogram_freq=50),
                 tfbdl.callbacks.TerminateOnNonFiniteELBO()]
    return fit(x, y, args, seed=args.seed + 10 * args.folds, callbacks=callbacks)


def main(argv=None):
    args = parse_args(argv)
    x, y = tfbdl.data.egg_times()
    start = time.perf_counter()
    accuracies, nlls = cross_validate(x, y, args)
    model, weights, history = final_model(x, y, args)
    seconds = time.perf_counter() - start

    output_dir = pathlib.Path(args.output_dir)
    common.save_figure(plane_figure(model, weights, x, y), output_dir / "predictive_plane.png")
    common.save_figure(histogram_figure(model, weights, args.histogram_samples),
                       output_dir / "soft_boiled_histograms.png")
    common.save_figure(tfbdl.plots.training_curves(history), output_dir / "training_curves.png")
    metrics = {
        "cv_accuracy": float(np.mean(accuracies)), "cv_accuracy_std": float(np.std(accuracies, ddof=1)),
        "cv_nll": float(np.mean(nlls)), "cv_nll_std": float(np.std(nlls, ddof=1)),
        "folds": args.folds, "examples": len(x), "class_weighting": args.class_weighting,
        "hidden": args.hidden, "epochs": args.epochs, "batch_size": args.batch_size,
        "learning_rate": args.learning_rate, "seed": args.seed, "fit_seconds": round(seconds, 1),
    }
    common.write_metrics(output_dir, metrics)
    print(f"egg times, {args.folds}-fold CV: accuracy {metrics['cv_accuracy']:.3f} "
          f"+- {metrics['cv_accuracy_std']:.3f}, NLL {metrics['cv_nll']:.3f} +- {metrics['cv_nll_std']:.3f} "
          f"(spread: std over folds); {seconds:.0f} s")
    print(f"figures and metrics.json in {output_dir}; TensorBoard logs in {args.logdir}")
    return metrics


if __name__ == "__main__":
    main()
