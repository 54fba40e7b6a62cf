"""Smoke run of examples/active_learning.py on a tiny budget: outputs written, curve shape."""

import importlib
import json

import numpy as np
import pytest

TINY = ["--pool-subset", "200", "--test-subset", "100", "--subset-size", "50", "--steps", "3",
        "--num-samples", "3", "--test-samples", "2", "--validation-size", "0"]


def _example():
    # Imported by name from examples/ (on sys.path, conftest.py), so that `--jobs` workers,
    # spawned processes, can unpickle its functions.
    return importlib.import_module("active_learning")


def test_active_learning_example_writes_figure_metrics_curves_and_logs(tmp_path):
    out, logs = tmp_path / "out", tmp_path / "tb"
    metrics = _example().main(["--rounds", "2", "--functions", "bald", "random", "--jobs", "2", *TINY,
                               "--output-dir", str(out), "--logdir", str(logs)])
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    assert metrics["rounds"] == 2 and metrics["initial_labels"] == 20
    assert metrics["runs_finished"] == metrics["runs_planned"] == 2
    for function in ("bald", "random"):
        assert 0 <= metrics[f"final_accuracy_{function}"] <= 1
        assert f"labels_to_95_{function}" in metrics
    assert (out / "accuracy_vs_labels.png").stat().st_size > 1000
    rows = (out / "curves.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 2 and rows[1].startswith("bald,0,0,20,")
    runs = {path.parent.name for path in logs.rglob("events.out.tfevents.*")}
    assert {"train", "posterior"} <= runs


def test_bayesian_option_chooses_which_layers_are_bayesian():
    example = _example()
    import tfbdl
    for choice, bayesian_count in (("all", 4), ("dense", 2)):
        model = example.build_model(example.parse_args(["--bayesian", choice]), seed=0)
        assert len(tfbdl.bayesian_layers(model)) == bayesian_count, choice
        assert [type(layer).__name__ for layer in model.layers][-2:] == ["DenseFlipout", "DenseFlipout"]


def test_architecture_option_builds_gal_or_the_small_cnn():
    example = _example()
    for choice, pools, kernel_weights in (("gal", 1, 513_792), ("small", 2, 93_216)):
        model = example.build_model(example.parse_args(["--architecture", choice]), seed=0)
        assert [type(layer).__name__ for layer in model.layers].count("MaxPooling2D") == pools, choice
        assert model.output_shape == (None, 10)
        kernel_means = [weight for weight in model.weights if weight.path.endswith("kernel_loc")]
        assert len(kernel_means) == 4 and sum(int(np.prod(w.shape)) for w in kernel_means) == kernel_weights, choice


def test_one_process_run_and_outputs_of_unfinished_runs(tmp_path):
    example = _example()
    args = example.parse_args(["--rounds", "1", "--functions", "max_entropy", "variation_ratios", *TINY,
                               "--output-dir", str(tmp_path), "--logdir", str(tmp_path / "tb")])
    (task, curve), = list(example.completed_runs(example.parse_args(
        ["--rounds", "1", "--functions", "variation_ratios", *TINY, "--logdir", str(tmp_path / "tb")])))
    assert task == ("variation_ratios", 0) and [entry["labelled"] for entry in curve] == [20]
    # One of the two planned runs finished: the outputs hold it and say so.
    metrics = example.write_outputs(args, {task: curve}, seconds=1.0)
    assert (metrics["runs_finished"], metrics["runs_planned"], metrics["seeds"]) == (1, 2, 1)
    assert "final_accuracy_variation_ratios" in metrics and "final_accuracy_max_entropy" not in metrics
    rows = (tmp_path / "curves.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("variation_ratios,0,0,20,")
    assert (tmp_path / "accuracy_vs_labels.png").stat().st_size > 1000
    # --curves summarizes curves.csv files (here two, of other seeds) without training.
    other = (tmp_path / "curves.csv").read_text().replace("variation_ratios,0,", "variation_ratios,7,")
    (tmp_path / "other.csv").write_text(other)
    merged = example.main(["--curves", str(tmp_path / "curves.csv"), str(tmp_path / "other.csv"),
                           "--output-dir", str(tmp_path / "merged")])
    assert (merged["seeds"], merged["runs_finished"], merged["runs_planned"], merged["rounds"]) == (2, 2, 2, 1)
    assert merged["final_accuracy_variation_ratios"] == pytest.approx(curve[-1]["accuracy"], abs=1e-4)
    with pytest.raises(ValueError, match="repeats the run variation_ratios seed 0"):
        example.main(["--curves", str(tmp_path / "curves.csv"), str(tmp_path / "curves.csv")])


def test_a_failing_worker_run_raises_in_main_and_writes_nothing(tmp_path):
    # 12 pool images hold fewer than 2 of some class: balanced_indices fails inside the workers.
    options = ["--rounds", "1", "--functions", "bald", "random", "--jobs", "2", *TINY, "--pool-subset", "12",
               "--output-dir", str(tmp_path / "out"), "--logdir", str(tmp_path / "tb")]
    with pytest.raises(ValueError, match="per_class"):
        _example().main(options)
    assert not (tmp_path / "out").exists()
