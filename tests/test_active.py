"""tfbdl.active: acquisition scores against hand-computed values, top-k, the loop, errors."""

import keras
import numpy as np
import pytest

import tfbdl
from tfbdl import active

# Two weight samples, three examples, two classes.
SAMPLES = np.array([[[1.0, 0.0], [0.5, 0.5], [0.9, 0.1]],
                    [[0.0, 1.0], [0.5, 0.5], [0.9, 0.1]]])


def _result(samples=SAMPLES):
    mean = samples.mean(axis=0)
    entropy = -np.sum(np.where(mean > 0, mean * np.log(np.where(mean > 0, mean, 1)), 0), axis=-1)
    per_sample = -np.sum(np.where(samples > 0, samples * np.log(np.where(samples > 0, samples, 1)), 0), axis=-1)
    return tfbdl.PredictiveResult(mean=mean, std=samples.std(axis=0), entropy=entropy,
                                  aleatoric=per_sample.mean(axis=0),
                                  mutual_information=entropy - per_sample.mean(axis=0),
                                  predicted_class=mean.argmax(-1), samples=samples,
                                  output="probabilities", num_samples=len(samples))


def test_scores_match_hand_computed_values():
    result = _result()
    log2 = np.log(2.0)
    h01 = -(0.9 * np.log(0.9) + 0.1 * np.log(0.1))
    # Example 0: samples disagree completely (BALD log 2); 1: agree on 50/50 (BALD 0); 2: agree.
    np.testing.assert_allclose(active.bald(result), [log2, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(active.max_entropy(result), [log2, log2, h01], atol=1e-12)
    np.testing.assert_allclose(active.variation_ratios(result), [0.5, 0.5, 0.1], atol=1e-12)
    np.testing.assert_allclose(active.mean_std(result), [0.5, 0.0, 0.0], atol=1e-12)
    random = active.score(result, "random", rng=0)
    assert random.shape == (3,) and ((0 <= random) & (random < 1)).all()


def test_bald_of_a_real_prediction_is_entropy_of_mean_minus_mean_entropy():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), tfbdl.layers.DenseFlipout(4, activation="softmax", seed=1,
                              posterior=tfbdl.posteriors.MeanFieldNormal(0.5))])
    result = tfbdl.predict(model, np.random.default_rng(0).normal(size=(6, 3)), num_samples=8,
                           return_samples=True, progress=False)
    p = result.samples.astype(np.float64)
    expected = (-np.sum(p.mean(0) * np.log(p.mean(0)), -1)) - np.mean(-np.sum(p * np.log(p), -1), 0)
    np.testing.assert_allclose(active.bald(result), expected, atol=1e-5)
    assert expected.max() > 1e-3  # the samples really disagree


def test_top_k_never_repeats_and_never_takes_an_excluded_index():
    scores = np.array([0.9, 0.8, 0.8, 0.1, 0.95, 0.7])
    indices = np.array([10, 11, 12, 13, 14, 15])
    chosen = active.top_k(scores, 3, indices=indices, exclude=[14])
    np.testing.assert_array_equal(chosen, [10, 11, 12])
    everything = active.top_k(scores, 5, indices=indices, exclude=[14])
    assert len(set(everything.tolist())) == 5 and 14 not in everything


def test_query_scores_a_subset_of_the_unlabelled_pool():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), tfbdl.layers.DenseFlipout(3, activation="softmax", seed=0)])
    pool = np.random.default_rng(1).normal(size=(40, 2)).astype("float32")
    labelled = np.arange(0, 40, 2)
    chosen = active.query(model, pool, 5, "bald", exclude=labelled, subset_size=8, num_samples=4, rng=0)
    assert len(set(chosen.tolist())) == 5 and not np.isin(chosen, labelled).any()


class _Untouchable:
    """A stand-in model that fails on any use."""

    def __getattr__(self, name):
        raise AssertionError(f"random acquisition used the model ({name})")

    def __call__(self, *args, **kwargs):
        raise AssertionError("random acquisition called the model")


def test_random_query_draws_distinct_unlabelled_indices_without_the_model():
    pool = np.zeros((20, 2), dtype="float32")
    labelled = np.arange(0, 20, 4)
    rng = np.random.default_rng(0)
    draws = [active.query(_Untouchable(), pool, 3, "random", exclude=labelled, subset_size=5, rng=rng)
             for _ in range(100)]
    for chosen in draws:
        assert len(set(chosen.tolist())) == 3 and not np.isin(chosen, labelled).any()
    # Uniform over the whole unlabelled pool, not over one scored subset.
    assert set(np.concatenate(draws).tolist()) == set(range(20)) - set(labelled.tolist())


def _build():
    model = keras.Sequential([keras.Input((2,)), tfbdl.layers.DenseFlipout(8, activation="tanh", seed=0),
                              tfbdl.layers.DenseFlipout(2, activation="softmax", seed=1)])
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


