"""Writes a benchmark run's results as RESULTS.md (Markdown tables) and scaling.png."""

import numpy as np

# (what, numerator, denominator, target ratio, the floor's numerator or None): the floor is
# the same ratio with the two-kernel deterministic layers of benchmarks/floor.py on top.
TARGETS = [
    ("tfbdl DenseFlipout / tfp.layers DenseFlipout",
     "mlp: tfbdl.layers.DenseFlipout", "mlp: tfp.layers.DenseFlipout", 0.80, "mlp: floor.TwoKernelDense"),
    ("tfbdl DenseFlipout / keras Dense", "mlp: tfbdl.layers.DenseFlipout", "mlp: keras.layers.Dense", 3.0,
     "mlp: floor.TwoKernelDense"),
    ("tfbdl DenseLocalReparameterization / keras Dense",
     "mlp: tfbdl.layers.DenseLocalReparameterization", "mlp: keras.layers.Dense", 2.2,
     "mlp: floor.TwoKernelDense"),
    ("tfbdl Conv2DFlipout / tfp.layers Convolution2DFlipout",
     "cnn: tfbdl.layers.Conv2DFlipout", "cnn: tfp.layers.Convolution2DFlipout", 0.80,
     "cnn: floor.TwoKernelConv2D"),
    ("tfbdl.predict S samples / S deterministic passes", "tfbdl.predict", "deterministic", 1.15, None),
    ("peak memory above baseline, DenseFlipout / Dense",
     "memory: tfbdl.layers.DenseFlipout", "memory: keras.layers.Dense", 3.0, None),
]


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def medians(results):
    """{name: median seconds (or bytes)} over repeats, for every measured quantity."""
    values = {name: float(np.median(times)) for name, times in results["step_seconds"].items()}
    values.update({name: float(np.median(times)) for name, times in results["prediction_seconds"].items()})
    values.update({f"memory: {name}": float(peak) for name, peak in results["memory"].items()})
    return values


def peer_of(name):
    """The tfp.layers twin of a tfbdl case name, or None."""
    if "tfbdl.layers." not in name:
        return None
    return name.replace("tfbdl.layers.Conv2D", "tfp.layers.Convolution2D").replace("tfbdl.", "tfp.")


def ratio(values, numerator, denominator):
    return f"{values[numerator] / values[denominator]:.2f}" if denominator in values else ""


def step_table(results, values, kind, layer):
    """Rows of one architecture; "/ its Keras" divides tfbdl by Keras 3 and tfp by tf_keras."""
    cpu = {name: float(np.median(times)) for name, times in results["step_cpu_seconds"].items()}
    rows = []
    for name, times in results["step_seconds"].items():
        if not name.startswith(kind + ":"):
            continue
        peer = peer_of(name)
        legacy = any(f"{kind}: {library}." in name for library in ("tfp", "tf_keras"))
        baseline = f"{kind}: {'tf_keras' if legacy else 'keras'}.layers.{layer}"
        rows.append([
            f"`{name.split(': ', 1)[1]}`",
            f"{1e3 * values[name]:.2f}",
            f"{1e3 * min(times):.2f} – {1e3 * max(times):.2f}",
            ratio(values, name, baseline),
            ratio(values, name, peer),
            f"{1e3 * cpu[name]:.2f}",
            ratio(cpu, name, baseline),
            ratio(cpu, name, peer),
        ])
    header = ["layer", "median step (ms)", "range over repeats (ms)", "/ its Keras", "/ tfp.layers peer",
              "CPU per step (ms)", "CPU / its Keras", "CPU / peer"]
    return markdown_table(header, rows)


def scaling_rows(results, values):
    """[(width, batch, dense seconds, flipout seconds)] of the scaling grid, in run order."""
    rows = []
    for case in results["cases"].values():
        if case["kind"] == "square" and case["library"] == "keras":
            key = f"square {case['width']} batch {case['batch']}"
            rows.append((case["width"], case["batch"], values[f"{key}: keras.layers.Dense"],
                         values[f"{key}: tfbdl.layers.DenseFlipout"]))
    return rows


