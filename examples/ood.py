"""Out-of-distribution detection with the MNIST-trained Bayesian CNN.

Loads the model examples/mnist_cnn.py saves (`--model`, default
outputs/mnist_cnn/mnist_cnn.keras; trained with mnist_cnn.py's defaults, plus
`--cnn-args`, when the file is absent), predicts the MNIST test images (in-distribution)
and an out-of-distribution set, `--ood` (a data set `tfbdl.data.load_images` knows,
default Fashion-MNIST) or `--ood-dir` (a folder of your own 28x28 IDX image files), and
scores how well each uncertainty score tells them apart:

    entropy             H[p_bar] = -sum_c p_bar_c log p_bar_c           (total)
    mutual_information  H[p_bar] - 1/S sum_s H[p_s]                     (epistemic)
    max_prob            1 - max_c p_bar_c

with p_s the class probabilities of posterior sample s and p_bar their mean over S =
`--num-samples` samples. AUROC = P(score_out > score_in) + P(tie) / 2 (OOD images are
the positives); 0.5 is chance, 1 perfect. No hyperparameter is tuned here: the model's
were chosen on MNIST validation data (see mnist_cnn.py) and the OOD set is only scored.

Writes to --output-dir: metrics.json (auroc_<score>, the MNIST test scores, fit_seconds:
0 when the model was loaded), <score>_histogram.png per score (MNIST vs OOD), and
scores.npz with every image's scores.

    python examples/ood.py --ood fashion_mnist
    python examples/ood.py --ood-dir path/to/folder/with/idx3/files
"""

import pathlib
import shlex

import keras
import matplotlib.figure
import numpy as np

import common
import mnist_cnn
import tfbdl

SCORES = ("entropy", "mutual_information", "max_prob")
DATASETS = ("fashion_mnist", "mnist")


def load_idx_folder(folder):
    """All `*idx3*` image files of `folder`, concatenated, as float32 (n, 28, 28, 1) in [0, 1]."""
    files = sorted(pathlib.Path(folder).glob("*idx3*"))
    if not files:
        raise FileNotFoundError(f"--ood-dir: no IDX image files (*idx3*) in {folder}.")
    images = np.concatenate([tfbdl.data.read_idx(path) for path in files])
    if images.shape[1:] != (28, 28):
        raise ValueError(f"--ood-dir: images must be 28x28 like MNIST, got shape {images.shape[1:]} "
                         f"in {[str(path) for path in files]}.")
    return images.astype("float32")[..., None] / 255.0


def load_model(args):
    """(model, seconds spent training it): the saved CNN, trained first if the file is absent."""
    path = pathlib.Path(args.model)
    if path.exists():
        return keras.saving.load_model(path), 0.0
    if path.name != mnist_cnn.MODEL_FILE:
        raise FileNotFoundError(f"--model {path} not found; only a missing {mnist_cnn.MODEL_FILE} is trained here.")
    print(f"{path} not found: training it with examples/mnist_cnn.py")
    metrics = mnist_cnn.main(["--output-dir", str(path.parent), "--seed", str(args.seed),
                              "--verbose", str(args.verbose)] + shlex.split(args.cnn_args))
    return keras.saving.load_model(path), metrics["fit_seconds"]


def score_histogram(score, inside, outside, auroc, ood_name):
    """Histogram of one score for MNIST and the OOD set, with its AUROC."""
    figure = matplotlib.figure.Figure(figsize=(5, 3.6), layout="constrained")
    ax = figure.subplots()
    edges = np.histogram_bin_edges(np.concatenate([inside, outside]), bins=40)
    ax.hist(inside, bins=edges, density=True, alpha=0.5, label=f"MNIST test ({len(inside)})")
    ax.hist(outside, bins=edges, density=True, alpha=0.5, color="tab:red", label=f"{ood_name} ({len(outside)})")
    ax.set(xlabel=score, ylabel="density", title=f"{score}: AUROC {auroc:.4f}")
    ax.legend()
    return figure


def parse_args(argv=None):
    parser = common.parser("ood", __doc__)
    parser.add_argument("--model", default=f"outputs/mnist_cnn/{mnist_cnn.MODEL_FILE}",
                        help="the .keras file mnist_cnn.py saves (trained if absent)")
    parser.add_argument("--cnn-args", default="", help="extra mnist_cnn.py options when training it here")
    parser.add_argument("--ood", choices=DATASETS, default="fashion_mnist",
                        help="out-of-distribution test set from tfbdl.data")
    parser.add_argument("--ood-dir", help="a folder of 28x28 IDX image files to use instead of --ood")
    parser.add_argument("--num-samples", type=int, default=50, help="posterior samples (>= 20)")
    parser.add_argument("--test-subset", type=int, default=0, help="score only this many images of each set")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    model, fit_seconds = load_model(args)
    x_in, y_in = tfbdl.data.load_images("mnist", "test")
    x_out = load_idx_folder(args.ood_dir) if args.ood_dir else tfbdl.data.load_images(args.ood, "test")[0]
    ood_name = args.ood_dir or args.ood
    if args.test_subset:
        x_in, y_in, x_out = x_in[:args.test_subset], y_in[:args.test_subset], x_out[:args.test_subset]
    inside, metrics = mnist_cnn.evaluate(model, x_in, y_in, args.num_samples, "test")
    outside = tfbdl.predict(model, x_out, num_samples=args.num_samples, output="logits", progress=False)
    metrics.update(fit_seconds=fit_seconds, ood=str(ood_name), in_examples=len(x_in),
                   ood_examples=len(x_out), num_samples=args.num_samples)
    output_dir = pathlib.Path(args.output_dir)
    scores = {}
    for score in SCORES:
        scores[f"in_{score}"] = tfbdl.metrics.uncertainty_score(inside, score)
        scores[f"out_{score}"] = tfbdl.metrics.uncertainty_score(outside, score)
        metrics[f"auroc_{score}"] = tfbdl.metrics.ood_auroc(inside, outside, score=score)
        common.save_figure(score_histogram(score, scores[f"in_{score}"], scores[f"out_{score}"],
                                           metrics[f"auroc_{score}"], ood_name),
                           output_dir / f"{score}_histogram.png")
    common.atomic_path(output_dir / "scores.npz", lambda temporary: np.savez(temporary, **scores))
    common.write_metrics(output_dir, metrics)
    print(f"MNIST vs {ood_name}: " + ", ".join(f"AUROC by {s} {metrics[f'auroc_{s}']:.4f}" for s in SCORES)
          + f"; MNIST test accuracy {metrics['test_accuracy']:.4f}")
    return metrics


if __name__ == "__main__":
    main()
