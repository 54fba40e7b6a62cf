"""tfbdl.runtime.seed: bit-identical training and prediction across separate processes.

Each run is a fresh Python process (its global generators start unseeded, as in a new
script), started with a timeout, so the test shows what a user rerunning a script gets.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfbdl
import tfbdl.runtime

TIMEOUT = 300  # seconds per process; each typically takes 10-20 s on 2 shared cores (a hang, not a slow run, should fail)

# Layers are built WITHOUT `seed=`: their SeedGenerators, the initializers and fit's
# shuffling must all follow from tfbdl.runtime.seed alone.
SCRIPT = """
import sys
import numpy as np
import keras
import tfbdl
import tfbdl.runtime

seed, out = int(sys.argv[1]), sys.argv[2]
tfbdl.runtime.seed(seed)
(x, y), (x_test, _) = tfbdl.data.two_moons(num_examples=256, test_fraction=0.25)
model = keras.Sequential([
    keras.Input((2,)),
    tfbdl.layers.DenseFlipout(8, activation="tanh"),
    tfbdl.layers.DenseFlipout(1, activation="sigmoid"),
])
tfbdl.set_kl_weight(model, num_examples=len(x))
model.compile("adam", "binary_crossentropy")
model.fit(x, y, epochs=3, batch_size=32, verbose=0)
result = tfbdl.predict(model, x_test, num_samples=10, progress=False)
weights = {f"w{i}": w for i, w in enumerate(model.get_weights())}
np.savez(out, mean=np.asarray(result.mean), **weights)
"""


def _run(seed, path):
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2",
               CUDA_VISIBLE_DEVICES="", PYTHONHASHSEED="0")
    env.pop("TF_CONFIG", None)
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(seed), str(path)],
        env=env, capture_output=True, text=True, timeout=TIMEOUT,
    )
    assert completed.returncode == 0, (completed.stdout + completed.stderr)[-3000:]
    with np.load(path) as arrays:
        weights = [arrays[f"w{i}"] for i in range(len(arrays.files) - 1)]
        return weights, arrays["mean"]


def _identical(a, b):
    (weights_a, mean_a), (weights_b, mean_b) = a, b
    return (len(weights_a) == len(weights_b)
            and all(np.array_equal(u, v) for u, v in zip(weights_a, weights_b))
            and np.array_equal(mean_a, mean_b))


def test_seed_makes_separate_processes_bit_identical(tmp_path):
    first = _run(1234, tmp_path / "first.npz")
    second = _run(1234, tmp_path / "second.npz")
    other = _run(4321, tmp_path / "other.npz")

    weights, mean = first
    assert mean.shape == (64, 2) and np.allclose(mean.sum(axis=1), 1.0)
    assert len(weights) > 4  # per layer at least a kernel mean, scale and bias, plus KL weights
    for i, (u, v) in enumerate(zip(first[0], second[0])):
        assert np.array_equal(u, v), f"weight {i} differs between two runs with seed(1234)"
    assert np.array_equal(first[1], second[1]), "predictive means differ with seed(1234)"
    # The comparison can fail: another seed gives other weights and predictions.
    assert not any(np.array_equal(u, v) for u, v in zip(first[0], other[0])
                   if u.size > 1), "seed(4321) left some trained weight unchanged"
    assert not np.array_equal(first[1], other[1])
    assert not _identical(first, other)


@pytest.mark.parametrize("bad", [-1, 2**32, 1.0, "1", None, True, False])
def test_seed_rejects_what_is_not_a_32_bit_unsigned_integer(bad):
    with pytest.raises(ValueError, match=r"seed: `n` must be an integer in \[0, 4294967296\), got n="):
        tfbdl.runtime.seed(bad)


def test_seed_seeds_keras_and_enables_op_determinism(monkeypatch):
    # Stubbed: op determinism cannot be switched off, and would stay on for later tests.
    calls = []
    monkeypatch.setattr(keras.utils, "set_random_seed", lambda n: calls.append(("seed", n)))
    monkeypatch.setattr(tf.config.experimental, "enable_op_determinism",
                        lambda: calls.append(("determinism",)))
    for n in (0, np.int64(7), 2**32 - 1):
        tfbdl.runtime.seed(n)
    assert calls == [("seed", 0), ("determinism",), ("seed", 7), ("determinism",),
                     ("seed", 2**32 - 1), ("determinism",)]
    assert all(type(call[1]) is int for call in calls if call[0] == "seed")
