"""Bayesian active learning: label the pool examples the model is most uncertain about.

A pool of unlabelled inputs, a few labels, and a budget: each round trains the model on
the labelled set, scores the pool with an acquisition function over the posterior
predictive (`tfbdl.predict`), asks for the labels of the k best-scoring examples, and
repeats (Houlsby et al. 2011, "Bayesian Active Learning for Classification and
Preference Learning"; Gal, Islam & Ghahramani 2017, "Deep Bayesian Active Learning with
Image Data"). With p_s = p(y | x, w_s), w_s ~ q(w), s = 1..S and p_bar = 1/S sum_s p_s:

    bald              I[y; w | x, D] = H[p_bar] - 1/S sum_s H[p_s]   (mutual information:
                      high where the weight samples disagree, not where the label is noisy)
    max_entropy       H[p_bar] = -sum_c p_bar_c log p_bar_c           (total uncertainty)
    variation_ratios  1 - max_c p_bar_c                               (Freeman 1965; the form
                      of Gal et al. 2017, section 3, from the predictive mean)
    mean_std          1/C sum_c std_s(p_s,c)                          (Kampffmeyer et al. 2016)
    random            uniform scores (the baseline)

    learner = tfbdl.active.ActiveLearner(build_model, x_pool, y_pool, initial=20, acquire=10,
                                         acquisition="bald", evaluate=test_accuracy)
    curve = learner.run(rounds=50)            # one dict per round: labelled, fit_seconds, ...
"""

import time

import numpy as np

from tfbdl import _validation
from tfbdl.model_tools import set_kl_weight
from tfbdl.prediction import PredictiveResult, predict

__all__ = ["ACQUISITIONS", "ActiveLearner", "balanced_indices", "bald", "max_entropy", "mean_std",
           "query", "random", "score", "top_k", "variation_ratios"]


def bald(result):
    """BALD (Houlsby et al. 2011): H[p_bar] - mean_s H[p_s], the information the label of x
    carries about the weights. Equals `result.mutual_information` (clipped at 0)."""
    return _classification(result, "bald").mutual_information


def max_entropy(result):
    """Maximum predictive entropy (Shannon 1948): H[p_bar] = -sum_c p_bar_c log p_bar_c."""
    return _classification(result, "max_entropy").entropy


def variation_ratios(result):
    """Variation ratio (Freeman 1965) in the form of Gal, Islam & Ghahramani 2017 (section 3):
    1 - max_c p_bar_c, from the predictive mean (not from the mode counts of the samples)."""
    return 1.0 - _classification(result, "variation_ratios").mean.max(axis=-1)


def mean_std(result):
    """Mean standard deviation over classes (Kampffmeyer et al. 2016): 1/C sum_c std_s p_s,c."""
    return _classification(result, "mean_std").std.mean(axis=-1)


def random(result, rng=None):
    """Uniform random scores in [0, 1): the random-acquisition baseline."""
    return np.random.default_rng(rng).random(len(result.mean))


RESETS = ("weights", "rebuild")
ACQUISITIONS = {"bald": bald, "max_entropy": max_entropy, "variation_ratios": variation_ratios,
                "mean_std": mean_std, "random": random}


def _classification(result, name):
    if not isinstance(result, PredictiveResult) or result.entropy is None:
        raise ValueError(f"{name}: `result` must be a classification tfbdl.PredictiveResult (from "
                         f"tfbdl.predict), got {type(result).__name__} "
                         f"with output={getattr(result, 'output', None)!r}.")
    return result


def _acquisition_function(acquisition):
    if callable(acquisition):
        return acquisition
    if acquisition not in ACQUISITIONS:
        raise ValueError(f"`acquisition` must be one of {sorted(ACQUISITIONS)} or a callable "
                         f"result -> scores, got acquisition={acquisition!r}.")
    return ACQUISITIONS[acquisition]


def score(result, acquisition="bald", rng=None):
    """Scores (N,) of `acquisition` (a name in ACQUISITIONS or a callable result -> (N,))."""
    function = _acquisition_function(acquisition)
    scores = function(result, rng) if function is random else function(result)
    return np.asarray(scores, dtype=np.float64)


def _check_indices(indices, size, argument, owner):
    """`indices` as a 1-D int array of distinct positions in range(size), else a ValueError."""
    array = np.asarray(indices)
    if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{owner}: `{argument}` must be a 1-D sequence of integer indices, got {argument}={indices!r}.")
    array = array.astype(np.int64)
    outside = array[(array < 0) | (array >= size)]
    if outside.size:
        raise ValueError(f"{owner}: `{argument}` has indices outside [0, {size}): {outside[:5].tolist()}.")
    values, counts = np.unique(array, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"{owner}: `{argument}` repeats indices {values[counts > 1][:5].tolist()}.")
    return array


