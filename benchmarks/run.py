"""Entry point: speed and memory of tfbdl layers against Keras and tfp.layers, in one run.

    python -m benchmarks.run            # full run, writes benchmarks/RESULTS.md + scaling.png
    python -m benchmarks.run --quick    # every case, few steps and sizes (about 2 minutes)
    python -m benchmarks.run --time-to-accuracy [its options]  # = python -m benchmarks.time_to_accuracy

On a machine with a GPU the cases run on /gpu:0 (memory growth on, float32 like the
tfp.layers peers) and the results go to a separate folder (benchmarks/gpu/ for a full run,
build/benchmarks-quick-gpu/ otherwise), so CPU and GPU results never overwrite each other.

Timing: median wall time of a training step (forward, backward, Adam update; warm-up steps
excluded) per repeat; the reported time is the median over repeats, and each repeat runs
every case once, alternating between the Keras 3 worker and the tfp.layers worker
(TF_USE_LEGACY_KERAS=1) so that both see the same machine load. Memory: peak resident
memory above the baseline after imports and data, one fresh process per case.
"""

import argparse
import dataclasses
import datetime
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np

from benchmarks import report
from benchmarks.worker import REPLY_PREFIX

ROOT = pathlib.Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class Config:
    """What to measure and how long; `FULL`, `QUICK` and `TINY` are the presets."""

    warmup: int = 3
    steps: int = 20
    repeats: int = 3
    batch: int = 128
    mlp_widths: tuple = (784, 800, 800, 10)
    cnn_filters: int = 32
    cnn_units: int = 256
    scaling_widths: tuple = (256, 512, 1024, 2048, 4096)
    scaling_widths_batch: int = 128
    scaling_batches: tuple = (32, 64, 128, 256, 512, 1024)
    scaling_batches_width: int = 1024
    memory_width: int = 4096
    memory_batch: int = 1024
    memory_steps: int = 3
    predict_images: int = 10_000
    predict_samples: int = 100
    predict_batch: int = 500
    predict_repeats: int = 1


FULL = Config()
QUICK = dataclasses.replace(
    FULL, warmup=2, steps=10, repeats=2, scaling_widths=(256, 512), scaling_batches=(32, 256),
    scaling_batches_width=512, memory_width=1024, memory_batch=256, memory_steps=2,
    predict_images=500, predict_samples=10,
)
TINY = dataclasses.replace(  # for the test suite: the harness end to end, in seconds
    QUICK, warmup=1, steps=3, repeats=1, batch=16, mlp_widths=(784, 32, 32, 10), cnn_filters=4,
    cnn_units=16, scaling_widths=(16, 32), scaling_widths_batch=8, scaling_batches=(8,),
    scaling_batches_width=16, memory_width=64, memory_batch=32, memory_steps=1,
    predict_images=64, predict_samples=2, predict_batch=32,
)

# Keras 3 is the baseline of tfbdl; tf_keras (Keras 2) that of the tfp.layers peers.
# "floor": deterministic layers with two kernels (benchmarks/floor.py), the lower bound.
DENSE = [("keras", None), ("tf_keras", None), ("floor", None)] + [
    (library, estimator) for library in ("tfbdl", "tfp")
    for estimator in ("Reparameterization", "Flipout", "LocalReparameterization")
]
CONV = [("keras", None), ("tf_keras", None), ("floor", None)] + [
    (library, estimator) for library in ("tfbdl", "tfp") for estimator in ("Reparameterization", "Flipout")
]
LEGACY_KERAS = ("tfp", "tf_keras")  # libraries that run in the TF_USE_LEGACY_KERAS=1 worker
SCALING = [("keras", None), ("tfbdl", "Flipout")]
MEMORY = [("keras", None), ("tfbdl", "Flipout"), ("tfp", "Flipout")]


def worker_env(library):
    env = dict(os.environ, KERAS_BACKEND="tensorflow", PYTHONPATH=str(ROOT))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if library in LEGACY_KERAS:
        env["TF_USE_LEGACY_KERAS"] = "1"
    return env


