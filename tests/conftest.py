"""Shared test set-up: TensorFlow backend, quiet logs, local data, fixed seeds."""

import os
import pathlib
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TFBDL_DATA_DIR", str(pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"))

# The examples import their shared helpers as `common` (as `python examples/x.py` does).
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "examples"))

import keras  # noqa: E402
import matplotlib  # noqa: E402
import pytest  # noqa: E402

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same global seeds (Python, NumPy, TensorFlow)."""
    keras.utils.set_random_seed(1234)
    yield
    keras.backend.clear_session()


@pytest.fixture
def mixed_bfloat16():
    """Keras' global dtype policy is mixed_bfloat16 during the test, float32 after it."""
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        yield
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
