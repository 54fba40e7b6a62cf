"""What every example shares: its command-line conventions and how it writes its outputs.

Each example has `--seed`, `--output-dir` (default `outputs/<name>/`), `--logdir`
(default `tensorboard_logs/<name>/`) and `--verbose`; it writes a flat `metrics.json`
and PNG figures atomically (a temporary file in the same folder, then a rename), so an
interrupted run never leaves a half-written file where a previous result was.
"""

import argparse
import json
import math
import pathlib

import tensorflow as tf

from tfbdl.saving import atomic_path


def parser(name, doc):
    """An argparse parser with the options every example shares (`--seed`, folders, verbosity)."""
    result = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    result.add_argument("--seed", type=int, default=0, help="random seed (data split, initialization, sampling)")
    result.add_argument("--output-dir", default=f"outputs/{name}", help="figures and metrics.json")
    result.add_argument("--logdir", default=f"tensorboard_logs/{name}", help="TensorBoard log directory")
    result.add_argument("--verbose", type=int, default=2, choices=(0, 1, 2),
                        help="Keras fit verbosity: 0 silent, 1 progress bar, 2 one line per epoch")
    return result


def fit_steps(model, inputs, y, batch_size, steps, epochs, **fit_options):
    """`model.fit` for `steps` steps (rounded up to a multiple of `epochs`) on shuffled
    batches of (inputs, y), reshuffled and repeated, in `epochs` Keras epochs.

    On a few hundred examples a Keras epoch costs more than its steps (callbacks, logs, a
    new iterator): this pays that cost `epochs` times, not once per pass over the data.
    """
    batches = tf.data.Dataset.from_tensor_slices((inputs, y)).shuffle(len(y)).repeat().batch(batch_size)
    return model.fit(batches, epochs=epochs, steps_per_epoch=math.ceil(steps / epochs), **fit_options)


def seed_list(text):
    """argparse type of `--seeds`: comma-separated integers such as "0,1,2"."""
    try:
        return [int(seed) for seed in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers like 0,1,2, got {text!r}") from None


def write_metrics(output_dir, metrics):
    """Writes the flat `metrics` dict to `output_dir/metrics.json` atomically; returns the path.

    Refuses nested values (the file is a flat table) and non-finite numbers are written as
    JSON null rather than the invalid `NaN` token.
    """
    for key, value in metrics.items():
        if isinstance(value, (dict, list, tuple)):
            raise ValueError(f"write_metrics: metrics must be flat, got {key}={value!r}.")
    clean = {key: None if isinstance(value, float) and not math.isfinite(value) else value
             for key, value in metrics.items()}

    def write(temporary):
        pathlib.Path(temporary).write_text(json.dumps(clean, indent=2) + "\n")

    return atomic_path(pathlib.Path(output_dir) / "metrics.json", write)


def save_figure(figure, path):
    """Saves a matplotlib figure atomically as PNG and closes it."""
    import matplotlib.pyplot as plt

    atomic_path(path, lambda temporary: figure.savefig(temporary, dpi=110, bbox_inches="tight"))
    plt.close(figure)
    return path
