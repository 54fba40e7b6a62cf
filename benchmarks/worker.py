"""A benchmark worker process (started by `benchmarks.run`, not by hand).

    python -m benchmarks.worker serve          # JSON requests on stdin, replies on stdout
    python -m benchmarks.worker memory CASE    # one peak-memory measurement, fresh process

Requests (one JSON object per line): {"op": "time", "case": {...}, "warmup": w, "steps": n}
-> {"times": [...]}; {"op": "predict", ...} -> prediction times; {"op": "versions"} -> the
library versions and the device the cases run on (/gpu:0 when there is a GPU, else /cpu:0). Models
stay built between requests, so the runner can interleave repeats across workers.
"""

import json
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPLY_PREFIX = "@@benchmark "  # marks protocol lines among anything a library prints


def reply(payload):
    sys.stdout.write(REPLY_PREFIX + json.dumps(payload) + "\n")
    sys.stdout.flush()


def versions():
    import importlib.metadata
    import platform

    names = ["tensorflow", "keras", "tensorflow-probability", "tf-keras", "tfbdl", "numpy"]
    found = {"python": platform.python_version()}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def gpu_names():
    import tensorflow as tf

    return [gpu.name for gpu in tf.config.list_physical_devices("GPU")]


def device_strategy():
    """(device name, strategy): one-device on /gpu:0 when there is a GPU, else TensorFlow's
    default strategy on /cpu:0.

    Call it before anything runs: `tfbdl.runtime.strategy` turns on memory growth of every
    GPU first, so the runner's two worker processes can share one GPU.
    """
    import tensorflow as tf

    import tfbdl

    gpus = tf.config.list_physical_devices("GPU")
    device = "/gpu:0" if gpus else "/cpu:0"
    strategy = tfbdl.runtime.strategy([device] if gpus else "cpu")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        device += f" ({details.get('device_name', 'GPU')})"
    return device, strategy


def serve():
    from benchmarks import cases

    # Import the libraries now, while the runner measures memory, not during the first timing.
    legacy = os.environ.get("TF_USE_LEGACY_KERAS") == "1"
    device, strategy = device_strategy()
    cases.layer_classes("tfp" if legacy else "tfbdl", "Flipout")
    built = {}
    for line in sys.stdin:
        request = json.loads(line)
        op = request["op"]
        if op == "time":
            key = json.dumps(request["case"], sort_keys=True)
            if key not in built:
                with strategy.scope():
                    built[key] = cases.TimedCase(request["case"], strategy)
            reply({"times": built[key].time(request["warmup"], request["steps"])})
        elif op == "predict":
            import tfbdl

            images = tfbdl.data.load_images("mnist", "test")[0][: request["num_images"]]
            reply(cases.prediction_times(
                images, request["num_samples"], request["batch_size"], request["repeats"]
            ))
        elif op == "versions":
            reply({**versions(), "device": device})
        else:
            raise ValueError(f"Unknown request op={op!r}.")


def main(argv):
    if argv[:1] == ["serve"]:
        serve()
    elif argv[:1] == ["memory"] and len(argv) == 3:
        from benchmarks import cases

        reply({"bytes": cases.peak_memory_above_baseline(json.loads(argv[1]), int(argv[2]))})
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
