"""Time to accuracy: training seconds of the MNIST CNN until its test accuracy reaches targets.

    python -m benchmarks.time_to_accuracy          # 3 seeds, up to 6 epochs, 98.5% and 99%
    python -m benchmarks.time_to_accuracy --tiny --seeds 0 --max-epochs 1  # a check (~1 min)

What is measured, for each implementation and seed, each in a fresh process:
the MNIST CNN (conv 32 5x5 relu, max-pool 2, conv 32 5x5 relu, max-pool 2, flatten, dense
256 relu, dense 10), every conv/dense layer from the implementation's library
(`benchmarks.cases.layer_classes`), trained with Adam on the 60 000 training images in
shuffled batches, minimizing the mean softmax cross-entropy plus the layers' KL losses
(KL weight 1/60 000, prior N(0, 1)). Every half epoch the clock stops and the test accuracy
of the predictive mean is taken on the 10 000 test images: `tfbdl.predict(num_samples=S)`
for tfbdl, the mean softmax of S stochastic forward passes for tfp.layers, one pass for the
deterministic Keras net. A run stops once it reaches the last threshold, or at
--max-epochs. Each evaluation point records the epochs done, the cumulative training wall
seconds and process CPU seconds (all threads; evaluation excluded, the tracing of the
first step included) and the accuracy.

Reported per implementation and threshold: the median over seeds of the wall seconds,
epochs and CPU seconds at the first evaluation point at or above the threshold, a seed
that never reaches it counting as infinitely slow (so the median is None, "not reached",
once half the seeds or more miss it), and how many seeds reached it.

Outputs in --out: time_to_accuracy.json (every curve and the medians),
time_to_accuracy.md (the table, the tfbdl / tfp.layers target, machine and versions) and
time_to_accuracy.png (accuracy against training wall time). On a machine with a GPU the
runs train on /gpu:0 and the files are named time_to_accuracy-gpu.*.
"""

import argparse
import concurrent.futures
import datetime
import json
import math
import os
import pathlib
import subprocess
import sys
import time

import numpy as np

from benchmarks import report, run, worker

IMPLEMENTATIONS = (("keras", None), ("tfbdl", "Flipout"), ("tfbdl", "Reparameterization"),
                   ("tfp", "Flipout"))
TFP_PEER = run.case_name("tfp", "Flipout", "cnn")
TARGET_RATIO = 0.6  # tfbdl's best estimator / tfp.layers Flipout, wall s to the first threshold
FULL = {"train_images": 60_000, "test_images": 10_000, "filters": 32, "units": 256}
TINY = {"train_images": 512, "test_images": 256, "filters": 4, "units": 16}
EVALUATION_BATCH = 500
IMAGE_SHAPE = (28, 28, 1)


# ----------------------------------------------------------------- one run (worker process)


def accuracy_of_predictive_mean(model, spec):
    """(x, y) -> test accuracy of the argmax of the predictive mean: `tfbdl.predict` with
    S samples for tfbdl, the mean softmax of S passes for tfp.layers, 1 pass for Keras."""
    import tensorflow as tf

    if spec["library"] == "tfbdl":
        import tfbdl

        return lambda x, y: float(np.mean(tfbdl.predict(
            model, x, num_samples=spec["num_samples"], output="logits", progress=False,
        ).predicted_class == y))
    passes = 1 if spec["library"] == "keras" else spec["num_samples"]
    forward = tf.function(lambda batch: tf.nn.softmax(model(batch, training=False)),
                          input_signature=[tf.TensorSpec((None,) + IMAGE_SHAPE, tf.float32)])

    def accuracy(x, y):
        correct = 0
        for start in range(0, len(x), EVALUATION_BATCH):
            batch = tf.constant(x[start:start + EVALUATION_BATCH])
            mean = tf.add_n([forward(batch) for _ in range(passes)]) / passes
            correct += int(np.sum(np.argmax(mean, axis=-1) == y[start:start + EVALUATION_BATCH]))
        return correct / len(x)

    return accuracy


