"""Keras callbacks for training Bayesian networks: KL annealing, posterior monitoring, NaN guard.

- `KLAnnealing`: warms the KL weight up from a small value to 1 / N (Bowman et al. 2016,
  "Generating Sentences from a Continuous Space"; Sønderby et al. 2016, "Ladder
  Variational Autoencoders"), per epoch or per step, without retracing.
- `PosteriorMonitor`: a TensorBoard companion writing per-layer KL, posterior sigma,
  learned hyperprior tau, signal-to-noise sparsity, histograms and optional figures.
- `TerminateOnNonFiniteELBO`: `keras.callbacks.TerminateOnNaN` that says which term
  (the nll, or the KL of which layer) went non-finite first.

    model.fit(x, y, epochs=100, callbacks=[
        tfbdl.callbacks.KLAnnealing(num_examples=len(x), warmup_epochs=10),
        tfbdl.callbacks.PosteriorMonitor("tensorboard_logs/run"),
        tfbdl.callbacks.TerminateOnNonFiniteELBO(),
    ])
"""

import io
import logging
import math
import os
import sys

import keras
import numpy as np
import tensorflow as tf

from tfbdl import _validation, elbo, model_tools

__all__ = ["KLAnnealing", "PosteriorMonitor", "TerminateOnNonFiniteELBO", "SCHEDULES"]

logger = logging.getLogger("tfbdl")

SCHEDULES = {
    # fraction of the target weight at warm-up progress p in (0, 1]
    "linear": lambda p: p,
    "cosine": lambda p: 0.5 * (1.0 - math.cos(math.pi * p)),
}


class KLAnnealing(keras.callbacks.Callback):
    """Ramps every Bayesian layer's KL weight up to 1 / N during a warm-up.

    With progress p = min(1, (t + 1) / T), t the epoch (or optimizer step) counted
    from 0 and T = `warmup_epochs` (or `warmup_steps`):

        kl_weight(t) = schedule(p) / N,   linear: p,   cosine: (1 - cos(pi p)) / 2

    so the first epoch (step) trains with a small weight, schedule(1 / T) / N, and from
    epoch (step) T - 1 on with the full 1 / N. The weights are variables, so nothing is
    retraced. The current weight is added to the logs as `kl_weight` (per epoch, and
    per batch with `warmup_steps`). Steps are read from `optimizer.iterations`, so a
    resumed fit (`keras.callbacks.BackupAndRestore`) continues the ramp.

    Args:
        num_examples: N, the number of training examples.
        warmup_epochs: T in epochs; give this or `warmup_steps`.
        warmup_steps: T in optimizer steps.
        schedule: "linear", "cosine", or a callable p -> fraction in [0, 1].

    Example:
        >>> model.fit(x, y, epochs=50,
        ...           callbacks=[tfbdl.callbacks.KLAnnealing(len(x), warmup_epochs=10)])
    """

    def __init__(self, num_examples, warmup_epochs=None, warmup_steps=None, schedule="linear"):
        super().__init__()
        owner = "KLAnnealing"
        self.num_examples = _validation.integer(num_examples, "num_examples", owner, 1)
        if (warmup_epochs is None) == (warmup_steps is None):
            raise ValueError(
                f"{owner}: give exactly one of `warmup_epochs` and `warmup_steps`, got "
                f"warmup_epochs={warmup_epochs!r}, warmup_steps={warmup_steps!r}."
            )
        self.per_step = warmup_steps is not None
        self.warmup = _validation.integer(
            warmup_steps if self.per_step else warmup_epochs,
            "warmup_steps" if self.per_step else "warmup_epochs",
            owner, 1,
        )
        if callable(schedule):
            self.schedule = schedule
        elif schedule in SCHEDULES:
            self.schedule = SCHEDULES[schedule]
        else:
            raise ValueError(
                f"{owner}: `schedule` must be one of {sorted(SCHEDULES)} or a callable "
                f"p -> fraction, got schedule={schedule!r}."
            )
        self.weight = None

    def weight_at(self, t):
        """The KL weight at epoch (or step) t, counted from 0."""
        progress = min(1.0, (t + 1) / self.warmup)
        fraction = float(self.schedule(progress))
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(
                "KLAnnealing: `schedule` must map progress to [0, 1], "
                f"got {fraction!r} at p={progress}."
            )
        return fraction / self.num_examples

    def _set(self, t):
        self.weight = self.weight_at(t)
        model_tools.set_kl_weight(self.model, weight=self.weight)

    def on_epoch_begin(self, epoch, logs=None):
        if not self.per_step:
            self._set(epoch)

    def on_train_batch_begin(self, batch, logs=None):
        if self.per_step:
            self._set(int(self.model.optimizer.iterations))

    def on_train_batch_end(self, batch, logs=None):
        if self.per_step and logs is not None:
            logs["kl_weight"] = self.weight

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["kl_weight"] = self.weight


