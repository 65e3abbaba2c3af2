"""Test accuracy of CNNClassifier on the issue's four problems.

    python benchmarks/bench_accuracy.py [--only digits,lenet5,fourconv,mnist1d]
                                        [--threads N] [--repeats R]

digits: the main job's CNN (conv 16 - pool - conv 32 - pool - dense 10),
25% held out, random_state 0; fit time is the median of --repeats fits.
lenet5: LeNet-5 on Fashion-MNIST, 5 epochs, batch 64, default solver (Adam)
and learning rate. fourconv: the four-conv net on Fashion-MNIST, 10 epochs,
batch 128. mnist1d: the MNIST-1D paper's CNN on 4000/1000 locally generated
signals, 150 epochs, Adam 0.01, alpha 0.01. Fashion-MNIST comes from Debian's dataset-fashion-mnist package;
MNIST-1D needs `pip install mnist1d` (its generator only; nothing is
downloaded). Problems whose data is missing are skipped with a note.
"""
import argparse
import statistics
import time
import warnings

from sklearn.exceptions import ConvergenceWarning

from _common import (NETWORKS, load_digits_split, load_fashion, load_mnist1d)
from fastcnn import CNNClassifier, effective_n_threads

PROBLEMS = {
    # name: (loader, estimator settings, target accuracy)
    "digits": (load_digits_split,
               dict(max_iter=10, batch_size=32, learning_rate_init=0.01), 0.985),
    "lenet5": (load_fashion, dict(max_iter=5, batch_size=64), 0.89),
    "fourconv": (load_fashion, dict(max_iter=10, batch_size=128), 0.92),
    # 150 epochs = 6000 steps of 100, the paper's budget; run them all
    "mnist1d": (load_mnist1d,
                dict(max_iter=150, batch_size=100, learning_rate_init=0.01,
                     alpha=0.01, n_iter_no_change=150), 0.94),
}


def run(name, n_threads, repeats, verbose):
    loader, settings, target = PROBLEMS[name]
    try:
        X_train, X_test, y_train, y_test = loader()
    except (FileNotFoundError, ImportError) as error:
        print(f"{name}: skipped ({str(error).splitlines()[0]})")
        return None
    times, accuracy = [], None
    for _ in range(repeats):
        clf = CNNClassifier(layers=NETWORKS[name], random_state=0,
                            n_threads=n_threads, verbose=verbose, **settings)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(X_train, y_train)
        times.append(time.perf_counter() - start)
        accuracy = clf.score(X_test, y_test)   # the same every repeat
    seconds = statistics.median(times)
    verdict = "meets" if accuracy >= target else "MISSES"
    print(f"{name:9s} test accuracy {accuracy:.4f} ({verdict} {target}); "
          f"fit {seconds:.2f} s (median of {repeats}), {clf.n_iter_} epochs, "
          f"{n_threads} threads")
    return accuracy, seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(PROBLEMS))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3,
                        help="fits per problem for the median time (digits; "
                        "the others default to 1)")
    parser.add_argument("--verbose", type=int, default=0)
    args = parser.parse_args()
    n_threads = effective_n_threads(args.threads)
    for name in args.only.split(","):
        repeats = args.repeats if name == "digits" else 1
        run(name, n_threads, repeats, args.verbose)


if __name__ == "__main__":
    main()
