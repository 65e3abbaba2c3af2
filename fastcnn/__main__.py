"""``python -m fastcnn``: train a convolutional network and report its accuracy.

By default it trains a small CNN (conv 16@3x3 - ReLU - max pool 2 - conv
32@3x3 - ReLU - max pool 2 - dense 10) on scikit-learn's bundled 8x8 digits,
holding out 25% for testing; nothing is downloaded. ``--dataset
fashion-mnist`` trains LeNet-5 on Fashion-MNIST, read from Debian's
``dataset-fashion-mnist`` package or ``--data-dir``.
"""
import argparse
import sys
import time
import warnings

import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split

from . import CNNClassifier, datasets
from ._kernels.gemm import gemm_kernel_name
from ._threads import effective_n_threads
from .layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU

LENET5 = [Conv2D(6, 5, padding=2), ReLU(), MaxPool2D(2),
          Conv2D(16, 5), ReLU(), MaxPool2D(2),
          Flatten(), Dense(120), ReLU(), Dense(84), ReLU()]

# dataset -> (architecture, training settings)
SETTINGS = {
    "digits": (dict(filters=(16, 32), kernel_size=3, padding="same", pool_size=2,
                    hidden_layer_sizes=()),
               dict(epochs=10, batch_size=32, learning_rate=0.01)),
    "fashion-mnist": (dict(layers=LENET5),
                      dict(epochs=5, batch_size=64, learning_rate=0.001)),
}


def load(dataset, data_dir, seed):
    """(X_train, X_test, y_train, y_test), X scaled to [0, 1], (n, 1, H, W)."""
    if dataset == "digits":
        digits = load_digits()
        X = digits.images[:, np.newaxis] / 16.0
        return train_test_split(X, digits.target, test_size=0.25,
                                random_state=seed, stratify=digits.target)
    X_train, y_train, X_test, y_test = datasets.load_fashion_mnist(data_dir)
    return (X_train[:, np.newaxis] / np.float32(255), X_test[:, np.newaxis] / np.float32(255),
            y_train, y_test)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m fastcnn", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(SETTINGS), default="digits")
    parser.add_argument("--epochs", type=int, help="passes over the training data")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--learning-rate", type=float, help="learning_rate_init")
    parser.add_argument("--solver", choices=["adam", "sgd"], default="adam")
    parser.add_argument("--threads", type=int, default=None,
                        help="kernel threads (default: the physical cores)")
    parser.add_argument("--seed", type=int, default=0, help="random_state")
    parser.add_argument("--data-dir", default=None,
                        help="folder of the Fashion-MNIST IDX files")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    args = parser.parse_args(argv)

    architecture, defaults = SETTINGS[args.dataset]
    epochs = args.epochs or defaults["epochs"]
    batch_size = args.batch_size or defaults["batch_size"]
    learning_rate = args.learning_rate or defaults["learning_rate"]
    try:
        X_train, X_test, y_train, y_test = load(args.dataset, args.data_dir, args.seed)
    except FileNotFoundError as error:
        print(error, file=sys.stderr)
        return 1
    n_threads = effective_n_threads(args.threads)
    # the stated epochs, all of them on all the training images: neither
    # stopping rule nor validation split
    clf = CNNClassifier(**architecture, solver=args.solver, max_iter=epochs,
                        n_iter_no_change=epochs, early_stopping=False,
                        batch_size=batch_size, learning_rate_init=learning_rate,
                        random_state=args.seed, n_threads=n_threads,
                        verbose=0 if args.quiet else 1)
    print(f"fastcnn: {args.dataset}, {len(X_train)} training and {len(X_test)} "
          f"test images of {X_train.shape[2]}x{X_train.shape[3]}; "
          f"{n_threads} thread(s), {gemm_kernel_name()} matrix kernel")
    print(f"training {epochs} epochs, batch {batch_size}, {args.solver} "
          f"learning rate {learning_rate}")
    start = time.perf_counter()
    with warnings.catch_warnings():
        # a fixed number of epochs is the point here, not convergence
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X_train, y_train)
    fit_seconds = time.perf_counter() - start
    accuracy = clf.score(X_test, y_test)
    print(f"test accuracy: {accuracy:.4f}")
    print(f"fit time: {fit_seconds:.2f} s "
          f"({clf.n_iter_ * len(X_train) / fit_seconds:,.0f} images/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
