"""Bayesian active learning on MNIST: BALD, max entropy and variation ratios against random labels.

The setting of Gal, Islam & Ghahramani 2017 ("Deep Bayesian Active Learning with Image
Data"): start from 20 labelled training images (2 per class), acquire 10 per round from
the rest of the training set (the pool; a random subset of `--subset-size` unlabelled
images is scored per round), retrain from scratch, test on the 10 000 test images. The
model is a small Bayesian CNN from tfbdl layers (`--architecture small`, the default: conv 32
5x5, max-pool 2, conv 32 5x5, max-pool 2, dense 128, dense 10; `gal` is Gal et al.'s conv 32
4x4, conv 32 4x4, max-pool 2, dense 128, dense 10), every layer `Conv2DFlipout`/`DenseFlipout`
with a mean-field Normal posterior and a N(0, 1) prior, trained on the honest per-example
negative ELBO NLL + KL / N for the N labelled images (`tfbdl.active.ActiveLearner` sets the
weight each round). Acquisition scores come from `--num-samples` weight samples:

    bald              H[p_bar] - mean_s H[p_s]     (Houlsby et al. 2011)
    max_entropy       H[p_bar]
    variation_ratios  1 - max_c p_bar_c            (Freeman 1965, Gal et al. 2017 section 3)
    random            uniform

Hyperparameters are chosen on `--validation-size` training images held out of the pool
(`--evaluate-on validation`, 2 000 of them, `--test-subset 2000`), never on the test set; the
test images are only scored. Screening, one round of 200 Adam steps on random balanced
labels (validation accuracy, seed 0 unless said):

    2026-12-01  gal, kaiming (fan-in) prior, 20-40 labels: 0.09-0.11 (KL / N pulls every
                posterior mean to 0); gal, N(0, 1), 20 labels: 0.62
    2026-12-03  gal, 100 labels: 0.782 (0.787 with point-estimate convolutions,
                `--bayesian dense`); 1000 steps 0.768 / 0.775 (longer fits widen the posteriors)
    2026-12-04  100 labels: gal lr 3e-3 0.790; small 0.815 / 0.837 / 0.826 (seeds 0-2),
                lr 3e-3 0.807 (500 steps 0.815), sigma_0 1e-2 0.828 (lr 3e-3) / 0.789 / 0.821,
                prior N(0, 0.5^2) 0.806, N(0, 2^2) 0.811 (seed 1: 0.837), N(0, 0.1^2) and
                kaiming 0.097 (chance), point-estimate convolutions 0.803;
                20 labels: small 0.637, gal 0.598, small N(0, 2^2) 0.649, sigma_0 1e-2 0.641.
                400 labels: small 200 steps 0.910, 600 steps 0.909.
    2026-12-07  BALD acquisition itself (20 rounds, 20-210 labels, 2 000 validation images):
                sigma_0 1e-3 0.826 at 100 labels, 0.886 at 210, 90% not reached;
                sigma_0 3e-2 0.873 at 100, 90% first at 160, 0.914 at 210.

So: the small CNN (under a fifth of gal's weights: +4 points at 100 labels, a third of the
fit time), N(0, 1), Adam 1e-3, sigma_0 1e-3. Tight priors collapse to the prior: with N
labels the ELBO can afford only about N log 10 nats of KL, and at a tight prior a weight's
mean costs mu^2 / (2 sigma_p^2) nats.

Writes to --output-dir: accuracy_vs_labels.png (test accuracy against labelled images,
mean and min-max band over seeds per function), metrics.json (labels each function
needed to reach 90% and 95% on the seed-mean curve, null if not reached, and the seeds'
range), curves.csv (every round of every run), rewritten after every finished run (with
`runs_finished` of `runs_planned`), so a stopped experiment keeps its finished runs.
`--full` runs the published budget: 100 rounds (20 to 1010 labels) and 3 seeds. `--jobs N`
trains N runs (function x seed) at once in spawned processes, each with its share of the
cores (on 2 cores, 2 jobs did about 1.4 times the rounds per hour of one, 2026-12-06).

    python examples/active_learning.py --help
    python examples/active_learning.py --rounds 50 --num-seeds 3 --jobs 2
    tensorboard --logdir tensorboard_logs/active_learning
"""