def _fit(model, x, y):
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)


def _pool():
    (x, y), _ = tfbdl.data.two_moons(60)
    return x.astype("float32"), y.reshape(-1).astype("int32")


def test_learner_runs_two_oracle_rounds_with_one_curve_entry_per_round():
    x, y = _pool()
    learner = active.ActiveLearner(_build, x, y, initial=active.balanced_indices(y, 2, rng=0), acquire=5,
                                   fit=_fit, evaluate=lambda model: {"accuracy": 0.5}, num_samples=4, seed=0)
    curve = learner.run(rounds=2)
    assert [entry["labelled"] for entry in curve] == [4, 9] and [e["round"] for e in curve] == [0, 1]
    assert len(learner.labelled) == 14 and len(set(learner.labelled.tolist())) == 14
    kl_weight = float(tfbdl.bayesian_layers(learner.model)[0].kl_weight.numpy())
    assert kl_weight == pytest.approx(1 / 9)


@pytest.mark.parametrize("reset", ["weights", "rebuild"])
def test_every_round_trains_from_the_initial_state(reset):
    x, y = _pool()
    seen = []

    def fit(model, x, y):  # records the state each round starts from (but the KL weight), then trains
        for layer in tfbdl.bayesian_layers(model):
            assert float(layer.kl_weight.numpy()) == pytest.approx(1 / len(x))
        state = [v.numpy() for v in model.variables if not v.path.endswith("kl_weight")]
        seen.append((model, state, int(model.optimizer.iterations.numpy())))
        _fit(model, x, y)

    def build():  # the same initial weights on every call
        keras.utils.set_random_seed(5)
        return _build()

    learner = active.ActiveLearner(build, x, y, initial=[0, 1, 2, 3], acquire=3, fit=fit, num_samples=3,
                                   seed=0, reset=reset)
    learner.run(rounds=3)
    fresh = [v.numpy() for v in build().variables if not v.path.endswith("kl_weight")]
    for model, start, iterations in seen:
        assert iterations == 0 and len(start) == len(fresh)
        for value, expected in zip(start, fresh):
            np.testing.assert_array_equal(value, expected)
    assert int(learner.model.optimizer.iterations.numpy()) > 0  # the last round did train
    assert len({id(model) for model, _, _ in seen}) == (1 if reset == "weights" else 3)


def test_learner_takes_labels_from_the_user_round_by_round():
    x, y = _pool()
    learner = active.ActiveLearner(_build, x, initial=[0, 1, 2], initial_labels=y[:3], acquire=4, fit=_fit,
                                   num_samples=3, seed=0)
    asked = learner.step()
    learner.teach(asked, y[asked])
    assert len(learner.labelled) == 7 and learner.curve[-1]["labelled"] == 3
    np.testing.assert_array_equal(learner.labelled_data()[1], y[learner.labelled])


@pytest.mark.parametrize("call, message", [
    (lambda: active.top_k([1.0, 2.0], 3), "k=3"),
    (lambda: active.top_k([1.0, np.nan], 1), "non-finite"),
    (lambda: active.top_k([1.0, 2.0], 1, indices=[4, 4]), "repeats"),
    (lambda: active.score(_result(), "bold"), "acquisition='bold'"),
    (lambda: active.bald("not a result"), "PredictiveResult"),
    (lambda: active.balanced_indices([0, 0, 1], 2), "per_class"),
    (lambda: active.ActiveLearner(_build, np.zeros((5, 2)), initial=2, acquire=1), "initial_labels"),
    (lambda: active.ActiveLearner(_build, np.zeros((5, 2)), np.zeros(4)), "pool_y"),
    (lambda: active.ActiveLearner(_build, np.zeros((5, 2)), np.zeros(5), initial=2, acquire=0), "acquire=0"),
    (lambda: active.ActiveLearner(_build, np.zeros((5, 2)), np.zeros(5), initial=[0, 9]), "outside"),
    (lambda: active.ActiveLearner("model", np.zeros((5, 2)), np.zeros(5), initial=2), "build_model"),
    (lambda: active.ActiveLearner(_build, np.zeros((5, 2)), np.zeros(5), initial=2, reset="none"), "reset='none'"),
    (lambda: active.ActiveLearner(lambda: keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)]),
                                  np.zeros((20, 2)), np.zeros(20), initial=2, acquire=1).step(), "compiled model"),
])
def test_bad_arguments_get_clear_errors(call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        call()


def test_teach_refuses_labelled_or_unlabelled_indices_without_changing_state():
    x, y = _pool()
    learner = active.ActiveLearner(_build, x, y, initial=[0, 1], acquire=2, fit=_fit)
    with pytest.raises(ValueError, match="already labelled"):
        learner.teach([5, 1])
    with pytest.raises(ValueError, match="one label per index"):
        learner.teach([5, 6], labels=[1])
    np.testing.assert_array_equal(learner.labelled, [0, 1])
