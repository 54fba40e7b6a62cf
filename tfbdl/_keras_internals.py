"""Every use tfbdl makes of Keras' private API, in one place.

Each function says why no public route exists. `check()` exercises every assumption and
`tests/test_keras_internals.py` runs it, so a Keras release that changes one of them fails
loudly, naming the Keras version and the assumption, instead of breaking tfbdl silently.
Nothing else in tfbdl touches a Keras name that starts with `_`.
"""

import functools
import inspect

import keras
import tensorflow as tf

__all__ = [
    "KerasInternalsChanged",
    "attach_metric",
    "calling_model",
    "check",
    "flatten_layers",
    "needs_multi_worker_fit_workarounds",
    "output_layer",
    "own_losses",
    "use_multi_worker_fit_workarounds",
    "wrap_compute_loss",
]


class KerasInternalsChanged(RuntimeError):
    """A private Keras name tfbdl relies on is gone or behaves differently."""

    def __init__(self, assumption, error=None):
        super().__init__(
            f"tfbdl relies on Keras internals that changed in Keras {keras.version()}: "
            f"{assumption}" + (f" ({type(error).__name__}: {error})" if error else "")
        )


def flatten_layers(model):
    """`model` and every layer inside it, nested models and subclassed attributes included.

    Private: `Layer._flatten_layers`. `model.layers` lists only the direct children of a
    functional or Sequential model, and subclassed models have no public recursive walk.
    """
    return list(model._flatten_layers(include_self=True, recursive=True))


def own_losses(layer):
    """The losses `layer` added with `add_loss` in its latest call, without its weight
    regularizers and sublayers' losses.

    Private: `Layer._get_own_losses`. `layer.losses` mixes in regularization penalties,
    which are not KL terms.
    """
    return layer._get_own_losses()


def output_layer(tensor):
    """The layer that produced a symbolic Keras tensor.

    Private: `KerasTensor._keras_history`. Functional models expose their outputs but not
    the layer that made each one.
    """
    return tensor._keras_history.operation


def calling_model():
    """The outermost layer of the Keras call in progress (the model whose `__call__` is
    running), or None outside a call.

    Private: Keras' global `current_call_ctx` and its `entry_layer`. A layer has no public
    way to learn which model calls it; tfbdl needs it so that a model with Bayesian layers
    reports its ELBO terms from its first call, also after `keras.saving.load_model`,
    `clone_model` or `to_bayesian`, without a tfbdl call on the new model.
    """
    from keras.src.backend.common import global_state

    context = global_state.get_global_attribute("current_call_ctx")
    return None if context is None else context.entry_layer


def attach_metric(model, attribute, metric):
    """Sets `model.<attribute> = metric` so the metric joins `model.metrics`, even on a
    built model.

    Private: `Layer._tracker`. A built Keras model locks its tracked state, and a metric
    must be tracked to be reset each epoch, logged by `fit`/`evaluate` and reduced over
    replicas. Keras offers no public way to add one to a Sequential or functional model.
    """
    locked = model._tracker.locked
    model._tracker.unlock()
    try:
        setattr(model, attribute, metric)
    finally:
        if locked:
            model._tracker.lock()


