"""Where a Bayesian layer's training step goes.

    python -m benchmarks.profile [--width 800] [--batch 128]
    python -m benchmarks.profile --trace tfbdl:Flipout:mlp [--logdir build/profile]

Without `--trace`: times (process CPU seconds over all threads, median of repeats; steady
when other processes share the machine) of the pieces of one width x width DenseFlipout
training step, each alone: the weight-noise draw with each TF random number generator,
random signs, softplus, softplus and the closed-form KL with their gradients (TF's and
tfbdl's), one matmul, and one Adam update of a weight-sized variable.

With `--trace LIBRARY:ESTIMATOR:KIND` (KIND mlp or cnn, as in `benchmarks.run`): records
10 training steps of that case with the TensorFlow profiler into `--logdir` (open it with
TensorBoard's profile plugin, `pip install xprof`) and, when `xprof` is installed, prints the
time per step of each op type. tfp cases need TF_USE_LEGACY_KERAS=1.
"""

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402

from tfbdl import posteriors, priors, sampling  # noqa: E402

tfd = tfp.distributions


def cpu_milliseconds(function, repeats=30):
    """Median process CPU time of `function()` (a traced function), after two warm-up calls."""
    for _ in range(2):
        function().numpy()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        function().numpy()
        times.append(time.process_time() - start)
    return 1e3 * float(np.median(times))


def pieces(width, batch):
    """{piece: traced function} for a width x width weight at this batch size."""
    shape = (width, width)
    seed = tf.constant([1, 2], tf.int32)
    loc = tf.Variable(tf.random.normal(shape, stddev=0.05))
    rho = tf.Variable(tf.fill(shape, -4.6))
    x = tf.random.normal((batch, width))
    generator = tf.random.Generator.from_seed(1)
    adam = keras.optimizers.Adam()
    keras_variable = keras.Variable(tf.zeros(shape))
    adam.build([keras_variable])
    gradient = tf.random.normal(shape)

    weights = posteriors.NormalWeights(loc, rho)
    normal_kl = priors.NormalKL(None, np.float32(1.0))

    def value_and_gradient(value):
        def run():
            with tf.GradientTape() as tape:
                result = value()
            gradients = tape.gradient(result, [loc, rho])
            return result + sum(tf.reduce_sum(g) for g in gradients if g is not None)
        return run

    def total(tensor):
        return lambda: tf.reduce_sum(tensor())

    def adam_update():
        adam.apply_gradients([(gradient, keras_variable)])
        return tf.constant(0.0)

    return {
        "normal, Box-Muller, one Philox word per pair (tfbdl.sampling)": total(
            lambda: sampling.standard_normal(shape, seed)),
        "normal, stateless Philox (tf.random.stateless_normal)": total(
            lambda: tf.random.stateless_normal(shape, seed, alg="philox")),
        "normal, stateless ThreeFry": total(lambda: tf.random.stateless_normal(shape, [1, 2], alg="threefry")),
        "normal, tf.random.Generator (Philox)": total(lambda: generator.normal(shape)),
        "normal, stateful tf.random.normal (tfp.layers)": total(lambda: tf.random.normal(shape)),
        "uniform float, stateless Philox": total(lambda: tf.random.stateless_uniform(shape, seed)),
        "random bits int32, stateless Philox": total(
            lambda: tf.random.stateless_uniform(shape, seed, dtype=tf.int32, minval=None, maxval=None)),
        f"signs ({batch} x {width}), tfp.random.rademacher": total(
            lambda: tfp.random.rademacher((batch, width), seed=seed)),
        f"signs ({batch} x {width}), tfbdl.sampling.rademacher": total(
            lambda: sampling.rademacher((batch, width), tf.float32, seed)),
        "softplus(rho)": total(lambda: tf.nn.softplus(rho)),
        "softplus(rho) * eps + mu (eps given)": total(lambda: tf.nn.softplus(rho) * gradient + loc),
        "softplus(rho) and its gradient, as registered (sigmoid(rho) * g)": value_and_gradient(
            lambda: tf.reduce_sum(tf.nn.softplus(rho) * gradient)),
        "softplus(rho) and its gradient, fused SoftplusGrad (tfbdl.posteriors)": value_and_gradient(
            lambda: tf.reduce_sum(weights.scale() * gradient)),
        "closed-form KL(q || N(0, 1)) and gradient, tfd.kl_divergence": value_and_gradient(
            lambda: tf.reduce_sum(tfd.kl_divergence(tfd.Normal(loc, tf.nn.softplus(rho)), tfd.Normal(0.0, 1.0)))),
        "closed-form KL(q || N(0, 1)) and gradient, tfbdl.priors.NormalKL": value_and_gradient(
            lambda: normal_kl.kl(weights.snapshot(), None)),
        f"matmul ({batch} x {width}) @ ({width} x {width})": total(lambda: tf.matmul(x, loc)),
        "Adam update of one weight-sized variable": adam_update,
        "reduce_sum alone (overhead of each line)": total(lambda: tf.convert_to_tensor(loc)),
    }


def op_type_table(logdir, steps):
    """Markdown rows of self time per step by op type, from a profiler trace (needs xprof)."""
    import collections
    import glob
    import json

    from xprof.convert import raw_to_tool_data

    paths = glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True)
    data, _ = raw_to_tool_data.xspace_to_tool_data(paths, "framework_op_stats", {})
    table = json.loads(data)[0]
    columns = [column["id"] for column in table["cols"]]
    by_type = collections.Counter()
    for row in table["rows"]:
        op = dict(zip(columns, [cell.get("v") for cell in row["c"]]))
        if op["type"] != "IDLE":
            by_type[op["type"]] += op["total_self_time"] / steps / 1e3
    busy = sum(by_type.values())
    rows = [f"| all ops | {busy:.1f} | 100 |"]
    rows += [f"| {op} | {ms:.2f} | {100 * ms / busy:.1f} |" for op, ms in by_type.most_common(20)]
    return "| op type | ms per step | % |\n| --- | --- | --- |\n" + "\n".join(rows)


def trace(spec, logdir, steps=10):
    """Profiles `steps` training steps of the case `LIBRARY:ESTIMATOR:KIND` into `logdir`."""
    import shutil

    from benchmarks import cases

    library, estimator, kind = spec.split(":")
    timed = cases.TimedCase({"kind": kind, "library": library, "estimator": estimator or None, "batch": 128})
    timed.time(warmup=3, steps=1)
    shutil.rmtree(logdir, ignore_errors=True)
    tf.profiler.experimental.start(logdir)
    timed.time(warmup=0, steps=steps)
    tf.profiler.experimental.stop()
    try:
        print(op_type_table(logdir, steps))
    except ImportError:
        print(f"Trace written to {logdir}; `pip install xprof` to print the op table.")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=800)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--trace", metavar="LIBRARY:ESTIMATOR:KIND", help="e.g. tfbdl:Flipout:mlp, keras::mlp")
    parser.add_argument("--logdir", default="build/profile")
    args = parser.parse_args(argv)
    if args.trace:
        trace(args.trace, args.logdir)
        return
    print(f"| piece ({args.width} x {args.width} weight, batch {args.batch}) | CPU ms |\n| --- | --- |")
    for name, function in pieces(args.width, args.batch).items():
        try:
            cost = f"{cpu_milliseconds(tf.function(function)):.2f}"
        except tf.errors.InvalidArgumentError as error:  # e.g. ThreeFry has no CPU kernel here
            cost = f"fails: {error.message.splitlines()[0][:90]}"
        print(f"| {name} | {cost} |", flush=True)


if __name__ == "__main__":
    main()
