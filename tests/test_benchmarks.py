"""The benchmark harness end to end on tiny sizes (structure only: no timing assertions)."""

import json
import math
import os
import subprocess

import matplotlib.pyplot as plt
import pytest

from benchmarks import cases, report, run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("bench")
    run.main(["--tiny", "--out", str(out_dir)])
    return out_dir, json.loads((out_dir / "results.json").read_text())


def test_every_case_is_measured_once_per_repeat(tiny_run):
    _, results = tiny_run
    expected = {name for name, _ in run.speed_cases(run.TINY)}
    assert set(results["step_seconds"]) == expected
    # 9 dense + 7 conv variants (Keras 3 and tf_keras baselines, the two-kernel floor,
    # 3 + 3 and 2 + 2 Bayesian layers), and Dense/DenseFlipout at every distinct scaling point.
    assert len(expected) == 9 + 7 + 2 * len({(16, 8), (32, 8)})
    assert {"mlp: floor.TwoKernelDense", "cnn: floor.TwoKernelConv2D"} <= expected
    for name, medians in results["step_seconds"].items():
        assert len(medians) == run.TINY.repeats, name
        assert all(math.isfinite(value) and value > 0 for value in medians), name
    for name, seconds in results["prediction_seconds"].items():
        assert len(seconds) == run.TINY.predict_repeats and all(value > 0 for value in seconds), name


def test_memory_is_measured_for_each_layer_in_its_own_process(tiny_run):
    _, results = tiny_run
    assert set(results["memory"]) == {
        "keras.layers.Dense", "tfbdl.layers.DenseFlipout", "tfp.layers.DenseFlipout"}
    assert all(peak > 0 for peak in results["memory"].values())


def test_report_has_every_table_and_the_scaling_plot(tiny_run):
    out_dir, results = tiny_run
    text = (out_dir / "RESULTS.md").read_text()
    for heading in ("## Targets", "## Dense", "## Convolution", "## Prediction", "## Memory", "## Scaling"):
        assert heading in text
    for what, *_, floor in report.TARGETS:
        row = next(line for line in text.splitlines() if line.startswith(f"| {what} |"))
        floor_cell = row.strip().strip("|").split("|")[-1].strip()
        assert (floor_cell == "") == (floor is None), row
    assert results["machine"]["cores"] == os.cpu_count()
    assert {"tensorflow", "keras", "tensorflow-probability", "tf-keras"} <= set(results["versions"])
    assert results["device"].startswith("/gpu:0 (" if run.has_gpu() else "/cpu:0")
    assert f"cases run on\n  {results['device']}." in text
    image = plt.imread(out_dir / "scaling.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_gpu_results_go_to_their_own_folders():
    assert run.default_out_dir("full", gpu=False) == run.ROOT / "benchmarks"
    assert run.default_out_dir("full", gpu=True) == run.ROOT / "benchmarks" / "gpu"
    assert run.default_out_dir("quick", gpu=False).name == "benchmarks-quick"
    assert run.default_out_dir("quick", gpu=True).name == "benchmarks-quick-gpu"


def test_time_to_accuracy_is_reachable_through_the_runner(capfd, monkeypatch):
    with pytest.raises(SystemExit) as exit_info:
        run.main(["--time-to-accuracy", "--help"])
    assert exit_info.value.code == 0
    assert "python -m benchmarks.time_to_accuracy" in capfd.readouterr().out
    forwarded = []
    monkeypatch.setattr(run.subprocess, "run", lambda command, cwd: forwarded.append(command) or
                        subprocess.CompletedProcess(command, 0))
    with pytest.raises(SystemExit):
        run.main(["--seeds", "0", "--time-to-accuracy", "--out", "somewhere"])
    assert forwarded[0][1:] == ["-m", "benchmarks.time_to_accuracy", "--seeds", "0", "--out", "somewhere"]
    monkeypatch.undo()
    with pytest.raises(SystemExit):
        run.main(["--quick", "--no-such-option"])
    assert "unrecognized arguments: --no-such-option" in capfd.readouterr().err


def test_the_floor_layers_have_two_kernels_and_sum_two_linear_ops():
    import keras
    import numpy as np

    from benchmarks import floor

    rng = np.random.default_rng(0)
    for layer, keras_class, x in ((floor.TwoKernelDense(3), keras.layers.Dense, np.ones((2, 4), "float32")),
                                  (floor.TwoKernelConv2D(3, 2), keras.layers.Conv2D, np.ones((1, 5, 5, 2), "float32"))):
        layer.build(x.shape)
        assert len(layer.trainable_weights) == 3  # kernel, second kernel, bias
        # Distinct kernels (one initializer instance gives both the same values).
        layer.second_kernel.assign(rng.standard_normal(layer.second_kernel.shape).astype("float32"))
        twin = keras_class.from_config(layer.get_config())
        twin.build(x.shape)
        twin.set_weights([layer.kernel.numpy() + layer.second_kernel.numpy(), layer.bias.numpy()])
        np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), keras.ops.convert_to_numpy(twin(x)),
                                   rtol=1e-5, atol=1e-6)


def test_tfp_cases_refuse_to_run_on_keras_3(monkeypatch):
    monkeypatch.delenv("TF_USE_LEGACY_KERAS", raising=False)
    with pytest.raises(ValueError, match="TF_USE_LEGACY_KERAS=1"):
        cases.layer_classes("tfp", "Flipout")
    with pytest.raises(ValueError, match="library='torch'"):
        cases.layer_classes("torch", None)