def read_reply(stream, command):
    """The payload of the next protocol line of a worker (other output is passed through)."""
    for line in stream:
        if line.startswith(REPLY_PREFIX):
            return json.loads(line[len(REPLY_PREFIX):])
    raise RuntimeError(f"benchmark worker {command} exited without replying (see its stderr above).")


class Worker:
    """A long-lived `benchmarks.worker serve` process for one Keras flavour."""

    def __init__(self, legacy_keras):
        self.command = [sys.executable, "-m", "benchmarks.worker", "serve"]
        self.process = subprocess.Popen(
            self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env=worker_env("tf_keras" if legacy_keras else "keras"), cwd=ROOT,
        )

    def request(self, **payload):
        self.process.stdin.write(json.dumps(payload) + "\n")
        self.process.stdin.flush()
        return read_reply(self.process.stdout, self.command)

    def close(self):
        self.process.stdin.close()
        self.process.wait()


def time_cases(cases, workers, config, progress):
    """({case key: [median wall seconds per step, one per repeat]}, the same in CPU seconds),
    the repeats alternating across cases."""
    medians = {clock: {key: [] for key, _ in cases} for clock in ("wall", "cpu")}
    for repeat in range(config.repeats):
        shift = repeat % len(cases)  # rotate the order so no case always runs first
        for key, case in cases[shift:] + cases[:shift]:
            worker = workers[case["library"] in LEGACY_KERAS]
            times = worker.request(op="time", case=case, warmup=config.warmup, steps=config.steps)["times"]
            for clock in medians:
                medians[clock][key].append(float(np.median(times[clock])))
            progress(f"repeat {repeat + 1}/{config.repeats} {key}: {1e3 * medians['wall'][key][-1]:.1f} ms "
                     f"(CPU {1e3 * medians['cpu'][key][-1]:.1f} ms)")
    return medians["wall"], medians["cpu"]


def case_name(library, estimator, kind):
    if library in ("keras", "tf_keras"):
        return f"{library}.layers.{'Conv2D' if kind == 'cnn' else 'Dense'}"
    if library == "floor":
        return f"floor.TwoKernel{'Conv2D' if kind == 'cnn' else 'Dense'}"
    if kind == "cnn":
        return f"tfbdl.layers.Conv2D{estimator}" if library == "tfbdl" else f"tfp.layers.Convolution2D{estimator}"
    return f"{library}.layers.Dense{estimator}"


def speed_cases(config):
    """[(name, case)] of the dense, conv and scaling step timings."""
    cases = []
    for kind, variants in (("mlp", DENSE), ("cnn", CONV)):
        for library, estimator in variants:
            case = {"kind": kind, "library": library, "estimator": estimator, "batch": config.batch}
            case.update({"widths": config.mlp_widths} if kind == "mlp"
                        else {"filters": config.cnn_filters, "units": config.cnn_units})
            cases.append((f"{kind}: {case_name(library, estimator, kind)}", case))
    grid = [(width, config.scaling_widths_batch) for width in config.scaling_widths]
    grid += [(config.scaling_batches_width, batch) for batch in config.scaling_batches]
    for width, batch in dict.fromkeys(grid):
        for library, estimator in SCALING:
            case = {"kind": "square", "library": library, "estimator": estimator,
                    "width": width, "batch": batch}
            cases.append((f"square {width} batch {batch}: {case_name(library, estimator, 'square')}", case))
    return cases


def measure_memory(config, progress):
    """{name: peak bytes above baseline}, each case in its own fresh process (run together)."""
    processes = {}
    for library, estimator in MEMORY:
        case = {"kind": "square", "library": library, "estimator": estimator,
                "width": config.memory_width, "batch": config.memory_batch}
        command = [sys.executable, "-m", "benchmarks.worker", "memory", json.dumps(case),
                   str(config.memory_steps)]
        processes[case_name(library, estimator, "square")] = (command, subprocess.Popen(
            command, stdout=subprocess.PIPE, text=True, env=worker_env(library), cwd=ROOT))
    peaks = {}
    for name, (command, process) in processes.items():
        peaks[name] = read_reply(process.stdout, command)["bytes"]
        process.wait()
        progress(f"memory {name}: {peaks[name] / 2**20:.0f} MiB")
    return peaks


