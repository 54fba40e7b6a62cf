"""Smoke run of examples/active_learning.py on a tiny budget: outputs written, curve shape."""

import importlib.util
import json
import pathlib

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _example():
    spec = importlib.util.spec_from_file_location("active_learning_example", ROOT / "examples" / "active_learning.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_active_learning_example_writes_figure_metrics_curves_and_logs(tmp_path):
    out, logs = tmp_path / "out", tmp_path / "tb"
    metrics = _example().main(["--rounds", "2", "--functions", "bald", "random", "--pool-subset", "200",
                               "--test-subset", "100", "--subset-size", "50", "--steps", "3",
                               "--num-samples", "3", "--test-samples", "2", "--validation-size", "0",
                               "--output-dir", str(out), "--logdir", str(logs)])
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    assert metrics["rounds"] == 2 and metrics["initial_labels"] == 20
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
