"""Prediction latency of a fitted LeNet-5 on one flat 784-value row and on
16 rows, as a scikit-learn user serving predictions calls it, against
PyTorch eager and scikit-learn's MLPClassifier.

    python benchmarks/bench_predict.py [--calls 2000] [--threads 2] [--no-torch]

- fastcnn: ``clf.predict(rows)`` and ``clf.predict_proba(rows)``, the
  estimator fitted with ``input_shape=(1, 28, 28)`` on flat rows, so each
  call validates its input as any user's would.
- PyTorch: the same layers (bench_training.torch_model), ``model(x)
  .argmax(1)`` and ``softmax(model(x), 1)`` under ``no_grad`` in eval
  mode, x made from the NumPy rows by ``torch.from_numpy(...).view(-1, 1,
  28, 28)`` inside the timed call.
- MLPClassifier((120, 84)): ``predict`` and ``predict_proba``.

Weights come from one epoch on random data: latency does not depend on
them. Each figure is the median over ``--calls`` calls (after 50 warm-up
calls), the libraries interleaved in blocks of 100 calls so that noise hits
them alike. fastcnn and PyTorch run at ``--threads`` threads.
"""
import argparse
import os
import statistics
import sys
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _common import NETWORKS  # noqa: E402
from bench_training import torch_model  # noqa: E402

from fastcnn import CNNClassifier  # noqa: E402

BLOCK = 100


def fastcnn_calls(X, y, n_threads):
    clf = CNNClassifier(layers=NETWORKS["lenet5"], input_shape=(1, 28, 28),
                        max_iter=1, random_state=0, n_threads=n_threads).fit(X, y)
    calls = {}
    for rows in (1, 16):
        batch = X[:rows]
        calls[f"fastcnn predict, {rows} row(s)"] = lambda b=batch: clf.predict(b)
        calls[f"fastcnn predict_proba, {rows} row(s)"] = lambda b=batch: clf.predict_proba(b)
    return calls


def torch_calls(X, n_threads):
    """PyTorch's calls, or none when it is not installed."""
    try:
        import torch
    except ImportError:
        return {}
    torch.set_num_threads(n_threads)
    model = torch_model(NETWORKS["lenet5"], (1, 28, 28)).eval()

    def call(rows, proba):
        with torch.no_grad():
            scores = model(torch.from_numpy(rows).view(-1, 1, 28, 28))
            return torch.softmax(scores, 1) if proba else scores.argmax(1)
    calls = {}
    for rows in (1, 16):
        calls[f"torch argmax, {rows} row(s)"] = lambda b=X[:rows]: call(b, False)
        calls[f"torch softmax, {rows} row(s)"] = lambda b=X[:rows]: call(b, True)
    return calls


def mlp_calls(X, y):
    from sklearn.neural_network import MLPClassifier
    mlp = MLPClassifier((120, 84), max_iter=1, random_state=0).fit(X, y)
    calls = {}
    for rows in (1, 16):
        calls[f"MLPClassifier predict, {rows} row(s)"] = lambda b=X[:rows]: mlp.predict(b)
        calls[f"MLPClassifier predict_proba, {rows} row(s)"] = (
            lambda b=X[:rows]: mlp.predict_proba(b))
    return calls


def median_microseconds(calls, n_calls):
    """Median of n_calls timed calls each, after 50 warm-up calls, the
    calls interleaved in blocks of BLOCK, their order reversed every other
    block."""
    times = {name: [] for name in calls}
    for call in calls.values():
        for _ in range(50):
            call()
    clock = time.perf_counter
    for block in range(-(-n_calls // BLOCK)):
        names = list(calls) if block % 2 == 0 else list(calls)[::-1]
        for name in names:
            call, bucket = calls[name], times[name]
            for _ in range(BLOCK):
                start = clock()
                call()
                bucket.append(clock() - start)
    return {name: statistics.median(v) * 1e6 for name, v in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    rng = np.random.default_rng(0)
    X = rng.random((512, 784), dtype=np.float32)
    y = rng.integers(0, 10, len(X))
    calls = fastcnn_calls(X, y, args.threads)
    if not args.no_torch:
        calls.update(torch_calls(X, args.threads))
    calls.update(mlp_calls(X, y))
    medians = median_microseconds(calls, args.calls)
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}  python {' '.join(sys.argv)}")
    print(f"# LeNet-5, medians of {args.calls} calls, {args.threads} thread(s) "
          f"(fastcnn and torch)")
    for name, us in medians.items():
        print(f"{name:>36}  {us:8.1f} us")
    print()
    for rows in (1, 16):
        for ours, theirs in (("predict", "argmax"), ("predict_proba", "softmax")):
            torch_name = f"torch {theirs}, {rows} row(s)"
            if torch_name in medians:
                ratio = medians[torch_name] / medians[f"fastcnn {ours}, {rows} row(s)"]
                print(f"torch {theirs} / fastcnn {ours}, {rows} row(s): {ratio:.2f}x")


if __name__ == "__main__":
    main()
