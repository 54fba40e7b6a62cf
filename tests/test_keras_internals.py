"""The Keras internals tfbdl relies on (tfbdl/_keras_internals.py) are still there.

If one of these fails after a Keras upgrade, the message names the Keras version and the
assumption; fix `tfbdl/_keras_internals.py`, the only module that uses private Keras API.
"""

import pathlib
import re

import keras
import pytest
import tensorflow as tf

import tfbdl
from tfbdl import _keras_internals

TFBDL = pathlib.Path(tfbdl.__file__).parent


def test_every_assumption_holds_on_this_keras():
    _keras_internals.check()


def test_a_changed_internal_fails_loudly_naming_the_keras_version(monkeypatch):
    monkeypatch.delattr(keras.layers.Layer, "_get_own_losses")
    with pytest.raises(_keras_internals.KerasInternalsChanged, match=re.escape(keras.version())):
        _keras_internals.check()


def test_no_other_tfbdl_module_uses_private_keras_names():
    private = re.compile(r"\._(?:flatten_layers|get_own_losses|tracker|keras_history|compute_loss_has|"
                         r"maybe_symbolic_build|symbolic_build)|keras\.src")
    offenders = [str(path.relative_to(TFBDL)) for path in TFBDL.rglob("*.py")
                 if path.name != "_keras_internals.py" and private.search(path.read_text())]
    assert offenders == []


def test_multi_worker_workarounds_leave_other_strategies_alone():
    assert not _keras_internals.needs_multi_worker_fit_workarounds(tf.distribute.get_strategy())
    assert not _keras_internals.needs_multi_worker_fit_workarounds(tf.distribute.MirroredStrategy(["/cpu:0"]))