def machine():
    cpu_model = "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {"cpu_model": cpu_model, "cores": os.cpu_count(), "platform": sys.platform}


def run(config, out_dir, preset, progress=print):
    """Measures every case and writes RESULTS.md, scaling.png and results.json to `out_dir`."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    results = {
        "command": "python -m benchmarks.run" + {"full": "", "quick": " --quick", "tiny": " --tiny"}[preset],
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "load_average_start": os.getloadavg(),
        "config": dataclasses.asdict(config),
    }
    # The workers start (and import TensorFlow) while the memory cases run; timing starts after.
    workers = (Worker(legacy_keras=False), Worker(legacy_keras=True))
    try:
        results["memory"] = measure_memory(config, progress)
        versions = {**workers[1].request(op="versions"), **workers[0].request(op="versions")}
        results["device"] = versions.pop("device")
        results["versions"] = versions
        progress(f"cases run on {results['device']}")
        cases = speed_cases(config)
        results["cases"] = dict(cases)
        results["step_seconds"], results["step_cpu_seconds"] = time_cases(cases, workers, config, progress)
        results["prediction_seconds"] = workers[0].request(
            op="predict", num_images=config.predict_images, num_samples=config.predict_samples,
            batch_size=config.predict_batch, repeats=config.predict_repeats,
        )
        progress(f"prediction: {results['prediction_seconds']}")
    finally:
        for worker in workers:
            worker.close()
    results["load_average_end"] = os.getloadavg()
    results["wall_seconds"] = time.time() - started
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    report.write(results, out_dir)
    return results


def has_gpu():
    """Whether TensorFlow sees a GPU (asked in a child process: this one stays free of TF)."""
    command = [sys.executable, "-c", "import tensorflow as tf; print(len(tf.config.list_physical_devices('GPU')))"]
    found = subprocess.run(command, capture_output=True, text=True, check=True,
                           env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return int(found.stdout.split()[-1]) > 0


def default_out_dir(preset, gpu):
    """benchmarks/ (full run) or build/benchmarks-quick/, with a gpu/ or -gpu variant on a GPU."""
    if preset == "full":
        return ROOT / "benchmarks" / "gpu" if gpu else ROOT / "benchmarks"
    return ROOT / "build" / ("benchmarks-quick-gpu" if gpu else "benchmarks-quick")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--time-to-accuracy" in argv:  # every other option is the time-to-accuracy run's own
        rest = [arg for arg in argv if arg != "--time-to-accuracy"]
        command = [sys.executable, "-m", "benchmarks.time_to_accuracy", *rest]
        raise SystemExit(subprocess.run(command, cwd=ROOT).returncode)  # its own process: no import cycle
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few steps, repeats and sizes (about 2 minutes)")
    parser.add_argument("--tiny", action="store_true",
                        help="tiny models, to check the harness end to end (the test suite uses it)")
    parser.add_argument("--out", type=pathlib.Path, default=None,
                        help="output folder (default: benchmarks/ for a full run, build/benchmarks-quick/ "
                             "otherwise; with a GPU benchmarks/gpu/ and build/benchmarks-quick-gpu/)")
    parser.add_argument("--time-to-accuracy", action="store_true",
                        help="run benchmarks.time_to_accuracy instead; every other option is passed to it")
    args = parser.parse_args(argv)
    preset = "tiny" if args.tiny else "quick" if args.quick else "full"
    out_dir = args.out or default_out_dir(preset, has_gpu())
    run({"full": FULL, "quick": QUICK, "tiny": TINY}[preset], out_dir, preset)
    print(f"Wrote {out_dir / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
