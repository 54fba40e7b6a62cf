"""tfbdl.runtime: strategy choice, the ELBO under tf.distribute, mixed precision.

Multi-device runs need TensorFlow configured before it starts, so they run
tests/distributed_worker.py in subprocesses, with a timeout, always reaped.
"""

import json
import logging
import os
import pathlib
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfbdl
from training_support import moons, moons_model

WORKER = pathlib.Path(__file__).with_name("distributed_worker.py")
TIMEOUT = 300  # seconds per worker process; each typically finishes in 30-60 s on 2 shared cores (a hang, not a slow run, should fail)


def _environment(**extra):
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _run_workers(commands):
    """Starts (argv, env) processes together, waits for all; kills every one on any failure."""
    processes = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for argv, env in commands]
    try:
        outputs = [process.communicate(timeout=TIMEOUT)[0] for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


# --------------------------------------------------------------------------- tf.distribute


def test_mirrored_step_equals_the_single_device_step(tmp_path):
    out = tmp_path / "mirrored.json"
    _run_workers([([sys.executable, str(WORKER), "mirrored", str(out)], _environment())])
    result = json.loads(out.read_text())
    assert result["mirrored_strategy"] and result["replicas"] == 2
    single, mirrored = result["single"], result["mirrored"]
    # Same batch, same seeds, same weight sample on every replica: the only difference is
    # float32 summation order (relative ~1e-7 per operation, a few dozen operations).
    for key in ("loss", "nll", "kl"):
        np.testing.assert_allclose(mirrored[key], single[key], rtol=1e-5, err_msg=key)
    # The KL is counted once: the logged kl is the model's KL / N ...
    np.testing.assert_allclose(mirrored["kl"], result["kl_expected"], rtol=1e-5)
    np.testing.assert_allclose(mirrored["loss"], mirrored["nll"] + mirrored["kl"], rtol=1e-5)
    # ... and so are the gradients (counting it per replica would change d loss / d sigma
    # by about KL'/N, of the order of the largest gradient).
    assert result["max_gradient"] > 1e-3
    assert result["max_gradient_difference"] <= 1e-6 * max(1.0, result["max_gradient"])


def test_multi_worker_fit_keeps_workers_identical(tmp_path):
    """`model.fit` under MultiWorkerMirroredStrategy (Keras 3.15's own fit cannot start
    there; tfbdl._keras_internals works around it for models with Bayesian layers)."""
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    outputs = [tmp_path / f"worker{index}.npz" for index in range(2)]
    _run_workers([
        ([sys.executable, str(WORKER), "multiworker", str(out)],
         _environment(TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})))
        for index, out in enumerate(outputs)
    ])
    first, second = (np.load(out) for out in outputs)
    assert bool(first["multi_worker"]) and int(first["replicas"]) == 2
    assert float(first["moved"]) > 1e-3  # training changed the variables
    variables = [key for key in first.files if key.startswith("variable_")]
    assert len(variables) == 8
    for key in variables:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)
    # The logged loss is nll + kl with the KL counted once (not once per worker).
    for worker in (first, second):
        np.testing.assert_allclose(worker["loss"], worker["nll"] + worker["kl"], rtol=1e-5)
        np.testing.assert_allclose(worker["loss"], first["loss"], rtol=1e-6)
    # The logged kl is the KL / N of the variables, to within one epoch's training drift.
    assert abs(float(first["kl"][-1]) - float(first["kl_expected"])) < 0.1 * float(first["kl_expected"])


def test_strategy_on_a_cpu_machine_is_the_default_strategy(caplog, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with caplog.at_level(logging.INFO, logger="tfbdl"):
        strategy = tfbdl.runtime.strategy()
    assert strategy is tf.distribute.get_strategy()
    assert "default strategy" in caplog.text and "CPU:0" in caplog.text
    assert isinstance(tfbdl.runtime.strategy(["/cpu:0"]), tf.distribute.OneDeviceStrategy)


def test_strategy_counts_workers_in_tf_config(monkeypatch):
    cluster = {"chief": ["127.0.0.1:1"], "worker": ["127.0.0.1:2", "127.0.0.1:3"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "chief", "index": 0}}))
    assert tfbdl.runtime._tf_config_workers() == 3
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG"):
        tfbdl.runtime.strategy()


@pytest.mark.parametrize("devices", ["gpu", [], ["/cpu:0", 3], None])
def test_strategy_rejects_bad_devices(devices):
    with pytest.raises(ValueError, match="devices"):
        tfbdl.runtime.strategy(devices)


# --------------------------------------------------------------------------- mixed precision


@pytest.fixture
def restore_policy():
    previous = keras.mixed_precision.dtype_policy().name
    yield
    keras.mixed_precision.set_dtype_policy(previous)


def test_bayesian_mlp_trains_under_mixed_bfloat16(restore_policy):
    policy = tfbdl.runtime.mixed_precision("mixed_bfloat16")
    assert policy.compute_dtype == "bfloat16" and policy.variable_dtype == "float32"
    (x, y), _ = moons()
    model = moons_model(prior=tfbdl.priors.HalfNormalHierarchical())
    tfbdl.set_kl_weight(model, num_examples=len(x))
    model.compile(keras.optimizers.Adam(0.05), "binary_crossentropy")
    logs = model.fit(x, y, batch_size=25, epochs=2, verbose=0).history
    assert np.all(np.isfinite(logs["loss"])) and logs["loss"][-1] < logs["loss"][0]
    np.testing.assert_allclose(logs["loss"], np.add(logs["nll"], logs["kl"]), rtol=1e-5)
    assert {v.dtype for v in model.variables if v.dtype.startswith("float")} == {"float32"}
    hidden = tfbdl.bayesian_layers(model)[0]
    assert hidden(x[:4]).dtype == "bfloat16"  # the matmul runs in the compute dtype
    model(x[:4], training=True)
    assert tfbdl.kl_loss(model).dtype == "float32"
    assert hidden.kl_divergence().dtype == "float32"
    assert hidden.kernel_prior_term.tau.dtype == "float32"


def test_mixed_precision_none_and_auto_on_cpu_are_float32(restore_policy):
    assert tfbdl.runtime.mixed_precision(None).name == "float32"
    assert tfbdl.runtime.mixed_precision("auto").name == "float32"  # no GPU here
    with pytest.raises(ValueError, match="policy"):
        tfbdl.runtime.mixed_precision("float16")
