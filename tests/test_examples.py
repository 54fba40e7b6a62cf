"""The examples run end to end: a fast smoke run of each by default, the full demo with `-m slow`.

A smoke run has a tiny budget (a few steps, a data subset) and checks what the example
writes: TensorBoard event files (Keras' runs and the PosteriorMonitor's), PNG figures and
a flat metrics.json with finite numbers equal to what `main` returned.
"""

import importlib
import json
import math
import pathlib

import numpy as np
import pytest


def _example(name):
    return importlib.import_module(name)  # examples/ is on sys.path (conftest.py)


def _event_runs(logdir):
    """The TensorBoard runs under `logdir`, as paths relative to it."""
    return {str(path.parent.relative_to(logdir)) for path in pathlib.Path(logdir).rglob("events.out.tfevents.*")}


def _run(tmp_path, name, *options):
    metrics = _example(name).main([*options, "--verbose", "0",
                                   "--logdir", str(tmp_path / "tb"), "--output-dir", str(tmp_path / "out")])
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert written == metrics
    assert not list((tmp_path / "out").rglob(".*")), "a temporary file was left behind"
    return written


def _assert_finite(metrics, *keys):
    for key in keys:
        assert isinstance(metrics[key], float) and math.isfinite(metrics[key]), (key, metrics[key])


def _assert_figures(folder, *names):
    for name in names:
        assert (folder / name).stat().st_size > 1000, name


def test_moons_example_writes_metrics_figures_and_tensorboard_logs(tmp_path):
    metrics = _run(tmp_path, "moons", "--num-examples", "200", "--epochs", "3")
    _assert_finite(metrics, "test_accuracy", "test_nll", "test_ece", "fit_seconds")
    _assert_figures(tmp_path / "out", "predictive_mean.png", "predictive_std.png", "training_curves.png")
    assert {"train", "validation", "posterior"} <= _event_runs(tmp_path / "tb")
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["test_nll"] > 0


def test_moons_several_seeds_full_batch_study_network(tmp_path):
    metrics = _run(tmp_path, "moons", "--num-examples", "100", "--epochs", "2", "--hidden", "5",
                   "--batch-size", "0", "--seeds", "3,4")
    assert metrics["batch_size"] == 50 and metrics["hidden"] == 5 and metrics["seeds"] == "3,4"
    for key in ("test_accuracy", "test_nll", "test_ece"):
        per_seed = [metrics[f"{key}_seed3"], metrics[f"{key}_seed4"]]
        _assert_finite(metrics, f"{key}_mean", f"{key}_std", f"{key}_seed3", f"{key}_seed4")
        assert metrics[f"{key}_mean"] == pytest.approx(sum(per_seed) / 2)
        assert metrics[f"{key}_std"] == pytest.approx(abs(per_seed[0] - per_seed[1]) / math.sqrt(2))
    for seed in (3, 4):
        _assert_figures(tmp_path / "out" / f"seed{seed}", "predictive_mean.png", "training_curves.png")
        assert {"train", "validation", "posterior"} <= {
            run.split("/")[-1] for run in _event_runs(tmp_path / "tb") if run.startswith(f"seed{seed}/")}


def test_moons_rejects_bad_seeds(capsys):
    with pytest.raises(SystemExit):
        _example("moons").parse_args(["--seeds", "0,x"])
    assert "--seeds: must be comma-separated integers like 0,1,2, got '0,x'" in capsys.readouterr().err


def test_egg_times_example_cross_validates_and_draws(tmp_path):
    metrics = _run(tmp_path, "egg_times", "--folds", "2", "--epochs", "2", "--num-samples", "3",
                   "--histogram-samples", "50")
    _assert_finite(metrics, "cv_accuracy", "cv_accuracy_std", "cv_nll", "cv_nll_std", "fit_seconds")
    assert metrics["folds"] == 2 and metrics["examples"] == 639
    _assert_figures(tmp_path / "out", "predictive_plane.png", "soft_boiled_histograms.png", "training_curves.png")
    assert {"train", "posterior"} <= _event_runs(tmp_path / "tb")


def test_egg_times_class_weights_balance_the_classes_and_reweighting_undoes_them():
    egg_times = _example("egg_times")
    y = np.repeat([0, 1, 2], [202, 117, 320])
    weights = egg_times.class_weights(y, "balanced")
    assert weights[y].mean() == pytest.approx(1.0)  # the KL weight 1 / N stays honest
    assert weights * [202, 117, 320] == pytest.approx([639 / 3] * 3)
    assert egg_times.class_weights(y, "none").tolist() == [1.0, 1.0, 1.0]
    real = np.array([[0.2, 0.5, 0.3], [0.9, 0.05, 0.05]])
    balanced = real * weights / (real * weights).sum(axis=1, keepdims=True)
    assert egg_times.reweight(balanced, weights) == pytest.approx(real)


def test_convert_example_compares_three_models(tmp_path):
    metrics = _run(tmp_path, "convert", "--train-examples", "256", "--test-examples", "128", "--epochs", "1",
                   "--num-samples", "2", "--batch-size", "64")
    for model in ("deterministic", "converted", "finetuned"):
        _assert_finite(metrics, *(f"{model}_{split}_{score}" for split in ("val", "test")
                                  for score in ("accuracy", "nll", "ece")))
        _assert_figures(tmp_path / "out", f"reliability_{model}.png")
    assert metrics["test_nll"] == metrics["finetuned_test_nll"]
    _assert_finite(metrics, "test_accuracy", "test_nll", "test_ece", "fit_seconds")
    _assert_figures(tmp_path / "out", "finetune_curves.png")
    runs = _event_runs(tmp_path / "tb")
    assert {"deterministic/train", "bayesian/train", "bayesian/posterior"} <= runs


@pytest.mark.slow
def test_moons_demo_defaults_reach_95_percent(tmp_path):
    """The README's `make demo`, with its default settings (seed 0)."""
    metrics = _example("moons").main(["--verbose", "0", "--logdir", str(tmp_path / "tb"),
                                      "--output-dir", str(tmp_path / "out")])
    assert metrics["test_accuracy"] >= 0.95, metrics
    assert {"train", "validation", "posterior"} <= _event_runs(tmp_path / "tb")