def half_epochs(num_examples, batch_size, max_epochs, rng):
    """(epochs done after it, index batches) per half epoch: each epoch is a fresh shuffle in
    batches of `batch_size` (the last one smaller), its first half of the batches, then the rest."""
    for epoch in range(math.ceil(max_epochs)):
        order = rng.permutation(num_examples)
        batches = [order[start:start + batch_size] for start in range(0, num_examples, batch_size)]
        middle = (len(batches) + 1) // 2
        for half, segment in enumerate((batches[:middle], batches[middle:])):
            if epoch + (half + 1) / 2 > max_epochs:
                return
            yield epoch + (half + 1) / 2, segment


def mnist(train_images, test_images):
    """The first `train_images` MNIST training and `test_images` test examples."""
    import tfbdl

    (x_train, y_train), (x_test, y_test) = (tfbdl.data.load_images("mnist", split)
                                            for split in ("train", "test"))
    return ((x_train[:train_images], y_train[:train_images]),
            (x_test[:test_images], y_test[:test_images]))


def train_to_accuracy(spec):
    """One implementation and seed (`spec`), trained in this process until its accuracy reaches
    spec["stop_at"] or spec["max_epochs"]; the curve: {"device", "points": [{"epochs",
    "wall_seconds", "cpu_seconds", "accuracy", "evaluation_seconds"}, ...]}."""
    from benchmarks import cases

    device, strategy = worker.device_strategy()  # first: GPU memory growth is set before any op
    run_name = f"{run.case_name(spec['library'], spec['estimator'], 'cnn')}, seed {spec['seed']}"
    print(f"{run_name}: device {device}", file=sys.stderr)
    keras = cases.layer_classes(spec["library"], spec["estimator"])[0]
    keras.utils.set_random_seed(spec["seed"])
    (x_train, y_train), (x_test, y_test) = mnist(spec["train_images"], spec["test_images"])
    with strategy.scope():
        model = cases.build_model({"library": spec["library"], "estimator": spec["estimator"],
                                   "kind": "cnn", "activation": "relu", "filters": spec["filters"],
                                   "units": spec["units"]})
        step = cases.training_step(model, keras, spec["learning_rate"], strategy)
    accuracy_of = accuracy_of_predictive_mean(model, spec)
    points, wall, cpu = [], 0.0, 0.0
    rng = np.random.default_rng(spec["seed"])
    for epochs, batches in half_epochs(len(x_train), spec["batch_size"], spec["max_epochs"], rng):
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        for batch in batches:
            loss = step(x_train[batch], y_train[batch])
        float(loss)  # waits for the last step (GPU ops run asynchronously)
        wall += time.perf_counter() - wall_start
        cpu += time.process_time() - cpu_start
        evaluation_start = time.perf_counter()
        accuracy = accuracy_of(x_test, y_test)
        points.append({"epochs": epochs, "wall_seconds": wall, "cpu_seconds": cpu,
                       "accuracy": accuracy,
                       "evaluation_seconds": time.perf_counter() - evaluation_start})
        print(f"{run_name}: epochs {epochs:g}, accuracy {accuracy:.4f} after {wall:.1f} s training "
              f"({cpu:.1f} s CPU)", file=sys.stderr)
        if accuracy >= spec["stop_at"]:
            break
    return {"device": device, "points": points}


# ----------------------------------------------------------------- the runner


def run_in_fresh_process(spec):
    """`train_to_accuracy(spec)` in a new Python process (tfp.layers: TF_USE_LEGACY_KERAS=1)."""
    command = [sys.executable, "-m", "benchmarks.time_to_accuracy", "--run-one", json.dumps(spec)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=run.ROOT,
                               env=run.worker_env(spec["library"]))
    curve = run.read_reply(process.stdout, command)
    if process.wait() != 0:
        raise RuntimeError(f"{command} exited with status {process.returncode}.")
    return curve


def first_crossing(points, threshold):
    """The first evaluation point with accuracy >= `threshold`, or None."""
    return next((point for point in points if point["accuracy"] >= threshold), None)


def time_to_threshold(curves, threshold):
    """Medians over `curves` (one per seed) of the wall seconds, epochs and CPU seconds at the
    first crossing of `threshold`, a missed threshold counting as infinite (median None when
    half the seeds or more miss it), and the number of seeds that reached it."""
    crossings = [first_crossing(curve["points"], threshold) for curve in curves]
    summary = {}
    for key in ("wall_seconds", "epochs", "cpu_seconds"):
        values = [math.inf if point is None else point[key] for point in crossings]
        median = float(np.median(values))
        summary[key] = None if math.isinf(median) else median
    summary["seeds_reached"] = sum(point is not None for point in crossings)
    summary["seeds"] = len(curves)
    return summary


