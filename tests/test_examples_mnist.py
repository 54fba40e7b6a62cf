"""Smoke runs of the MNIST examples on tiny budgets: outputs written, numbers finite."""

import gzip
import importlib.util
import json
import math
import pathlib

import keras
import numpy as np
import pytest
import sklearn.metrics

import tfbdl

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ["--train-subset", "128", "--validation-size", "64", "--test-subset", "100", "--epochs", "1",
        "--batch-size", "64", "--num-samples", "5", "--verbose", "0"]


def _example(name):
    spec = importlib.util.spec_from_file_location(f"{name}_example", ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _folders(tmp_path):
    return ["--output-dir", str(tmp_path / "out"), "--logdir", str(tmp_path / "tb")]


def _check_outputs(tmp_path, metrics, figures):
    out = tmp_path / "out"
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    for key in ("test_accuracy", "test_nll", "test_ece", "fit_seconds", "final_loss", "snr_below_1"):
        assert math.isfinite(metrics[key]), (key, metrics)
    assert 0 <= metrics["test_accuracy"] <= 1 and metrics["test_nll"] > 0
    for figure in figures + ["training_curves.png"]:
        assert (out / figure).stat().st_size > 1000, figure
    runs = {path.parent.name for path in (tmp_path / "tb").rglob("events.out.tfevents.*")}
    assert {"train", "validation", "posterior"} <= runs


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory):
    """One tiny mnist_cnn.py run shared by the CNN and OOD tests."""
    tmp_path = tmp_path_factory.mktemp("cnn")
    metrics = _example("mnist_cnn").main(TINY + ["--prior-scale", "kaiming"] + _folders(tmp_path))
    return tmp_path, metrics


def test_mnist_cnn_writes_metrics_figures_logs_and_a_loadable_model(cnn_run):
    tmp_path, metrics = cnn_run
    _check_outputs(tmp_path, metrics, ["reliability.png", "entropy_histogram.png"])
    assert metrics["train_examples"] == 128 and metrics["test_examples"] == 100
    model = keras.saving.load_model(tmp_path / "out" / "mnist_cnn.keras")
    assert [type(layer).__name__ for layer in tfbdl.bayesian_layers(model)] == [
        "Conv2DFlipout", "Conv2DFlipout", "DenseFlipout", "DenseFlipout"]
    assert tfbdl.bayesian_layers(model)[0].prior.get_config()["scale"] == "kaiming"


def test_mnist_cnn_estimator_option_switches_every_layer():
    model = _example("mnist_cnn").build_model("reparameterization", 1.0, 1e-3, seed=0)
    assert {type(layer).__name__ for layer in tfbdl.bayesian_layers(model)} == {
        "Conv2DReparameterization", "DenseReparameterization"}


def _scores_agree_with_sklearn(out, metrics):
    scores = np.load(out / "scores.npz")
    for score in ("entropy", "mutual_information", "max_prob"):
        inside, outside = scores[f"in_{score}"], scores[f"out_{score}"]
        labels = np.r_[np.zeros(len(inside)), np.ones(len(outside))]
        expected = sklearn.metrics.roc_auc_score(labels, np.r_[inside, outside])
        assert metrics[f"auroc_{score}"] == pytest.approx(expected, abs=1e-12)
        assert (out / f"{score}_histogram.png").stat().st_size > 1000


def test_ood_scores_fashion_mnist_with_the_saved_cnn_and_auroc_matches_sklearn(cnn_run, tmp_path):
    model_path = cnn_run[0] / "out" / "mnist_cnn.keras"
    metrics = _example("ood").main(["--model", str(model_path), "--test-subset", "80", "--num-samples", "5",
                                    "--verbose", "0"] + _folders(tmp_path))
    assert metrics["fit_seconds"] == 0.0 and metrics["ood"] == "fashion_mnist"
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == metrics
    _scores_agree_with_sklearn(tmp_path / "out", metrics)


def _write_idx(path, images):
    header = bytes([0, 0, 8, images.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in images.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + images.astype(np.uint8).tobytes())


def test_ood_trains_the_cnn_when_absent_and_reads_a_folder_of_idx_files(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    noise = np.random.default_rng(0).integers(0, 256, size=(60, 28, 28))
    _write_idx(folder / "noise-images-idx3-ubyte.gz", noise)
    model_path = tmp_path / "cnn" / "mnist_cnn.keras"
    cnn_args = " ".join(TINY[:-2] + ["--logdir", str(tmp_path / "cnn_tb")])
    metrics = _example("ood").main(["--model", str(model_path), "--cnn-args", cnn_args, "--ood-dir", str(folder),
                                    "--test-subset", "50", "--num-samples", "5", "--verbose", "0"]
                                   + _folders(tmp_path))
    assert model_path.exists() and metrics["fit_seconds"] > 0
    assert metrics["ood_examples"] == 50  # --test-subset cuts both sets
    _scores_agree_with_sklearn(tmp_path / "out", metrics)


def test_ood_dir_without_idx_files_raises_naming_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="--ood-dir.*idx3"):
        _example("ood").load_idx_folder(tmp_path)


def test_lenet5_writes_metrics_figures_and_logs(tmp_path):
    metrics = _example("lenet5").main(TINY + _folders(tmp_path))
    _check_outputs(tmp_path, metrics, ["reliability.png", "entropy_histogram.png"])


def test_mnist_mlp_both_priors_write_a_comparison_with_tau_and_chi_square(tmp_path):
    metrics = _example("mnist_mlp").main(TINY + ["--prior", "both"] + _folders(tmp_path))
    out = tmp_path / "out"
    for kind in ("gaussian", "hierarchical"):
        run = json.loads((out / kind / "metrics.json").read_text())
        assert run["prior"] == kind and math.isfinite(run["chi2_errors"]) and 0 <= run["chi2_p_value"] <= 1
        assert 0 <= run["misclassification_auroc_mutual_information"] <= 1
        for figure in ("confusion_matrix.png", "entropy_histogram.png", "mutual_information_histogram.png"):
            assert (out / kind / figure).stat().st_size > 1000
        assert metrics[f"{kind}_test_accuracy"] == run["test_accuracy"]
    taus = [key for key in metrics if key.startswith("hierarchical_tau_")]
    assert sorted(taus) == ["hierarchical_tau_hidden1", "hierarchical_tau_hidden2", "hierarchical_tau_output"]
    assert not any(key.startswith("gaussian_tau_") for key in metrics)
    assert (out / "comparison.png").stat().st_size > 1000
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert {"hierarchical", "gaussian"} <= {path.name for path in (tmp_path / "tb").iterdir()}


def test_error_spread_is_scipy_chi_square_against_class_proportional_counts():
    error_spread = _example("mnist_mlp").error_spread
    y = np.repeat(np.arange(10), [100, 200] + [100] * 8)
    predicted = y.copy()
    predicted[:10] = 1             # 10 errors in class 0
    predicted[100:120] = 0         # 20 errors in class 1 (twice as big): in proportion
    statistic, p_value, wrong = error_spread(y, predicted)
    expected = 30 * np.r_[100, 200, [100] * 8] / 1100
    assert wrong.tolist() == [10, 20] + [0] * 8
    assert statistic == pytest.approx(np.sum((wrong - expected) ** 2 / expected))
    even = np.repeat(np.arange(10), 100)
    assert error_spread(even, (even + 1) % 10)[0] == pytest.approx(0.0)
