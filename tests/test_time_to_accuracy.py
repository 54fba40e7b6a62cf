"""benchmarks.time_to_accuracy: the --tiny run end to end (structure only, no timing
assertions), the threshold-crossing medians on hand-made curves, the -gpu output names (GPU
faked), the command-line checks."""

import json

import matplotlib.image
import numpy as np
import pytest

from benchmarks import run
from benchmarks import time_to_accuracy as tta

NAMES = [run.case_name(library, estimator, "cnn") for library, estimator in tta.IMPLEMENTATIONS]
# 5% is soon reached or not (structure only); 100% never is, so every run goes the full epoch.
THRESHOLDS = "0.05,1"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("time_to_accuracy")
    tta.main(["--tiny", "--seeds", "0", "--max-epochs", "1", "--thresholds", THRESHOLDS,
              "--num-samples", "2", "--jobs", "4", "--out", str(out_dir)])
    (json_path,) = out_dir.glob("time_to_accuracy*.json")  # time_to_accuracy-gpu.json on a GPU
    return json_path.with_suffix(""), json.loads(json_path.read_text())


def test_one_curve_per_implementation_and_seed(tiny_run):
    _, results = tiny_run
    runs = [(curve["implementation"], curve["seed"]) for curve in results["curves"]]
    assert sorted(runs) == sorted((name, 0) for name in NAMES)
    assert list(results["time_to_accuracy"]) == NAMES


def test_curves_advance_by_half_epochs_with_increasing_clocks(tiny_run):
    _, results = tiny_run
    for curve in results["curves"]:
        points = curve["points"]
        assert [point["epochs"] for point in points] == [0.5, 1.0], curve["implementation"]
        for clock in ("wall_seconds", "cpu_seconds"):
            values = [point[clock] for point in points]
            assert values[0] > 0 and np.all(np.diff(values) > 0), (curve["implementation"], clock)
        assert all(0 <= point["accuracy"] <= 1 for point in points)
        assert all(point["evaluation_seconds"] > 0 for point in points)


def test_the_unreachable_threshold_is_not_reached(tiny_run):
    _, results = tiny_run
    for name, times in results["time_to_accuracy"].items():
        assert times["1"] == {"wall_seconds": None, "epochs": None, "cpu_seconds": None,
                              "seeds_reached": 0, "seeds": 1}, name
        assert set(times) == {"0.05", "1"}
    assert results["target"]["threshold"] == 0.05  # the ratio is taken at the first threshold


def test_markdown_has_a_row_per_implementation_and_the_png_exists(tiny_run):
    stem, results = tiny_run
    text = stem.with_suffix(".md").read_text()
    for name in NAMES:
        assert sum(line.startswith(f"| `{name}` |") for line in text.splitlines()) == 1, name
    assert ("| implementation | 5%: wall s | 5%: epochs | 5%: CPU s | 5%: seeds reached | "
            "100%: wall s") in text
    assert f"{results['machine']['cores']} cores" in text and "Device used: /" in text
    assert "target <= 0.6" in text
    assert {"tensorflow", "keras", "tensorflow-probability", "tf-keras"} <= set(results["versions"])
    image = matplotlib.image.imread(stem.with_suffix(".png"))
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def curve(name, accuracies, seconds_per_half_epoch):
    """A hand-made curve: evaluations every half epoch, CPU time 1.5x the wall time."""
    return {"implementation": name, "points": [
        {"epochs": 0.5 * (i + 1), "wall_seconds": seconds_per_half_epoch * (i + 1),
         "cpu_seconds": 1.5 * seconds_per_half_epoch * (i + 1), "accuracy": accuracy}
        for i, accuracy in enumerate(accuracies)]}