def top_k(scores, k, indices=None, exclude=()):
    """The pool indices of the `k` highest scores, best first, none of them in `exclude`.

    `scores[i]` scores pool index `indices[i]` (default `i`), so a scored random subset of
    the pool maps back to pool positions. Indices are distinct, so no index is returned
    twice; ties go to the earlier entry.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1 or not np.isfinite(scores).all():
        raise ValueError(f"top_k: `scores` must be a 1-D array of finite numbers, got shape {scores.shape} "
                         f"with {int(np.size(scores) - np.isfinite(scores).sum())} non-finite values.")
    indices = np.arange(len(scores)) if indices is None else np.asarray(indices)
    if indices.shape != scores.shape:
        raise ValueError(f"top_k: `indices` must have the shape of `scores` {scores.shape}, got {indices.shape}.")
    indices = _check_indices(indices, np.iinfo(np.int64).max, "indices", "top_k")
    eligible = ~np.isin(indices, np.asarray(exclude, dtype=np.int64))
    _validation.integer(k, "k", "top_k", 1)
    if k > eligible.sum():
        raise ValueError(f"top_k: `k` must be at most the {int(eligible.sum())} eligible (not excluded) "
                         f"indices, got k={k}.")
    candidates = np.flatnonzero(eligible)
    order = np.argsort(-scores[candidates], kind="stable")[:k]
    return indices[candidates[order]]


def query(model, pool_x, k, acquisition="bald", exclude=(), subset_size=None, num_samples=20,
          rng=None, **predict_kwargs):
    """The `k` pool indices (not in `exclude`) to label next, by `acquisition` on `model`.

    When `subset_size` is given and smaller than the unlabelled pool, only a uniform random
    subset of that many unlabelled examples is scored (Gal et al. 2017 score a random
    subset too): the cost of a round then does not grow with the pool. `predict_kwargs`
    go to `tfbdl.predict` (e.g. `output="logits"`). Random acquisition needs no prediction:
    it draws `k` distinct unlabelled indices uniformly and never calls the model.
    """
    function = _acquisition_function(acquisition)
    _validation.integer(k, "k", "query", 1)
    _validation.integer(num_samples, "num_samples", "query", 1)
    if subset_size is not None:
        _validation.integer(subset_size, "subset_size", "query", k)
    rng = np.random.default_rng(rng)
    candidates = np.setdiff1d(np.arange(len(pool_x)), np.asarray(exclude, dtype=np.int64))
    if k > len(candidates):
        raise ValueError(f"query: `k` must be at most the {len(candidates)} unlabelled pool examples, got k={k}.")
    if function is random:
        return rng.choice(candidates, k, replace=False)
    if subset_size is not None and subset_size < len(candidates):
        candidates = np.sort(rng.choice(candidates, subset_size, replace=False))
    predict_kwargs.setdefault("progress", False)
    result = predict(model, pool_x[candidates], num_samples=num_samples, **predict_kwargs)
    return top_k(score(result, function, rng), k, indices=candidates)


def balanced_indices(labels, per_class, rng=None):
    """`per_class` random indices of every class in `labels` (e.g. 2 per class for the
    20-label start of Gal et al. 2017), in random order."""
    labels = np.asarray(labels)
    _validation.integer(per_class, "per_class", "balanced_indices", 1)
    classes, counts = np.unique(labels, return_counts=True)
    if labels.ndim != 1 or not len(labels):
        raise ValueError(f"balanced_indices: `labels` must be a non-empty 1-D array, got shape {labels.shape}.")
    if counts.min() < per_class:
        raise ValueError(f"balanced_indices: `per_class`={per_class} exceeds the {counts.min()} examples "
                         f"of class {classes[counts.argmin()]!r}.")
    rng = np.random.default_rng(rng)
    chosen = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in classes]
    return rng.permutation(np.concatenate(chosen))


def _default_fit(model, x, y):
    return model.fit(x, y, epochs=50, batch_size=32, verbose=0)


class ActiveLearner:
    """The active learning loop: train, evaluate, score the pool, acquire, repeat.

    Each round trains from scratch, as Gal et al. 2017 retrain rather than fine-tune: with
    `reset="weights"` (default) the model `build_model()` returned in the first round (a
    compiled Keras model with tfbdl layers) is put back to its initial state, all its
    variables (weights, random-seed states) and its optimizer's; with `reset="rebuild"`
    `build_model()` is called every round. Resetting reuses the traced training and
    prediction functions: TensorFlow never frees the functions it traces for each new model
    (TensorFlow issue #80895; about 160 MB a round for the MNIST example's Bayesian CNN), so
    a long run of rebuilt models runs out of memory. Each round the learner then sets the KL
    weight to 1/N for the N labelled examples (`tfbdl.set_kl_weight`), trains it with
    `fit(model, x, y)`, records `evaluate(model)` (a dict, e.g. test accuracy) in `curve`,
    and queries the `acquire` best unlabelled examples by `acquisition`.

    Oracle mode (`pool_y` given, for experiments): `run(rounds)` labels the queried
    examples itself. Labels from a person: leave `pool_y=None`, give `initial` indices with
    `initial_labels`, and per round call `indices = learner.step()`, then
    `learner.teach(indices, labels)`.

    Args:
        build_model: callable () -> compiled Keras model with tfbdl Bayesian layers.
        pool_x: array (P, ...) of pool inputs.
        pool_y: array (P,) of labels (oracle mode) or None.
        initial: number of random initial labels, or an index array (see `balanced_indices`).
        acquire: examples acquired per round (k).
        acquisition: a name in ACQUISITIONS or a callable PredictiveResult -> (N,) scores.
        fit: callable (model, x, y); default `model.fit(x, y, epochs=50, batch_size=32)`.
        evaluate: callable model -> dict of numbers recorded each round, or None.
        initial_labels: labels of the `initial` indices when `pool_y` is None.
        subset_size: score only this many random unlabelled examples per round (None: all).
        num_samples: posterior samples per scored example (`tfbdl.predict`).
        seed: seed of the initial draw, the scored subsets and random acquisition.
        reset: "weights" (one model, reset to its initial state each round) or "rebuild".
        predict_kwargs: passed to `tfbdl.predict` (e.g. `output="logits"`).
    """

    def __init__(self, build_model, pool_x, pool_y=None, initial=20, acquire=10, acquisition="bald",
                 fit=None, evaluate=None, initial_labels=None, subset_size=None, num_samples=20,
                 seed=None, predict_kwargs=None, reset="weights"):
        pool_x = np.asarray(pool_x)
        _check_pool(build_model, pool_x, pool_y, fit, evaluate)
        _acquisition_function(acquisition)
        _validation.integer(acquire, "acquire", "ActiveLearner", 1)
        _validation.integer(num_samples, "num_samples", "ActiveLearner", 1)
        if subset_size is not None:
            _validation.integer(subset_size, "subset_size", "ActiveLearner", acquire)
        if reset not in RESETS:
            raise ValueError(f"ActiveLearner: `reset` must be one of {RESETS}, got reset={reset!r}.")
        self._rng = np.random.default_rng(seed)
        initial = self._initial_indices(initial, len(pool_x), acquire)
        if pool_y is None and initial_labels is None:
            raise ValueError("ActiveLearner: without `pool_y` (oracle labels), give the labels of the "
                             "`initial` indices as `initial_labels`, got initial_labels=None.")
        self.build_model, self.pool_x = build_model, pool_x
        self.pool_y = None if pool_y is None else np.asarray(pool_y)
        self.acquire, self.acquisition, self.subset_size = acquire, acquisition, subset_size
        self.num_samples, self.predict_kwargs = num_samples, dict(predict_kwargs or {})
        self.fit, self.evaluate = fit or _default_fit, evaluate
        self.labelled = np.zeros(0, dtype=np.int64)
        self.labels = {}
        self.curve = []
        self.model, self.reset, self._initial_state = None, reset, None
        self.teach(initial, initial_labels)

    def _initial_indices(self, initial, pool_size, acquire):
        if isinstance(initial, (int, np.integer)) and not isinstance(initial, bool):
            if not 1 <= initial <= pool_size - acquire:
                raise ValueError(f"ActiveLearner: `initial` must be between 1 and the pool size minus "
                                 f"`acquire` ({pool_size - acquire}), got initial={initial}.")
            return self._rng.choice(pool_size, initial, replace=False)
        indices = _check_indices(initial, pool_size, "initial", "ActiveLearner")
        if not 1 <= len(indices) <= pool_size - acquire:
            raise ValueError(f"ActiveLearner: `initial` must hold between 1 and {pool_size - acquire} "
                             f"indices, got {len(indices)}.")
        return indices

    def teach(self, indices, labels=None):
        """Adds the labels of the pool `indices` (from the oracle `pool_y` when `labels` is None)."""
        indices = _check_indices(indices, len(self.pool_x), "indices", "teach")
        again = np.intersect1d(indices, self.labelled)
        if again.size:
            raise ValueError(f"teach: `indices` {again[:5].tolist()} are already labelled.")
        if labels is None:
            if self.pool_y is None:
                raise ValueError("teach: no oracle labels (pool_y=None), so `labels` must be given, got labels=None.")
            labels = self.pool_y[indices]
        labels = np.asarray(labels)
        if labels.shape[:1] != indices.shape:
            raise ValueError(f"teach: `labels` must have one label per index ({len(indices)}), "
                             f"got shape {labels.shape}.")
        self.labels.update(zip(indices.tolist(), labels))
        self.labelled = np.concatenate([self.labelled, indices])

    def labelled_data(self):
        """(x, y) of the labelled examples, in the order they were labelled."""
        return self.pool_x[self.labelled], np.stack([self.labels[i] for i in self.labelled.tolist()])

    def fresh_model(self):
        """The untrained model of this round: `build_model()` in the first round (and in every
        round with reset="rebuild"), else the first round's model put back to its initial state."""
        if self.reset == "rebuild" or self.model is None:
            model = self.build_model()
            if self.reset == "weights":
                self._initial_state = _initial_state(model)
            return model
        for variable, value in zip(*self._initial_state):
            variable.assign(value)
        return self.model

    def train(self):
        """A fresh model trained on the labelled set with the KL weight 1/N; also `self.model`."""
        x, y = self.labelled_data()
        model = self.fresh_model()
        set_kl_weight(model, num_examples=len(x))
        start = time.perf_counter()
        self.fit(model, x, y)
        self.model, self._fit_seconds = model, time.perf_counter() - start
        return model

    def step(self):
        """One round: train, record the curve entry, query; in oracle mode also label the
        queried examples. Returns the queried pool indices."""
        model = self.train()
        entry = {"round": len(self.curve), "labelled": len(self.labelled), "fit_seconds": self._fit_seconds}
        entry.update(self.evaluate(model) if self.evaluate else {})
        self.curve.append(entry)
        indices = query(model, self.pool_x, self.acquire, self.acquisition, exclude=self.labelled,
                        subset_size=self.subset_size, num_samples=self.num_samples, rng=self._rng,
                        **self.predict_kwargs)
        if self.pool_y is not None:
            self.teach(indices)
        return indices

    def run(self, rounds):
        """`rounds` oracle rounds (needs `pool_y`); returns the learning curve."""
        _validation.integer(rounds, "rounds", "ActiveLearner.run", 1)
        if self.pool_y is None:
            raise ValueError("ActiveLearner.run: needs oracle labels `pool_y`; without them call step() "
                             "and teach(indices, labels) each round.")
        needed = rounds * self.acquire
        if needed > len(self.pool_x) - len(self.labelled):
            raise ValueError(f"ActiveLearner.run: rounds={rounds} acquire {needed} labels, more than the "
                             f"{len(self.pool_x) - len(self.labelled)} unlabelled pool examples.")
        for _ in range(rounds):
            self.step()
        return self.curve


def _initial_state(model):
    """(variables, values): every variable of `model` (weights and seed-generator states) and
    of its optimizer, whose slots are created here, and their current values."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        raise ValueError(f"ActiveLearner: `build_model` must return a compiled model (model.compile(...)); "
                         f"model {model.name!r} has no optimizer.")
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    variables = list(model.variables) + list(optimizer.variables)
    return variables, [variable.numpy() for variable in variables]


def _check_pool(build_model, pool_x, pool_y, fit, evaluate):
    for name, value in (("build_model", build_model), ("fit", fit), ("evaluate", evaluate)):
        if value is not None and not callable(value):
            raise ValueError(f"ActiveLearner: `{name}` must be callable, got {name}={value!r}.")
    if build_model is None:
        raise ValueError("ActiveLearner: `build_model` must be a callable returning a compiled model, got None.")
    if pool_x.ndim == 0 or len(pool_x) == 0:
        raise ValueError(f"ActiveLearner: `pool_x` must be a non-empty array of inputs, got shape {pool_x.shape}.")
    if pool_y is not None and len(pool_y) != len(pool_x):
        raise ValueError(f"ActiveLearner: `pool_y` must have one label per pool input ({len(pool_x)}), "
                         f"got {len(pool_y)}.")
