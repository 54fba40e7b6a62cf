"""Two moons: a 2-hidden-layer tanh Bayesian network trained with model.fit.

The classic PyMC ADVI study (Wiecki, "Variational Inference: Bayesian Neural Networks"),
in Keras 3 with Flipout layers and the per-example negative ELBO, NLL + KL / N.

    python examples/moons.py --help
    tensorboard --logdir tensorboard_logs/moons
"""

import argparse
import json
import pathlib
import time

import keras

import tfbdl

ESTIMATORS = {
    "flipout": tfbdl.layers.DenseFlipout,
    "reparameterization": tfbdl.layers.DenseReparameterization,
    "local_reparameterization": tfbdl.layers.DenseLocalReparameterization,
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-examples", type=int, default=1000, help="moons generated (half for training)")
    parser.add_argument("--noise", type=float, default=0.2, help="moons noise")
    parser.add_argument("--hidden", type=int, default=16, help="units per hidden layer")
    parser.add_argument("--estimator", choices=sorted(ESTIMATORS), default="flipout")
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=50, help="0 means full batch")
    parser.add_argument("--learning-rate", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--logdir", default="tensorboard_logs/moons", help="TensorBoard log directory")
    parser.add_argument("--output-dir", default="outputs/moons", help="figures and metrics JSON")
    parser.add_argument("--verbose", type=int, default=2, help="Keras fit verbosity (0, 1, 2)")
    return parser.parse_args(argv)


def build_model(hidden, estimator, seed):
    layer = ESTIMATORS[estimator]
    return keras.Sequential(
        [
            keras.Input((2,)),
            layer(hidden, activation="tanh", seed=seed),
            layer(hidden, activation="tanh", seed=seed + 1),
            layer(1, activation="sigmoid", seed=seed + 2),
        ],
        name=f"moons_{estimator}",
    )


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    (x_train, y_train), (x_test, y_test) = tfbdl.data.two_moons(args.num_examples, args.noise, seed=args.seed)

    model = build_model(args.hidden, args.estimator, args.seed)
    tfbdl.set_kl_weight(model, num_examples=len(x_train))
    model.compile(keras.optimizers.Adam(args.learning_rate), "binary_crossentropy", metrics=["accuracy"])

    batch_size = args.batch_size or len(x_train)
    start = time.perf_counter()
    history = model.fit(
        x_train, y_train, epochs=args.epochs, batch_size=batch_size, verbose=args.verbose,
        validation_data=(x_test, y_test),
        callbacks=[
            keras.callbacks.TensorBoard(args.logdir),
            tfbdl.callbacks.PosteriorMonitor(
                args.logdir, histogram_freq=10, image_freq=25,
                image_fn=lambda m: tfbdl.plots.uncertainty_surface(
                    m, x_test, y_test, quantity="std", num_samples=30, grid_size=40),
            ),
            tfbdl.callbacks.TerminateOnNonFiniteELBO(),
        ],
    )
    seconds = time.perf_counter() - start

    # Posterior predictive from 100 weight samples (Monte Carlo model averaging) and its scores.
    result = tfbdl.predict(model, x_test, num_samples=100, progress=False)
    accuracy = tfbdl.metrics.accuracy(y_test, result.mean)
    nll = tfbdl.metrics.nll(y_test, result.mean)
    ece = tfbdl.metrics.expected_calibration_error(y_test, result.mean)
    metrics = {
        "test_accuracy": accuracy,
        "test_nll": nll,
        "test_ece": ece,
        "final_loss": float(history.history["loss"][-1]),
        "train_examples": len(x_train),
        "test_examples": len(x_test),
        "epochs": args.epochs,
        "batch_size": batch_size,
        "estimator": args.estimator,
        "fit_seconds": round(seconds, 1),
    }
    output_dir = pathlib.Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    for quantity in ("mean", "std"):
        tfbdl.plots.uncertainty_surface(model, x_train, y_train, quantity=quantity, num_samples=100,
                                        path=output_dir / f"predictive_{quantity}.png")
    tfbdl.plots.training_curves(history, path=output_dir / "training_curves.png")
    print(f"two moons test accuracy: {accuracy:.4f}, NLL: {nll:.4f}, ECE: {ece:.4f} "
          f"({len(x_test)} test points, 100 posterior samples)")
    print(f"figures: {output_dir / 'predictive_mean.png'}, {output_dir / 'predictive_std.png'}, "
          f"{output_dir / 'training_curves.png'}")
    print(f"TensorBoard logs: {args.logdir}   metrics: {output_dir / 'metrics.json'}")
    return metrics


if __name__ == "__main__":
    main()