import concurrent.futures
import math
import multiprocessing
import os
import pathlib
import time

import keras
import numpy as np
import pandas as pd

import common
import tfbdl

NAME = "active_learning"
FUNCTIONS = ("bald", "max_entropy", "variation_ratios", "random")
THRESHOLDS = (0.90, 0.95)
# Labels to 90% and 95% test accuracy in Gal, Islam & Ghahramani 2017, Table 1 (MC dropout CNN).
PUBLISHED = {"bald": (145, 335), "variation_ratios": (120, 295), "max_entropy": (165, 355), "random": (255, 835)}
STEPS_PER_EPOCH = 20


def build_model(args, seed):
    """A small MNIST CNN whose dense layers are Bayesian (Flipout) and, with `--bayesian all`,
    its convolutions too (else plain Keras point estimates); outputs logits.

    `--architecture gal`: Gal et al. 2017's (conv 32 4x4, conv 32 4x4, max-pool 2, dense 128,
    dense 10; 3 872 inputs to the first dense layer, 514 k Bayesian kernel weights). `small`: conv 32 5x5,
    max-pool 2, conv 32 5x5, max-pool 2, dense 128, dense 10 (512 inputs, 93 k kernel weights), the
    benchmark's CNN with dense 128: under a fifth of the weights, so far less KL to pay for with few labels.
    """
    L = tfbdl.layers
    options = {"prior": tfbdl.priors.Gaussian(args.prior_scale),
               "posterior": tfbdl.posteriors.MeanFieldNormal(args.initial_scale)}

    def conv(size, seed):
        if args.bayesian == "all":
            return L.Conv2DFlipout(32, size, activation="relu", seed=seed, **options)
        return keras.layers.Conv2D(32, size, activation="relu", kernel_initializer=keras.initializers.GlorotUniform(seed))

    if args.architecture == "gal":
        features = [conv(4, seed), conv(4, seed + 1), keras.layers.MaxPooling2D(2)]
    else:
        features = [conv(5, seed), keras.layers.MaxPooling2D(2), conv(5, seed + 1), keras.layers.MaxPooling2D(2)]
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        *features,
        keras.layers.Flatten(),
        L.DenseFlipout(128, activation="relu", seed=seed + 2, **options),
        L.DenseFlipout(10, seed=seed + 3, **options),
    ])
    model.compile(keras.optimizers.Adam(args.learning_rate),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def make_fit(args, logdir, final_labelled):
    """fit(model, x, y): `args.steps` Adam steps (rounded up to a multiple of the epochs) on
    shuffled batches of the labelled set, in Keras epochs of about `STEPS_PER_EPOCH` steps
    (Keras' per-epoch work is paid ~10 times a round, not once per pass over 20 images);
    the final round also writes TensorBoard and PosteriorMonitor logs."""
    def fit(model, x, y):
        callbacks = []
        if len(x) >= final_labelled:
            callbacks = [keras.callbacks.TensorBoard(logdir), tfbdl.callbacks.PosteriorMonitor(logdir)]
        return common.fit_steps(model, x, y, args.batch_size, args.steps,
                                math.ceil(args.steps / STEPS_PER_EPOCH), callbacks=callbacks, verbose=0)
    return fit


def make_evaluate(args, x, y):
    """evaluate(model): accuracy of the posterior predictive mean over `--test-samples` draws."""
    def evaluate(model):
        result = tfbdl.predict(model, x, num_samples=args.test_samples, output="logits", progress=False)
        return {"accuracy": tfbdl.metrics.accuracy(y, result.mean)}
    return evaluate


def load_data(args):
    """(pool_x, pool_y, eval_x, eval_y): the pool is the training set minus a seeded held-out
    validation split; evaluation is on the test set or (for tuning) that validation split."""
    x, y = tfbdl.data.load_images("mnist", "train")
    order = np.random.default_rng(12345).permutation(len(x))  # one split for every seed
    validation, pool = order[:args.validation_size], order[args.validation_size:]
    if args.pool_subset:
        pool = pool[:args.pool_subset]
    if args.evaluate_on == "validation":
        eval_x, eval_y = x[validation], y[validation]
    else:
        eval_x, eval_y = tfbdl.data.load_images("mnist", "test")
    if args.test_subset:
        eval_x, eval_y = eval_x[:args.test_subset], eval_y[:args.test_subset]
    return x[pool], y[pool], eval_x, eval_y


def run_one(args, function, seed, data=None):
    """One active learning run; returns its curve (one dict per round, with its seed). `data` defaults to
    `load_data(args)` (a worker process loads it itself rather than receive the pool)."""
    pool_x, pool_y, eval_x, eval_y = load_data(args) if data is None else data
    keras.utils.set_random_seed(seed)
    final_labelled = args.initial_per_class * 10 + (args.rounds - 1) * args.acquire
    learner = tfbdl.active.ActiveLearner(
        lambda: build_model(args, seed), pool_x, pool_y,
        initial=tfbdl.active.balanced_indices(pool_y, args.initial_per_class, rng=seed),
        acquire=args.acquire, acquisition=function,
        fit=make_fit(args, f"{args.logdir}/{function}_seed{seed}", final_labelled),
        evaluate=make_evaluate(args, eval_x, eval_y), subset_size=args.subset_size,
        num_samples=args.num_samples, seed=seed, predict_kwargs={"output": "logits"})
    for _ in range(args.rounds):
        learner.step()
        entry = learner.curve[-1]
        print(f"{function:16s} seed {seed} round {entry['round']:3d} labelled {entry['labelled']:4d} "
              f"accuracy {entry['accuracy']:.4f} fit {entry['fit_seconds']:.1f}s", flush=True)
    keras.backend.clear_session()  # the next run's model would otherwise pile up in Keras' graph
    return [dict(entry, seed=seed) for entry in learner.curve]


def labels_to_reach(labelled, accuracy, threshold):
    """The first number of labels at which `accuracy` reaches `threshold`, else None."""
    reached = np.flatnonzero(np.asarray(accuracy) >= threshold)
    return int(labelled[reached[0]]) if reached.size else None


def summarize(curves, args, seconds):
    """Flat metrics: labels to 90% / 95% on the seed-mean curve and per seed, final accuracies."""
    metrics = {"rounds": args.rounds, "seeds": max(len(runs) for runs in curves.values()), "first_seed": args.seeds[0],
               "acquire": args.acquire, "initial_labels": args.initial_per_class * 10,
               "subset_size": args.subset_size, "evaluated_on": args.evaluate_on, "bayesian": args.bayesian,
               "architecture": args.architecture}
    for function, runs in curves.items():
        labelled = np.array([entry["labelled"] for entry in runs[0]])
        accuracy = np.array([[entry["accuracy"] for entry in run] for run in runs])
        for threshold in THRESHOLDS:
            key = f"labels_to_{round(threshold * 100)}_{function}"
            metrics[key] = labels_to_reach(labelled, accuracy.mean(axis=0), threshold)
            per_seed = [labels_to_reach(labelled, run, threshold) for run in accuracy]
            metrics[f"{key}_seed_min"] = None if None in per_seed else min(per_seed)
            metrics[f"{key}_seed_max"] = None if None in per_seed else max(per_seed)
        metrics[f"final_accuracy_{function}"] = float(accuracy[:, -1].mean())
        metrics[f"fit_seconds_{function}"] = round(sum(e["fit_seconds"] for run in runs for e in run), 1)
    metrics["fit_seconds"] = round(sum(metrics[f"fit_seconds_{f}"] for f in curves), 1)
    metrics["total_seconds"] = round(seconds, 1)
    return metrics


def figure(curves):
    """Accuracy against labelled images: the seed mean per function and the min-max band;
    crosses mark the labels Gal et al. 2017 needed for 90% and 95% (within the plotted range)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for function, runs in curves.items():
        labelled = [entry["labelled"] for entry in runs[0]]
        accuracy = np.array([[entry["accuracy"] for entry in run] for run in runs])
        line, = ax.plot(labelled, accuracy.mean(axis=0), label=f"{function} ({len(runs)} seeds)")
        ax.fill_between(labelled, accuracy.min(axis=0), accuracy.max(axis=0), color=line.get_color(), alpha=0.2)
        for threshold, labels in zip(THRESHOLDS, PUBLISHED.get(function, ())):
            if labels <= labelled[-1]:
                ax.plot(labels, threshold, "x", color=line.get_color(), markersize=9, markeredgewidth=2)
    for threshold in THRESHOLDS:
        ax.axhline(threshold, color="grey", linestyle=":", linewidth=0.8)
    ax.plot([], [], "x", color="grey", label="Gal et al. 2017 (MC dropout), labels to 90% / 95%")
    ax.set(xlabel="labelled images", ylabel="test accuracy", title="MNIST active learning: seed mean, min-max band")
    ax.legend()
    return fig


CURVE_COLUMNS = ("function", "seed", "round", "labelled", "accuracy", "fit_seconds")


def write_curves(curves, path):
    lines = [",".join(CURVE_COLUMNS)]
    for function, runs in curves.items():
        lines += [f"{function},{e['seed']},{e['round']},{e['labelled']},{e['accuracy']:.4f},{e['fit_seconds']:.2f}"
                  for run in runs for e in run]
    common.atomic_path(path, lambda temporary: pathlib.Path(temporary).write_text("\n".join(lines) + "\n"))


def read_curves(paths):
    """{(function, seed): curve} from curves.csv files (e.g. of runs on several machines)."""
    finished = {}
    for path in paths:
        table = pd.read_csv(path)
        if tuple(table.columns) != CURVE_COLUMNS:
            raise ValueError(f"--curves: {path} must have the columns {','.join(CURVE_COLUMNS)}, "
                             f"got {','.join(table.columns)}.")
        for (function, seed), rows in table.groupby(["function", "seed"], sort=False):
            if (function, seed) in finished:
                raise ValueError(f"--curves: {path} repeats the run {function} seed {seed}.")
            finished[function, int(seed)] = rows.to_dict("records")
    return finished


def summarize_files(args):
    """Figure, curves.csv and metrics.json of the runs in the `--curves` files; returns the
    metrics (`rounds`: the longest run's; the other settings recorded are the command line's)."""
    finished = read_curves(args.curves)
    args.rounds = max(len(curve) for curve in finished.values())
    args.functions = [function for function in FUNCTIONS if any(f == function for f, _ in finished)]
    args.seeds = sorted({seed for _, seed in finished})
    return write_outputs(args, finished, float("nan"))


def parse_args(argv=None):
    parser = common.parser(NAME, __doc__)
    parser.add_argument("--full", action="store_true", help="published budget: 100 rounds, 3 seeds")
    parser.add_argument("--curves", nargs="+", metavar="CSV",
                        help="train nothing: summarize and plot the runs in these curves.csv files "
                             "(give the options they ran with: metrics.json records them)")
    parser.add_argument("--rounds", type=int, default=20, help="training rounds (labels: 20, 30, ...)")
    parser.add_argument("--num-seeds", type=int, default=1, help="seeds --seed, --seed + 1, ...")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs (function x seed) trained at once, each in its own process with its share of the cores")
    parser.add_argument("--functions", nargs="+", choices=FUNCTIONS, default=list(FUNCTIONS))
    parser.add_argument("--acquire", type=int, default=10, help="images labelled per round")
    parser.add_argument("--initial-per-class", type=int, default=2, help="initial labels per class")
    parser.add_argument("--subset-size", type=int, default=2000, help="pool images scored per round")
    parser.add_argument("--num-samples", type=int, default=20, help="weight samples for the acquisition scores")
    parser.add_argument("--test-samples", type=int, default=10, help="weight samples for test predictions")
    parser.add_argument("--steps", type=int, default=200, help="Adam steps per round (from scratch)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--prior-scale", default="1.0", help="prior std: a number or a fan-in rule")
    parser.add_argument("--initial-scale", type=float, default=1e-3, help="posterior sigma at initialization")
    parser.add_argument("--architecture", choices=("gal", "small"), default="small",
                        help="gal: Gal et al. 2017's CNN; small: two conv + pool blocks, under a fifth of the weights")
    parser.add_argument("--bayesian", choices=("all", "dense"), default="all",
                        help="which layers are Bayesian: all, or the dense ones (convolutions as point estimates)")
    parser.add_argument("--validation-size", type=int, default=5000, help="training images held out of the pool")
    parser.add_argument("--evaluate-on", choices=("test", "validation"), default="test",
                        help="'validation' for hyperparameter choice; 'test' for the reported numbers")
    parser.add_argument("--pool-subset", type=int, default=0, help="use only this many pool images (0: all)")
    parser.add_argument("--test-subset", type=int, default=0, help="use only this many evaluation images (0: all)")
    args = parser.parse_args(argv)
    if args.full:
        args.rounds, args.num_seeds = 100, 3
    for name in ("rounds", "num_seeds", "jobs", "acquire", "steps", "batch_size", "num_samples", "test_samples"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    args.prior_scale = args.prior_scale if args.prior_scale in tfbdl.priors.FAN_SCALES else float(args.prior_scale)
    args.seeds = [args.seed + index for index in range(args.num_seeds)]
    return args


def _limit_threads(jobs):
    """Worker set-up: the machine's cores shared between `jobs` processes (TensorFlow would
    give each of them every core, and the processes would contend for them)."""
    import tensorflow as tf

    threads = max(1, (os.cpu_count() or 1) // jobs)
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def completed_runs(args):
    """Yields ((function, seed), curve) as each run finishes: in this process with `--jobs 1`,
    else in `--jobs` spawned worker processes, seed by seed (all functions of the first seed
    before the second seed, so an interrupted run has compared every function)."""
    tasks = [(function, seed) for seed in args.seeds for function in args.functions]
    if args.jobs == 1:
        data = load_data(args)
        for task in tasks:
            yield task, run_one(args, *task, data)
        return
    context = multiprocessing.get_context("spawn")  # TensorFlow's threads do not survive a fork
    pool = concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=context, initializer=_limit_threads,
                                                  initargs=(args.jobs,))
    try:
        futures = {pool.submit(run_one, args, *task): task for task in tasks}
        for future in concurrent.futures.as_completed(futures):
            yield futures[future], future.result()
    finally:  # a failed run (or Ctrl-C) cancels the runs not yet started
        pool.shutdown(cancel_futures=True)


def write_outputs(args, finished, seconds):
    """Figure, curves.csv and metrics.json of the runs finished so far (rewritten after each
    run, so a stopped run keeps its finished runs); returns the metrics."""
    curves = {function: [finished[function, seed] for seed in args.seeds if (function, seed) in finished]
              for function in args.functions}
    curves = {function: runs for function, runs in curves.items() if runs}
    metrics = summarize(curves, args, seconds)
    metrics["runs_finished"], metrics["runs_planned"] = len(finished), len(args.seeds) * len(args.functions)
    output_dir = pathlib.Path(args.output_dir)
    common.save_figure(figure(curves), output_dir / "accuracy_vs_labels.png")
    write_curves(curves, output_dir / "curves.csv")
    common.write_metrics(output_dir, metrics)
    return metrics


def main(argv=None):
    args = parse_args(argv)
    if args.curves:
        return summarize_files(args)
    start = time.perf_counter()
    finished = {}
    for task, curve in completed_runs(args):
        finished[task] = curve
        metrics = write_outputs(args, finished, time.perf_counter() - start)
    print(" ".join(f"{key}={value}" for key, value in metrics.items()))
    print(f"figures and metrics.json: {args.output_dir}   TensorBoard: {args.logdir}")
    return metrics


if __name__ == "__main__":
    main()