def wrap_compute_loss(model, after):
    """Makes `model.compute_loss` call `after(model, total, x, y_pred)` after each call.

    Keras documents overriding `compute_loss` in a subclass; tfbdl works on the user's own
    Sequential and functional models, so it wraps the method on the instance.
    Private: `Trainer._compute_loss_has_training_arg`, which Keras reads to decide whether
    to pass `training=` to `compute_loss`; the wrapper takes it.
    """
    compute_loss = model.compute_loss
    accepts_training = "training" in inspect.signature(compute_loss).parameters

    @functools.wraps(compute_loss)
    def wrapped(x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if accepts_training:
            total = compute_loss(x, y, y_pred, sample_weight, training=training)
        else:
            total = compute_loss(x, y, y_pred, sample_weight)
        if total is not None:
            after(model, total, x, y_pred)
        return total

    model.compute_loss = wrapped
    model._compute_loss_has_training_arg = True


# ------------------------------------------------------------------------ multi-worker fit
#
# Keras 3.15's `model.fit` cannot run under MultiWorkerMirroredStrategy, with plain Keras
# layers too, for two reasons; both checks read Keras' source, so each workaround switches
# itself off once a Keras release stops doing what it works around.


def _reduces_first_batch_eagerly():
    """`Trainer._maybe_symbolic_build` averages the first distributed batch with
    `strategy.reduce` outside any `tf.function`, which a multi-worker strategy cannot do
    (`ValueError: Attempt to convert a value (PerReplica...)`)."""
    return "distribute_strategy.reduce(" in inspect.getsource(keras.Model._maybe_symbolic_build)


def _reduces_scalar_logs_along_axis_0():
    """`reduce_per_replica` averages each step's logs across workers with
    `strategy.reduce("MEAN", v, axis=0)`, which fails for the scalar logs every step returns
    (`Invalid reduction dimension 0 for input with 0 dimensions`)."""
    from keras.src.backend.tensorflow import trainer

    return 'strategy.reduce("MEAN", v, axis=0)' in inspect.getsource(trainer.reduce_per_replica)


def needs_multi_worker_fit_workarounds(strategy):
    """True when `strategy` is multi-worker and this Keras' `fit` would fail under it."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and (
        _reduces_first_batch_eagerly() or _reduces_scalar_logs_along_axis_0()
    )


def use_multi_worker_fit_workarounds(model):
    """Lets `model.fit`/`evaluate` run under a MultiWorkerMirroredStrategy, on this instance:

    - its `_maybe_symbolic_build` takes the first batch's shapes from this worker's first
      replica instead of reducing the batch across workers (`_symbolic_build` uses the
      batch only for its shapes and dtypes, which every replica's part has);
    - its `train_step`/`test_step` return each log with a leading axis of length 1, which
      Keras' `strategy.reduce("MEAN", v, axis=0)` then averages over the workers back to
      a scalar, as it does for single-worker strategies.

    Private: `Trainer._maybe_symbolic_build` and `Trainer._symbolic_build` (there is no
    public way to build compiled metrics and losses).
    """
    strategy = model.distribute_strategy
    if _reduces_first_batch_eagerly():

        def maybe_symbolic_build(iterator=None, data_batch=None):
            if iterator is not None:
                for _, _, it in iterator:
                    data_batch = tf.nest.map_structure(
                        lambda value: strategy.experimental_local_results(value)[0], next(it)
                    )
                    break
            with strategy.scope():
                model._symbolic_build(data_batch=data_batch)

        model._maybe_symbolic_build = maybe_symbolic_build

    if _reduces_scalar_logs_along_axis_0():
        for name in ("train_step", "test_step"):
            setattr(model, name, _with_logs_along_axis_0(getattr(model, name)))


def _with_logs_along_axis_0(step):
    @functools.wraps(step)
    def wrapped(data):
        return tf.nest.map_structure(lambda value: tf.reshape(value, [1]), step(data))

    return wrapped


# ------------------------------------------------------------------------ self-check


def check():
    """Exercises every assumption above on a small model; raises `KerasInternalsChanged`."""
    inputs = keras.Input((2,))
    hidden = keras.layers.Dense(3, name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1, name="out")(hidden))

    def expect(condition, assumption):
        if not condition:
            raise KerasInternalsChanged(assumption)

    try:
        outer = keras.Sequential([model])
        flat = flatten_layers(outer)
        expect(flat[0] is outer and {"hidden", "out"} <= {layer.name for layer in flat[1:]},
               "Layer._flatten_layers(include_self=True, recursive=True) lists nested models' layers")
        expect(output_layer(model.outputs[0]).name == "out",
               "KerasTensor._keras_history.operation is the layer that made the tensor")
        seen = []

        class Probe(keras.layers.Layer):
            def call(self, x):
                seen.append(calling_model())
                self.add_loss(keras.ops.sum(x))
                return x

        probe = Probe()
        wrapper = keras.Sequential([keras.Input((2,)), probe])
        wrapper(tf.ones((1, 2)))
        expect(seen and seen[-1] is wrapper, "the call context's entry_layer is the model being called")
        expect(len(own_losses(probe)) == 1, "Layer._get_own_losses() returns the add_loss terms of the last call")
        expect(hasattr(model, "_tracker") and hasattr(model._tracker, "locked"),
               "Layer._tracker has lock()/unlock() and .locked")
        expect(hasattr(model, "_compute_loss_has_training_arg"),
               "Trainer._compute_loss_has_training_arg decides whether compute_loss gets training=")
        expect(callable(getattr(keras.Model, "_symbolic_build", None))
               and callable(getattr(keras.Model, "_maybe_symbolic_build", None)),
               "Trainer._symbolic_build and _maybe_symbolic_build exist")
    except KerasInternalsChanged:
        raise
    except Exception as error:  # an attribute gone or a signature changed
        raise KerasInternalsChanged("see the error", error) from error