def test_medians_count_the_first_crossing_and_missed_thresholds_as_infinite():
    curves = [
        curve("a", [0.97, 0.986, 0.984, 0.991], 10),  # crosses 98.5% at 1 epoch, dips, 99% at 2
        curve("a", [0.985, 0.99], 12),  # exactly at the thresholds counts as reached
        curve("a", [0.95, 0.96, 0.97], 8),  # reaches neither
    ]
    summary = tta.summarize(curves, [0.985, 0.99])["a"]
    assert summary["0.985"] == {"wall_seconds": 20, "epochs": 1.0, "cpu_seconds": 30,
                                "seeds_reached": 2, "seeds": 3}
    assert summary["0.99"] == {"wall_seconds": 40, "epochs": 2.0, "cpu_seconds": 60,
                               "seeds_reached": 2, "seeds": 3}
    # Half the seeds miss it: the median is "not reached", not the median of the others.
    assert tta.time_to_threshold([curves[0], curves[2]], 0.985) == {
        "wall_seconds": None, "epochs": None, "cpu_seconds": None, "seeds_reached": 1, "seeds": 2}
    assert tta.first_crossing(curves[0]["points"], 0.985)["epochs"] == 1.0
    assert tta.first_crossing(curves[2]["points"], 0.985) is None


def test_target_ratio_takes_tfbdls_fastest_estimator():
    flipout, reparameterization, tfp = NAMES[1], NAMES[2], tta.TFP_PEER
    curves = [curve(flipout, [0.98, 0.986], 15), curve(reparameterization, [0.986], 10),
              curve(tfp, [0.98, 0.98, 0.986], 10), curve(NAMES[0], [0.99], 1)]
    target = tta.target_ratio(tta.summarize(curves, [0.985]), 0.985)
    assert target["tfbdl"] == reparameterization and target["ratio"] == pytest.approx(10 / 30)
    assert target["met"] is True
    slow_peer = curves[:2] + [curve(tfp, [0.98], 10)]
    unreached = tta.target_ratio(tta.summarize(slow_peer, [0.985]), 0.985)
    assert unreached["ratio"] is None and unreached["met"] is None


def test_a_gpu_machine_writes_gpu_suffixed_files(tmp_path, monkeypatch):
    flipout, reparameterization, tfp = NAMES[1], NAMES[2], tta.TFP_PEER
    accuracies = {NAMES[0]: [0.99], flipout: [0.986, 0.99], reparameterization: [0.98, 0.99],
                  tfp: [0.98, 0.98, 0.986, 0.99]}
    curves = [dict(curve(name, values, 10), seed=0, device="/gpu:0 (a GPU)")
              for name, values in accuracies.items()]
    monkeypatch.setattr(tta.worker, "gpu_names", lambda: ["/physical_device:GPU:0"])
    monkeypatch.setattr(tta, "measure", lambda args: curves)
    tta.run_all(tta.parse_args(["--seeds", "0", "--out", str(tmp_path)]), [])
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "time_to_accuracy-gpu.json", "time_to_accuracy-gpu.md", "time_to_accuracy-gpu.png"]
    text = (tmp_path / "time_to_accuracy-gpu.md").read_text()
    assert "Device used: /gpu:0 (a GPU)" in text
    assert f"`{flipout}` / `{tfp}`, median training wall seconds to 98.5%: **0.33**" in text
    assert "(target <= 0.6): met." in text


@pytest.mark.parametrize("argv, argument", [
    (["--seeds", "0,x"], "--seeds"),
    (["--seeds", "-1"], "--seeds"),
    (["--max-epochs", "0.7"], "--max-epochs"),
    (["--thresholds", "0.985,1.5"], "--thresholds"),
    (["--num-samples", "0"], "--num-samples"),
    (["--learning-rate", "-1"], "--learning-rate"),
    (["--batch-size", "300", "--tiny"], "--batch-size"),
])
def test_bad_arguments_are_refused_by_name(argv, argument, capsys):
    with pytest.raises(SystemExit):
        tta.parse_args(argv)
    assert f"argument {argument}" in capsys.readouterr().err


def test_arguments_default_to_the_full_benchmark():
    args = tta.parse_args([])
    assert (args.seeds, args.max_epochs, args.thresholds, args.num_samples, args.learning_rate,
            args.batch_size, args.tiny) == ([0, 1, 2], 6.0, [0.985, 0.99], 20, 1e-3, 128, False)
    assert tta.parse_args(["--thresholds", "0.99,0.985"]).thresholds == [0.985, 0.99]
    assert tta.parse_args(["--seeds", "2,0,2"]).seeds == [2, 0]