def threshold_key(threshold):
    return f"{threshold:g}"


def summarize(curves, thresholds):
    """{implementation: {threshold key: `time_to_threshold` over that implementation's seeds}}."""
    names = list(dict.fromkeys(curve["implementation"] for curve in curves))
    return {name: {threshold_key(threshold): time_to_threshold(
        [curve for curve in curves if curve["implementation"] == name], threshold)
        for threshold in thresholds} for name in names}


def target_ratio(summary, threshold):
    """tfbdl's fastest estimator / tfp.layers Flipout, median wall seconds to `threshold`
    (None unless both reached it), against `TARGET_RATIO`."""
    key = threshold_key(threshold)
    tfbdl = {name: times[key]["wall_seconds"] for name, times in summary.items()
             if name.startswith("tfbdl.") and times[key]["wall_seconds"] is not None}
    peer = summary.get(TFP_PEER, {}).get(key, {}).get("wall_seconds")
    best = min(tfbdl, key=tfbdl.get) if tfbdl else None
    ratio = tfbdl[best] / peer if best and peer else None
    return {"threshold": threshold, "tfbdl": best, "tfp": TFP_PEER, "ratio": ratio,
            "target": TARGET_RATIO, "met": None if ratio is None else ratio <= TARGET_RATIO}


def measure(args, progress=print):
    """The curves of every implementation and seed (seeds outermost), each in its own process,
    `args.jobs` processes at a time."""
    sizes = TINY if args.tiny else FULL
    specs = [{"library": library, "estimator": estimator, "seed": seed, **sizes,
              "batch_size": args.batch_size, "learning_rate": args.learning_rate,
              "num_samples": args.num_samples, "max_epochs": args.max_epochs,
              "stop_at": args.thresholds[-1]}
             for seed in args.seeds for library, estimator in IMPLEMENTATIONS]

    def curve(index, spec):
        name = run.case_name(spec["library"], spec["estimator"], "cnn")
        progress(f"[{index + 1}/{len(specs)}] {name}, seed {spec['seed']}")
        return {"implementation": name, "library": spec["library"], "estimator": spec["estimator"],
                "seed": spec["seed"], **run_in_fresh_process(spec)}

    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        return list(pool.map(curve, range(len(specs)), specs))


