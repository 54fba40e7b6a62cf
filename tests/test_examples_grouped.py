"""Smoke run of examples/grouped_moons.py: metrics, figures and TensorBoard logs are written."""

import importlib
import json
import math


def test_grouped_moons_smoke(tmp_path):
    example = importlib.import_module("grouped_moons")
    metrics = example.main(["--seeds", "0", "--groups", "3", "--train-per-group", "10", "--test-per-group", "10",
                            "--epochs", "1", "--fewshot-epochs", "1", "--fewshot-groups", "2", "--hidden", "3",
                            "--verbose", "0", "--logdir", str(tmp_path / "tb"), "--output-dir", str(tmp_path / "out")])
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == metrics
    for key in ("test_accuracy_pooled", "test_accuracy_separate", "test_accuracy_onehot",
                "test_accuracy_hierarchical", "fewshot_accuracy_informed", "fewshot_accuracy_scratch",
                "tau_layer1_kernel", "fit_seconds"):
        assert math.isfinite(metrics[key]), key
    for name in ("surfaces_separate.png", "surfaces_hierarchical.png", "tau_per_layer.png"):
        assert (tmp_path / "out" / name).stat().st_size > 1000, name
    assert list((tmp_path / "tb").rglob("events.out.tfevents.*"))
