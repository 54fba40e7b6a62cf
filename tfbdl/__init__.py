"""tfbdl: Bayesian deep learning layers for Keras 3 on TensorFlow and TensorFlow Probability.

    import keras, tfbdl
    model = keras.Sequential([keras.Input((2,)),
                              tfbdl.layers.DenseFlipout(32, activation="tanh"),
                              tfbdl.layers.DenseFlipout(1, activation="sigmoid")])
    tfbdl.set_kl_weight(model, num_examples=len(x_train))
    model.compile("adam", "binary_crossentropy")
    model.fit(x_train, y_train, epochs=100)
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402

if keras.backend.backend() != "tensorflow":
    raise ImportError(
        "tfbdl needs Keras' TensorFlow backend, got KERAS_BACKEND="
        f"{keras.backend.backend()!r}. Set KERAS_BACKEND=tensorflow."
    )

from tfbdl import data, layers, posteriors, priors  # noqa: E402
from tfbdl.model_tools import bayesian_layers, learned_tau, one_sample_per_batch, posterior_mean, set_kl_weight  # noqa: E402
from tfbdl import convert, metrics, plots, prediction, pruning  # noqa: E402
from tfbdl.prediction import PredictiveResult, predict  # noqa: E402
from tfbdl.pruning import prune  # noqa: E402
from tfbdl import saving  # noqa: E402
from tfbdl.saving import save_model  # noqa: E402
from tfbdl import callbacks, elbo, runtime  # noqa: E402
from tfbdl import sampling  # noqa: E402
from tfbdl import active  # noqa: E402
from tfbdl.model_tools import kl_loss  # noqa: E402

__version__ = "0.1.0"

__all__ = ["data", "layers", "priors", "posteriors", "bayesian_layers", "learned_tau", "one_sample_per_batch", "posterior_mean", "set_kl_weight",
           "metrics", "prediction", "predict", "PredictiveResult", "convert", "pruning", "prune", "plots",
           "callbacks", "elbo", "runtime", "kl_loss", "sampling", "active",
           "saving", "save_model"]