def plot_scaling(rows, config, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    panels = [
        (axes[0], "width", 0, 1, config["scaling_widths_batch"], "batch"),
        (axes[1], "batch", 1, 0, config["scaling_batches_width"], "width"),
    ]
    for axis, label, varying, fixed, fixed_value, fixed_label in panels:
        points = sorted({row[varying]: row for row in rows if row[fixed] == fixed_value}.values(),
                        key=lambda row: row[varying])
        x = [row[varying] for row in points]
        axis.plot(x, [1e3 * row[2] for row in points], "o-", label="keras Dense")
        axis.plot(x, [1e3 * row[3] for row in points], "s-", label="tfbdl DenseFlipout")
        axis.set(xscale="log", yscale="log", xlabel=label, ylabel="median step (ms)",
                 title=f"one {label}-varied layer, {fixed_label} {fixed_value}")
        axis.set_xticks(x, [str(value) for value in x])
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    figure.suptitle("Training step (forward, backward, Adam) vs work")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write(results, out_dir):
    values = medians(results)
    config = results["config"]
    versions = ", ".join(f"{name} {version}" for name, version in results["versions"].items())
    machine = results["machine"]
    target_rows = []
    for what, numerator, denominator, target, floor in TARGETS:
        ratio = values[numerator] / values[denominator]
        floor_ratio = "" if floor is None else f"{values[floor] / values[denominator]:.2f}"
        target_rows.append([what, f"{ratio:.2f}", f"<= {target:.2f}", "yes" if ratio <= target else "**no**",
                            floor_ratio])
    rows = scaling_rows(results, values)
    plot_scaling(rows, config, out_dir / "scaling.png")
    samples, images = config["predict_samples"], config["predict_images"]
    memory_rows = [[f"`{name}`", f"{peak / 2**20:.0f}",
                    f"{peak / results['memory']['keras.layers.Dense']:.2f}"]
                   for name, peak in results["memory"].items()]
    load_start = ", ".join(f"{value:.2f}" for value in results["load_average_start"])
    load_end = ", ".join(f"{value:.2f}" for value in results["load_average_end"])
    text = f"""# Benchmark results

Generated by `{results['command']}` on
{results['date']}, in {results['wall_seconds'] / 60:.1f} minutes.

- Machine: {machine['cores']} cores, {machine['cpu_model']} ({machine['platform']}); cases run on
  {results['device']}.
- Versions: {versions}.
- Load average (1, 5, 15 min) at start: {load_start}; at end: {load_end}.
  The machine is shared: a load above the core count means other processes competed for
  the CPU. Ratios come from the same run with the repeats interleaved, so they are more
  stable than absolute times.
- Timing: {config['warmup']} warm-up steps, then the median of {config['steps']} timed training
  steps (forward, backward, Adam update, in one `tf.function`), per repeat; the table shows
  the median of {config['repeats']} repeats and their range. Batch {config['batch']}.
  tfp.layers run under tf_keras (`TF_USE_LEGACY_KERAS=1`) in their own worker process.
  The CPU columns give the process CPU time (all threads) per step: it barely moves when
  other processes compete for the cores, so its ratios cross-check the wall-time ratios.
  "/ its Keras" divides by the deterministic model on the same Keras: Keras 3 for tfbdl,
  tf_keras for tfp.layers (the targets compare tfbdl with Keras 3).

See [PROFILE.md](PROFILE.md) for where the step time goes and what was changed to speed up
the layers.

## Targets (ratios of medians, same run)

"floor" is the same ratio for deterministic layers with two kernels and two linear ops per
layer (`benchmarks/floor.py`: the parameters and linear ops of any mean-field layer, without
noise, softplus or KL), measured in the same run: no such Bayesian layer can beat it here.

{markdown_table(["what", "ratio", "target", "met", "floor"], target_rows)}

## Dense: {'-'.join(map(str, config['mlp_widths']))} MLP (tanh), batch {config['batch']}

{step_table(results, values, "mlp", "Dense")}

## Convolution: MNIST CNN (conv {config['cnn_filters']} 5x5 tanh, max-pool 2, twice; dense {config['cnn_units']} tanh; dense 10), batch {config['batch']}

Every conv and dense layer uses the estimator in the row (Keras: all deterministic).

{step_table(results, values, "cnn", "Conv2D")}

## Prediction: {samples} samples over {images} MNIST test images

`tfbdl.predict(model, x, num_samples={samples}, batch_size={config['predict_batch']})` with the
CNN above built from Flipout layers (by default one weight sample per batch and pass; with
`sampling='estimator'`, Flipout's two convolutions per layer), against {samples} deterministic
forward passes (one traced call per batch of {config['predict_batch']}) of the same CNN built
from `keras.layers`.

{markdown_table(
    ["what", "median seconds", "range over repeats (s)"],
    [[name, f"{values[name]:.2f}", f"{min(times):.2f} – {max(times):.2f}"]
     for name, times in results["prediction_seconds"].items()],
)}

## Memory: peak above baseline, one {config['memory_width']}x{config['memory_width']} layer, batch {config['memory_batch']}, Adam

Peak resident memory (Linux VmHWM, reset after imports and data) of building the layer and
running {config['memory_steps']} training steps, each case in a fresh process.

{markdown_table(["layer", "peak above baseline (MiB)", "/ Keras Dense"], memory_rows)}

## Scaling: keras Dense vs tfbdl DenseFlipout (one square layer)

![scaling](scaling.png)

{markdown_table(
    ["width", "batch", "Dense (ms)", "DenseFlipout (ms)", "DenseFlipout / Dense"],
    [[width, batch, f"{1e3 * dense:.2f}", f"{1e3 * flipout:.2f}", f"{flipout / dense:.2f}"]
     for width, batch, dense, flipout in rows],
)}
"""
    (out_dir / "RESULTS.md").write_text(text)