def run_all(args, argv):
    """Measures, then writes the json, md and png (-gpu suffix with a GPU) to args.out."""
    gpus = worker.gpu_names()
    print(f"GPUs: {gpus or 'none'}; training on {'/gpu:0' if gpus else '/cpu:0'}")
    started = time.time()
    results = {
        "command": " ".join(["python -m benchmarks.time_to_accuracy", *argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {**run.machine(), "gpus": gpus},
        "versions": worker.versions(),
        "load_average_start": os.getloadavg(),
        "settings": {"seeds": args.seeds, "max_epochs": args.max_epochs,
                     "thresholds": args.thresholds, "num_samples": args.num_samples,
                     "learning_rate": args.learning_rate,
                     "batch_size": args.batch_size, "jobs": args.jobs, "tiny": args.tiny,
                     **(TINY if args.tiny else FULL)},
    }
    results["curves"] = measure(args)
    results["load_average_end"] = os.getloadavg()
    results["wall_seconds"] = time.time() - started
    results["time_to_accuracy"] = summarize(results["curves"], args.thresholds)
    results["target"] = target_ratio(results["time_to_accuracy"], args.thresholds[0])
    stem = args.out / ("time_to_accuracy-gpu" if gpus else "time_to_accuracy")
    args.out.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(results, indent=1))
    stem.with_suffix(".md").write_text(markdown(results, stem.with_suffix(".png").name))
    plot(results).savefig(stem.with_suffix(".png"), dpi=110)
    return stem


# ----------------------------------------------------------------- report


def _cell(value, digits):
    return "not reached" if value is None else f"{value:.{digits}f}"


def _device(results):
    return ", ".join(sorted({curve["device"] for curve in results["curves"]}))


def summary_table(results):
    """Markdown: a row per implementation, per threshold its median wall s, epochs, CPU s, seeds."""
    thresholds = results["settings"]["thresholds"]
    header = ["implementation"]
    for threshold in thresholds:
        header += [f"{100 * threshold:g}%: {what}"
                   for what in ("wall s", "epochs", "CPU s", "seeds reached")]
    header += ["best accuracy (median)", "wall s / epoch (median)"]
    rows = []
    for name, times in results["time_to_accuracy"].items():
        curves = [curve["points"] for curve in results["curves"] if curve["implementation"] == name]
        row = [f"`{name}`"]
        for threshold in thresholds:
            entry = times[threshold_key(threshold)]
            row += [_cell(entry[key], 1) for key in ("wall_seconds", "epochs", "cpu_seconds")]
            row.append(f"{entry['seeds_reached']}/{entry['seeds']}")
        best = np.median([max(point["accuracy"] for point in points) for points in curves])
        per_epoch = np.median([points[-1]["wall_seconds"] / points[-1]["epochs"]
                               for points in curves])
        row += [f"{best:.4f}", f"{per_epoch:.1f}"]
        rows.append(row)
    return report.markdown_table(header, rows)


def target_line(target):
    what = (f"`{target['tfbdl'] or 'tfbdl (best estimator)'}` / `{target['tfp']}`, median "
            f"training wall seconds to {100 * target['threshold']:g}%")
    if target["ratio"] is None:
        return f"{what}: not determined (a side did not reach it); target <= {target['target']}."
    verdict = "met" if target["met"] else "**not met**"
    return f"{what}: **{target['ratio']:.2f}** (target <= {target['target']}): {verdict}."


def _jobs(jobs):
    return "one at a time" if jobs == 1 else f"**{jobs} at a time (competing for the cores)**"


def markdown(results, png_name):
    settings, machine = results["settings"], results["machine"]
    versions = ", ".join(f"{name} {version}" for name, version in results["versions"].items())
    load = "; at end: ".join(
        ", ".join(f"{value:.2f}" for value in results[f"load_average_{when}"])
        for when in ("start", "end"))
    return f"""# Time to accuracy: MNIST CNN

Generated by `{results['command']}` on {results['date']},
in {results['wall_seconds'] / 60:.1f} minutes.

- Machine: {machine['cpu_model']}, {machine['cores']} cores ({machine['platform']}); GPUs: \
{', '.join(machine['gpus']) or 'none'}. Device used: {_device(results)}.
- Versions: {versions}.
- Load average (1, 5, 15 min) at start: {load}. A load above the core count means other
  processes competed for the CPU: wall times grow, CPU times hardly.
- Model: conv {settings['filters']} 5x5 relu, max-pool 2, conv {settings['filters']} 5x5 relu,
  max-pool 2, flatten, dense {settings['units']} relu, dense 10; every conv/dense layer from the
  row's library.
  Adam (learning rate {settings['learning_rate']:g}), batch {settings['batch_size']},
  {settings['train_images']} training images, KL weight 1/60000, prior N(0, 1).
- Evaluated every half epoch on {settings['test_images']} test images: accuracy of the predictive
  mean of {settings['num_samples']} samples (`tfbdl.predict` for tfbdl, stochastic forward passes
  for tfp.layers, one pass for Keras). Seeds {', '.join(map(str, settings['seeds']))}, each
  implementation and seed in a fresh process, {_jobs(settings['jobs'])}, at most
  {settings['max_epochs']:g} epochs.
- Times are training only (evaluation excluded; the first step's tracing included): wall
  seconds and process CPU seconds (all threads) at the first evaluation at or above the
  threshold. Medians over seeds; a seed that never reaches a threshold counts as infinitely
  slow, so "not reached" means half the seeds or more missed it.

## Median time to accuracy

{summary_table(results)}

## Target

{target_line(results['target'])}

![accuracy against training wall time]({png_name})
"""


def plot(results):
    """Test accuracy against training wall time: a curve per implementation and seed."""
    import matplotlib.figure

    figure = matplotlib.figure.Figure(figsize=(7.5, 4.8), layout="constrained")
    axes = figure.add_subplot()
    names, first_seed = list(results["time_to_accuracy"]), results["settings"]["seeds"][0]
    for curve in results["curves"]:
        name, points = curve["implementation"], curve["points"]
        axes.plot([point["wall_seconds"] for point in points],
                  [point["accuracy"] for point in points], marker="o", markersize=3,
                  color=f"C{names.index(name)}", alpha=0.8,
                  label=name if curve["seed"] == first_seed else None)
    for threshold in results["settings"]["thresholds"]:
        axes.axhline(threshold, color="0.4", linestyle="--", linewidth=0.8)
        axes.annotate(f"{100 * threshold:g}%", (1, threshold), xycoords=("axes fraction", "data"),
                      ha="right", va="bottom", fontsize=8, color="0.3")
    axes.set_xlabel("training wall time (s), evaluation excluded")
    axes.set_ylabel("test accuracy of the predictive mean")
    axes.set_title(f"MNIST CNN, one curve per seed ({_device(results)})", fontsize=10)
    axes.legend(fontsize=8)
    return figure


# ----------------------------------------------------------------- command line


def _comma_list(kind, noun, is_valid, expected):
    """argparse type: comma-separated `kind` values, each `is_valid`, duplicates dropped."""
    def parse(text):
        try:
            values = [kind(part) for part in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be comma-separated {noun}, got {text!r}") from None
        if not all(map(is_valid, values)):
            raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}")
        return list(dict.fromkeys(values))

    return parse


_seeds = _comma_list(int, "integers", lambda seed: 0 <= seed < 2**32, "integers in [0, 2**32)")
_accuracies = _comma_list(float, "accuracies", lambda accuracy: 0 < accuracy <= 1, "accuracies in (0, 1]")


def _half_epochs(text):
    try:
        epochs = float(text)
    except ValueError:
        epochs = math.nan
    if not (epochs > 0 and (2 * epochs).is_integer()):
        raise argparse.ArgumentTypeError(f"must be a positive multiple of 0.5, got {text!r}")
    return epochs


def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = math.nan
        if not (value > 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"must be a positive {kind.__name__}, got {text!r}")
        return value

    return parse


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.time_to_accuracy",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=_seeds, default=[0, 1, 2],
                        help="comma-separated (default 0,1,2)")
    parser.add_argument("--max-epochs", type=_half_epochs, default=6.0,
                        help="stop a run after this many epochs, a multiple of 0.5 (default 6)")
    parser.add_argument("--thresholds", type=_accuracies, default=[0.985, 0.99],
                        help="comma-separated test accuracies (default 0.985,0.99); "
                             "a run stops at the last")
    parser.add_argument("--tiny", action="store_true",
                        help=f"tiny sizes, to check the script end to end (about a minute): {TINY}")
    parser.add_argument("--out", type=pathlib.Path, default=run.ROOT / "benchmarks",
                        help="output folder (default benchmarks/)")
    parser.add_argument("--num-samples", type=_positive(int), default=20,
                        help="posterior samples of the predictive mean (default 20)")
    parser.add_argument("--learning-rate", type=_positive(float), default=1e-3,
                        help="Adam's learning rate (default 1e-3)")
    parser.add_argument("--batch-size", type=_positive(int), default=128,
                        help="training batch size (default 128)")
    parser.add_argument("--jobs", type=_positive(int), default=1,
                        help="runs at once (default 1); more compete for the cores: "
                             "for checks only")
    parser.add_argument("--run-one", metavar="SPEC", help=argparse.SUPPRESS)  # the worker process
    args = parser.parse_args(argv)
    args.thresholds = sorted(args.thresholds)
    train_images = (TINY if args.tiny else FULL)["train_images"]
    if 2 * args.batch_size > train_images:
        parser.error(f"argument --batch-size: must be at most half the {train_images} training "
                     f"images (two batches per epoch at least), got {args.batch_size}")
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.run_one is not None:
        worker.reply(train_to_accuracy(json.loads(args.run_one)))
        return
    stem = run_all(args, argv)
    print(f"Wrote {stem}.json, .md and .png")


if __name__ == "__main__":
    main()
