"""The examples run end to end: a fast smoke run by default, the full demo with `-m slow`."""

import importlib.util
import json
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _moons():
    spec = importlib.util.spec_from_file_location("moons_example", ROOT / "examples" / "moons.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _event_files(logdir):
    return {path.parent.name for path in pathlib.Path(logdir).rglob("events.out.tfevents.*")}


def test_moons_example_writes_metrics_figures_and_tensorboard_logs(tmp_path):
    metrics = _moons().main(["--num-examples", "200", "--epochs", "3", "--verbose", "0",
                             "--logdir", str(tmp_path / "tb"), "--output-dir", str(tmp_path / "out")])
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == metrics
    for figure in ("predictive_mean.png", "predictive_std.png", "training_curves.png"):
        assert (tmp_path / "out" / figure).stat().st_size > 1000
    assert {"train", "validation", "posterior"} <= _event_files(tmp_path / "tb")
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["test_nll"] > 0


@pytest.mark.slow
def test_moons_demo_defaults_reach_95_percent(tmp_path):
    """The README's `make demo`, with its default settings (seed 0)."""
    metrics = _moons().main(["--verbose", "0", "--logdir", str(tmp_path / "tb"),
                             "--output-dir", str(tmp_path / "out")])
    assert metrics["test_accuracy"] >= 0.95, metrics
    assert {"train", "validation", "posterior"} <= _event_files(tmp_path / "tb")
