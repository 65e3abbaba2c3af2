"""Accuracy and fit time of CNNClassifier's default constructor, old and new.

    python benchmarks/bench_defaults.py [--only digits,tabular,series,fashion]
                                        [--splits 10] [--threads N]
                                        [--old-fashion-epochs 5]

What a user who keeps the defaults gets: ``CNNClassifier(random_state=s)``
(``input_shape`` given where X is flat) against the same data with the
previous defaults set explicitly (``OLD_DEFAULTS``).

- digits: scikit-learn's 8x8 digits scaled to [0, 1], ``--splits`` stratified
  random splits with 75% for training (split s also seeds the estimator);
  the mean and lowest test accuracy, the median fit time and epochs.
- tabular: ``make_classification`` (1000 samples, 20 features, 5 of them
  informative, 3 classes), standardized, read as a one-channel signal of 20
  values (flat X without input_shape); 75% train, --splits splits.
- series: 400 synthetic one-channel series of 128 samples, four waveforms
  (sine, square, sawtooth, triangle) of random frequency, phase and noise;
  75% train, --splits splits.
- fashion: Fashion-MNIST, 60000 training and 10000 test images, one fit
  (random_state 0). The old defaults train 200 epochs at most with a
  stopping rule that the training loss, still falling, does not meet for
  dozens of epochs: they are run for ``--old-fashion-epochs`` epochs only
  (0 skips them), and the line says so. Needs Debian's
  dataset-fashion-mnist package; skipped with a note when absent.

Fit times are wall-clock seconds of ``fit`` alone at ``--threads`` (default:
the estimator's default thread count).
"""
import argparse
import statistics
import time
import warnings

import numpy as np
from sklearn.datasets import load_digits, make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from _common import load_fashion
from fastcnn import CNNClassifier, effective_n_threads

# The constructor's defaults before issue 16 (batch_size 'auto' was
# min(200, n_samples): 200 on every data set here).
OLD_DEFAULTS = dict(filters=(32, 64), hidden_layer_sizes=(128,),
                    learning_rate_init=0.001, batch_size=200, max_iter=200,
                    tol=1e-4, n_iter_no_change=10, early_stopping=False)


def digits_split(seed):
    X, y = load_digits(return_X_y=True)
    return train_test_split(X / 16, y, train_size=0.75, stratify=y,
                            random_state=seed)


def tabular_split(seed):
    X, y = make_classification(n_samples=1000, n_features=20, n_informative=5,
                               n_classes=3, random_state=seed)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, train_size=0.75, stratify=y, random_state=seed)
    scaler = StandardScaler().fit(X_train)
    return scaler.transform(X_train), scaler.transform(X_test), y_train, y_test


def series_split(seed, n=400, length=128):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    t = np.arange(length) / length
    cycles = rng.uniform(2, 6, (n, 1)) * t + rng.uniform(0, 1, (n, 1))
    phase = cycles % 1.0
    waves = [np.sin(2 * np.pi * cycles), np.where(phase < 0.5, 1.0, -1.0),
             2 * phase - 1, 4 * np.abs(phase - 0.5) - 1]
    X = np.choose(y[:, None], waves) + rng.normal(0, 0.5, (n, length))
    return train_test_split(X[:, None, :], y, train_size=0.75, stratify=y,
                            random_state=seed)


PROBLEMS = {
    # name: (split loader, constructor arguments both settings need)
    "digits": (digits_split, dict(input_shape=(1, 8, 8))),
    "tabular": (tabular_split, {}),
    "series": (series_split, {}),
}


def fit_once(X_train, X_test, y_train, y_test, settings):
    clf = CNNClassifier(**settings)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        start = time.perf_counter()
        clf.fit(X_train, y_train)
        seconds = time.perf_counter() - start
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return clf.score(X_test, y_test), seconds, clf.n_iter_, converged


def run_splits(name, n_splits, n_threads):
    loader, common = PROBLEMS[name]
    splits = [loader(seed) for seed in range(n_splits)]
    for label, extra in (("old", OLD_DEFAULTS), ("new", {})):
        accuracies, times, epochs = [], [], []
        for seed, split in enumerate(splits):
            accuracy, seconds, n_iter, _ = fit_once(
                *split, dict(common, **extra, random_state=seed, n_threads=n_threads))
            accuracies.append(accuracy)
            times.append(seconds)
            epochs.append(n_iter)
        print(f"{name:8s} {label} defaults: accuracy mean {np.mean(accuracies):.4f} "
              f"min {min(accuracies):.4f}; fit median {statistics.median(times):.3f} s "
              f"(min {min(times):.3f}, max {max(times):.3f}); epochs median "
              f"{statistics.median(epochs):g} ({min(epochs)}-{max(epochs)}); "
              f"{n_splits} splits", flush=True)


def run_fashion(n_threads, old_epochs):
    try:
        data = load_fashion()
    except FileNotFoundError as error:
        print(f"fashion: skipped ({str(error).splitlines()[0]})")
        return
    runs = [("new", {})]
    if old_epochs:
        runs.insert(0, ("old", dict(OLD_DEFAULTS, max_iter=old_epochs)))
    for label, extra in runs:
        accuracy, seconds, n_iter, converged = fit_once(
            *data, dict(extra, random_state=0, n_threads=n_threads))
        note = "stopped by its rule" if converged else (
            f"cut at max_iter={n_iter}, its stopping rule not met"
            if label == "old" else "max_iter reached")
        print(f"fashion  {label} defaults: accuracy {accuracy:.4f}; fit {seconds:.1f} s, "
              f"{n_iter} epochs ({seconds / n_iter:.2f} s each; {note})", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="digits,tabular,series,fashion")
    parser.add_argument("--splits", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--old-fashion-epochs", type=int, default=5)
    args = parser.parse_args()
    # None leaves the estimator's default, as a user who sets nothing gets
    n_threads = args.threads
    print(f"{effective_n_threads(n_threads)} threads")
    for name in args.only.split(","):
        if name == "fashion":
            run_fashion(n_threads, args.old_fashion_epochs)
        else:
            run_splits(name, args.splits, n_threads)


if __name__ == "__main__":
    main()
