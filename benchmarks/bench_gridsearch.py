"""GridSearchCV wall time with n_jobs=1 and n_jobs=2 on the same grid.

    python benchmarks/bench_gridsearch.py [--repeats 3]

With n_jobs=2 joblib's workers each get OMP_NUM_THREADS = cores // 2, which
fastcnn's n_threads=None follows, so the two workers share the cores
instead of each starting a thread per core. The grid: digits (8x8), filters
x learning rate (4 candidates) x 3 folds = 12 fits of 10 epochs, plus the
refit. Prints the median wall time of each setting and whether the best
parameters and scores agree (they must: training is deterministic).
"""
import argparse
import statistics
import time
import warnings

import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV

from fastcnn import CNNClassifier, effective_n_threads


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    warnings.simplefilter("ignore", ConvergenceWarning)
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    grid = {"filters": [(16,), (16, 32)], "learning_rate_init": [0.003, 0.01]}
    base = CNNClassifier(input_shape=(1, 8, 8), hidden_layer_sizes=(), max_iter=10,
                         batch_size=32, random_state=0)
    print(f"{effective_n_threads()} kernel threads by default; 4 candidates x 3 folds")
    results = {}
    for _ in range(args.repeats):
        for n_jobs in (1, 2):
            search = GridSearchCV(base, grid, cv=3, n_jobs=n_jobs)
            start = time.perf_counter()
            search.fit(X, y)
            results.setdefault(n_jobs, []).append(
                (time.perf_counter() - start, search.best_params_,
                 tuple(search.cv_results_["mean_test_score"])))
    for n_jobs, runs in results.items():
        print(f"n_jobs={n_jobs}: {statistics.median(r[0] for r in runs):.2f} s "
              f"(median of {len(runs)}); best {runs[0][1]}")
    same = results[1][0][1:] == results[2][0][1:]
    print(f"best parameters and mean test scores identical: {same}")
    ratio = (statistics.median(r[0] for r in results[2])
             / statistics.median(r[0] for r in results[1]))
    print(f"wall time n_jobs=2 / n_jobs=1: {ratio:.2f}")


if __name__ == "__main__":
    main()