def _variational_weights(layer):
    """(loc, scale) of all of `layer`'s stochastic weights, flattened and concatenated."""
    posteriors = list(layer.weight_distributions().values())
    loc = tf.concat([tf.reshape(p.loc, [-1]) for p in posteriors], axis=0)
    scale = tf.concat([tf.reshape(p.scale(), [-1]) for p in posteriors], axis=0)
    return loc, scale


def _prior_summaries(layer):
    """{tag suffix: value} of the learned hyperparameters of the layer's prior terms."""
    summaries = {}
    for weight_name, (_, term) in layer.variational_weights().items():
        suffix = "" if weight_name == "kernel" else "_bias"
        for key, value in term.summary().items():
            summaries[f"{key}{suffix}"] = value
    return summaries


def _figure_to_image(figure):
    """A matplotlib figure as a [1, height, width, 4] uint8 tensor (the figure is closed)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    pyplot = sys.modules.get("matplotlib.pyplot")  # only a pyplot figure needs closing
    if pyplot is not None:
        pyplot.close(figure)
    return tf.image.decode_png(buffer.getvalue(), channels=4)[tf.newaxis]


class PosteriorMonitor(keras.callbacks.Callback):
    """TensorBoard companion: what the posterior of each Bayesian layer is doing.

    Every epoch, per Bayesian layer (tags `<quantity>/<layer name>`):

        kl/<layer>           KL(q || p) of the layer's weights, in nats (unweighted)
        sigma_mean/<layer>   mean posterior standard deviation
        snr_below_1/<layer>  fraction of weights with |mu| / sigma < snr_threshold
                             (the sparsity a SpikeAndSlab prior produces)
        tau/<layer>          learned prior scale E_q[tau] (HalfNormalHierarchical; the mean
                             over units with per_unit=True, whose histogram is
                             tau/<layer>/per_unit); likewise any prior term's `summary()`

    every `histogram_freq` epochs histograms `mu/<layer>`, `sigma/<layer>`, `snr/<layer>`,
    and every `image_freq` epochs the matplotlib figure returned by `image_fn(model)` as
    the image `image_name`. Events go to `<log_dir>/posterior`, next to the `train` and
    `validation` runs `keras.callbacks.TensorBoard(log_dir)` writes. Step = epoch.

    Args:
        log_dir: TensorBoard log directory.
        histogram_freq: epochs between histograms (0: none).
        image_fn: optional function `model -> matplotlib.figure.Figure`.
        image_freq: epochs between images.
        image_name: the image's tag.
        snr_threshold: the signal-to-noise level below which a weight counts as pruned.

    Example:
        >>> monitor = tfbdl.callbacks.PosteriorMonitor("tensorboard_logs/moons",
        ...     image_fn=lambda m: tfbdl.plots.uncertainty_surface(m, x), image_freq=10)
        >>> model.fit(x, y, epochs=100, callbacks=[monitor])
    """

    def __init__(self, log_dir, histogram_freq=1, image_fn=None, image_freq=1,
                 image_name="posterior_predictive", snr_threshold=1.0):
        super().__init__()
        owner = "PosteriorMonitor"
        if not isinstance(log_dir, (str, os.PathLike)):
            raise ValueError(f"{owner}: `log_dir` must be a path, got log_dir={log_dir!r}.")
        _validation.integer(histogram_freq, "histogram_freq", owner, 0)
        if image_fn is not None and not callable(image_fn):
            raise ValueError(
                f"{owner}: `image_fn` must be callable or None, got image_fn={image_fn!r}."
            )
        if not (np.isscalar(snr_threshold) and float(snr_threshold) > 0):
            raise ValueError(
                f"{owner}: `snr_threshold` must be a positive number, "
                f"got snr_threshold={snr_threshold!r}."
            )
        self.log_dir = os.fspath(log_dir)
        self.histogram_freq = histogram_freq
        self.image_fn = image_fn
        self.image_freq = _validation.integer(image_freq, "image_freq", owner, 1)
        self.image_name = image_name
        self.snr_threshold = float(snr_threshold)
        self._writer = None

    def on_train_begin(self, logs=None):
        self._layers = model_tools._require_bayesian_layers(self.model)
        self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "posterior"))

    def on_epoch_end(self, epoch, logs=None):
        histograms = self.histogram_freq > 0 and epoch % self.histogram_freq == 0
        with self._writer.as_default(step=epoch):
            for layer in self._layers:
                self._write_layer(layer, histograms)
            if self.image_fn is not None and epoch % self.image_freq == 0:
                tf.summary.image(self.image_name, _figure_to_image(self.image_fn(self.model)))
        self._writer.flush()

    def _write_layer(self, layer, histograms):
        name = layer.name
        loc, scale = _variational_weights(layer)
        snr = tf.abs(loc) / scale
        tf.summary.scalar(f"kl/{name}", layer.kl_divergence())
        tf.summary.scalar(f"sigma_mean/{name}", tf.reduce_mean(scale))
        tf.summary.scalar(
            f"snr_below_1/{name}", tf.reduce_mean(tf.cast(snr < self.snr_threshold, tf.float32))
        )
        for key, value in _prior_summaries(layer).items():
            tf.summary.scalar(f"{key}/{name}", tf.reduce_mean(value))
            if histograms and np.size(value) > 1:
                tf.summary.histogram(f"{key}/{name}/per_unit", value)
        if histograms:
            tf.summary.histogram(f"mu/{name}", loc)
            tf.summary.histogram(f"sigma/{name}", scale)
            tf.summary.histogram(f"snr/{name}", snr)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class TerminateOnNonFiniteELBO(keras.callbacks.Callback):
    """Stops training when the loss goes non-finite, naming the term that did first.

    The model's `ELBOTerms` metric (attached by `tfbdl.set_kl_weight`) counts, in the
    graph, the steps in which the nll or each layer's weighted KL was non-finite; at the
    first batch whose loss is NaN/inf this callback reads those counts, so the message
    names `nll` or "KL of layer '<name>'" (layers in model order; a non-finite KL is
    blamed before the nll it contaminates). The message is logged on the "tfbdl" logger
    and kept as `.message`; training stops gracefully (`model.stop_training`), or with
    `raise_error=True` a `RuntimeError` carrying the message is raised at once (as in
    `keras.callbacks.TerminateOnNaN`).

    Not installed by `set_kl_weight`: like Keras' own `TerminateOnNaN` it is opt-in,
    since `set_kl_weight` runs before `fit` and cannot add callbacks to it.

    Example:
        >>> model.fit(x, y, callbacks=[tfbdl.callbacks.TerminateOnNonFiniteELBO()])
    """

    def __init__(self, raise_error=False):
        super().__init__()
        self.raise_error = bool(raise_error)
        self.message = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or np.isfinite(loss):
            return
        self.message = (
            f"tfbdl: the loss became non-finite ({loss}) at epoch {self._epoch + 1}, "
            f"batch {batch + 1}; {self._culprit()}. Training stopped."
        )
        if self.raise_error:
            raise RuntimeError(self.message)
        logger.error(self.message)
        self.model.stop_training = True

    def _culprit(self):
        metric = elbo.elbo_terms_metric(self.model)
        if metric is None:
            return "call tfbdl.set_kl_weight(model, ...) to have the non-finite term named"
        terms = metric.first_non_finite_terms()
        if not terms:
            return ("neither the nll nor a KL term is non-finite: "
                    "an other loss (e.g. a regularizer) is")
        also = f" (in the same step also: {', '.join(terms[1:])})" if len(terms) > 1 else ""
        return f"first non-finite term: {terms[0]}{also}"
