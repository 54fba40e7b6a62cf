"""Interruption: a `fit` with `keras.callbacks.BackupAndRestore` killed by SIGTERM mid-epoch
in a real subprocess resumes from its last backup and finishes.

Bit-identical restoration: the resumed run starts from exactly the weights an uninterrupted
run with the same seed had at the end of the last backed-up epoch. The end of the resumed
run is not bit-identical to the uninterrupted run's, by Keras' design: BackupAndRestore
restores the weights, the optimizer and the epoch, but not the random generators (the
TensorFlow global generator that shuffles, the layers' `SeedGenerator`s that draw the
weight noise), so the resumed epochs see other shuffles and other noise. Its test
accuracy is compared with the uninterrupted run's within three standard errors.
"""

import json
import os
import signal
import subprocess
import sys

import numpy as np

SCRIPT = r'''
import json, os, signal, sys
import keras, numpy as np
import tfbdl

backup, out, kill_epoch = sys.argv[1], sys.argv[2], int(sys.argv[3])
tfbdl.runtime.seed(7)
(x, y), (x_test, y_test) = tfbdl.data.two_moons(800, 0.2, seed=0)
model = keras.Sequential([keras.Input((2,)), tfbdl.layers.DenseFlipout(8, activation="tanh"),
                          tfbdl.layers.DenseFlipout(1, activation="sigmoid")])
tfbdl.set_kl_weight(model, num_examples=len(x))
model.compile(keras.optimizers.Adam(0.01), "binary_crossentropy")
record = {"epochs": [], "weights_at_epoch_end": {}, "weights_at_start": None}

class Record(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        if record["weights_at_start"] is None:  # after BackupAndRestore restored the backup
            record["weights_at_start"] = [w.tolist() for w in model.get_weights()]
    def on_epoch_end(self, epoch, logs=None):
        record["epochs"].append(epoch)
        record["weights_at_epoch_end"][epoch] = [w.tolist() for w in model.get_weights()]
    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == kill_epoch and batch == 3:
            with open(out, "w") as f:
                json.dump(record, f)
            os.kill(os.getpid(), signal.SIGTERM)  # no handler: the process dies here

model.fit(x, y, batch_size=50, epochs=6, verbose=0,
          callbacks=[keras.callbacks.BackupAndRestore(backup), Record()])
result = tfbdl.predict(model, x_test, num_samples=0, progress=False)
record["test_accuracy"] = tfbdl.metrics.accuracy(y_test, result.mean)
record["test_examples"] = len(y_test)
with open(out, "w") as f:
    json.dump(record, f)
'''


def _run(tmp_path, backup, out, kill_epoch):
    env = {**os.environ, "PYTHONHASHSEED": "0", "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    completed = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / backup), str(tmp_path / out),
                                str(kill_epoch)], env=env, capture_output=True, text=True, timeout=300)
    with open(tmp_path / out) as f:
        return completed, json.load(f)


def test_a_fit_killed_by_sigterm_resumes_from_its_backup(tmp_path):
    _, uninterrupted = _run(tmp_path, "backup_a", "a.json", kill_epoch=-1)
    killed, before = _run(tmp_path, "backup_b", "b_killed.json", kill_epoch=2)
    assert killed.returncode == -signal.SIGTERM, killed.stderr[-2000:]
    assert before["epochs"] == [0, 1]
    metadata = json.loads((tmp_path / "backup_b" / "training_metadata.json").read_text())
    assert metadata["epoch"] == 2, metadata  # the backup of epochs 0-1; epoch 2 was cut short

    resumed, after = _run(tmp_path, "backup_b", "b_resumed.json", kill_epoch=-1)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert after["epochs"] == [2, 3, 4, 5]  # resumed, not restarted
    assert not (tmp_path / "backup_b").exists()  # Keras removes the backup after a finished fit
    # Until the kill both processes ran the same seeded computation, bit for bit:
    for restored, reference in zip(after["weights_at_start"], uninterrupted["weights_at_epoch_end"]["1"]):
        np.testing.assert_array_equal(np.array(restored), np.array(reference))
    # After it, other shuffles and weight noise (see the module docstring): within noise.
    p, n = uninterrupted["test_accuracy"], uninterrupted["test_examples"]
    standard_error = np.sqrt(2 * p * (1 - p) / n)  # of a difference of two accuracies
    assert abs(after["test_accuracy"] - p) <= 3 * standard_error, (after["test_accuracy"], p)
    assert p > 0.8  # the runs learned the moons
