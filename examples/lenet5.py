"""Bayesian LeNet-5 on MNIST with reparameterization layers (the MindSpore BNN tutorial's network).

conv 6 5x5 ('same', as LeNet-5's 32x32 input), max-pool 2, conv 16 5x5, max-pool 2,
dense 120, dense 84, dense 10, ReLU; every conv and dense layer is Bayesian with one
weight sample per batch (reparameterization, Blundell et al. 2015, "Weight Uncertainty
in Neural Networks"):

    W = mu + sigma * eps,  eps ~ N(0, I),   loss = NLL + KL(q || N(0, s^2)) / N,

N the number of training images, s = `--prior-scale` (default 1; fan-in rules such as
"kaiming" shrink the weights harder, see mnist_cnn.py), the KL weight ramped linearly to 1/N over
`--warmup-epochs`. Predictions average `--num-samples` posterior samples. Published
baselines: VI LeNet-5 (tfp.layers, uncertainty-baselines) 98.5%, NLL 0.048, ECE 0.010.

Hyperparameters (prior scale, posterior initial scale, learning rate, epochs, warm-up)
were chosen on a 5 000-image validation split carved from the training set
(`--validation-size`), never on the test set; validation scores are in metrics.json.

Writes to --output-dir: metrics.json, reliability.png, entropy_histogram.png,
training_curves.png.

    python examples/lenet5.py --help
"""

import keras

import common
import mnist_cnn
import tfbdl

L = tfbdl.layers


def build_model(scale, initial_scale, seed):
    """LeNet-5 with reparameterization layers everywhere; outputs logits."""
    options = {"prior": tfbdl.priors.Gaussian(scale),
               "posterior": tfbdl.posteriors.MeanFieldNormal(initial_scale)}
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        L.Conv2DReparameterization(6, 5, padding="same", activation="relu", seed=seed, **options),
        keras.layers.MaxPooling2D(2),
        L.Conv2DReparameterization(16, 5, activation="relu", seed=seed + 1, **options),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        L.DenseReparameterization(120, activation="relu", seed=seed + 2, **options),
        L.DenseReparameterization(84, activation="relu", seed=seed + 3, **options),
        L.DenseReparameterization(10, seed=seed + 4, **options),
    ], name="lenet5")


def parse_args(argv=None):
    parser = common.parser("lenet5", __doc__)
    mnist_cnn.add_training_arguments(parser, epochs=20, learning_rate=2e-3, scale=1.0,
                                     initial_scale=1e-3, warmup_epochs=2)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    model = build_model(args.prior_scale, args.initial_scale, args.seed)
    metrics = mnist_cnn.run(model, args, mnist_cnn.calibration_figures)[0]
    return metrics


if __name__ == "__main__":
    main()
