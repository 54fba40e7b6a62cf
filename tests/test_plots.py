"""tfbdl.plots: every function runs headless (Agg) and writes a non-empty PNG."""

import keras
import matplotlib
import pytest

import tfbdl
from tfbdl import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_png(figure, path):
    assert isinstance(figure, matplotlib.figure.Figure)
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000


@pytest.fixture(scope="module")
def moons():
    (x, y), _ = tfbdl.data.two_moons(200, 0.2, seed=0)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((2,)),
            tfbdl.layers.DenseFlipout(8, activation="tanh"),
            tfbdl.layers.DenseFlipout(1, activation="sigmoid"),
        ]
    )
    tfbdl.set_kl_weight(model, num_examples=len(x))
    model.compile("adam", "binary_crossentropy")
    history = model.fit(x, y, epochs=3, batch_size=50, validation_split=0.2, verbose=0)
    result = tfbdl.predict(model, x, num_samples=10, return_samples=True, progress=False)
    return x, y, model, history, result


def test_matplotlib_runs_headless():
    assert matplotlib.get_backend().lower() == "agg"


def test_training_curves(moons, tmp_path):
    history = moons[3]
    _check_png(
        plots.training_curves(history, path=tmp_path / "curves.png"), tmp_path / "curves.png"
    )
    figure = plots.training_curves({"loss": [3.0, 2.0], "nll": [2.0, 1.5], "kl": [1.0, 0.5]})
    assert len(figure.axes) == 3
    with pytest.raises(ValueError, match="`history`"):
        plots.training_curves({"accuracy": [0.5]})


@pytest.mark.parametrize("quantity", ["mean", "std", "mutual_information"])
def test_uncertainty_surface(moons, tmp_path, quantity):
    x, y, model = moons[:3]
    path = tmp_path / f"{quantity}.png"
    _check_png(
        plots.uncertainty_surface(
            model, x, y, quantity=quantity, num_samples=5, grid_size=30, path=path
        ),
        path,
    )


def test_reliability_and_uncertainty_histogram_and_confusion(moons, tmp_path):
    x, y, model, history, result = moons
    for name, figure in {
        "reliability": plots.reliability_diagram(
            y, result.mean, num_bins=10, path=tmp_path / "reliability.png"
        ),
        "histogram": plots.uncertainty_histogram(
            y, result, score="entropy", path=tmp_path / "histogram.png"
        ),
        "confusion": plots.confusion_matrix(
            y,
            result.predicted_class,
            class_names=["upper", "lower"],
            normalize="true",
            path=tmp_path / "confusion.png",
        ),
    }.items():
        _check_png(figure, tmp_path / f"{name}.png")


def test_sample_histograms(moons, tmp_path):
    result = moons[4]
    path = tmp_path / "samples.png"
    figure = plots.sample_histograms(result, indices=[0, 5, 7], path=path)
    _check_png(figure, path)
    assert len(figure.axes) == 3
    with pytest.raises(ValueError, match="`indices`"):
        plots.sample_histograms(result.samples, indices=[10_000])
    with pytest.raises(ValueError, match="return_samples=True"):
        plots.sample_histograms(
            tfbdl.predict(moons[2], moons[0], num_samples=2, progress=False), [0]
        )
