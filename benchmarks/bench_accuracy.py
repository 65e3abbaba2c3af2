"""Test accuracy of CNNClassifier on the issue's four problems.

    python benchmarks/bench_accuracy.py [--only digits,lenet5,fourconv,mnist1d,vgg-bn,fcn1d,resnet1d]
                                        [--threads N] [--repeats R] [--torch]

Each problem is trained with random_state 0, 1 and 2 (--seeds) and the
median test accuracy is compared with the target: one seed's accuracy after
a fixed number of epochs varies by about 1%.
digits: the main job's CNN (conv 16 - pool - conv 32 - pool - dense 10),
25% held out; fit time is the median of --repeats fits per seed.
lenet5: LeNet-5 on Fashion-MNIST, 5 epochs, batch 64, Adam 0.001.
Every problem trains its stated epochs on all its training data (no
validation split, no stopping rule). fourconv: the four-conv net on Fashion-MNIST, 10 epochs,
batch 128, Adam 0.001, alpha 0.05. mnist1d: the MNIST-1D paper's CNN on 4000/1000 locally generated
signals, 150 epochs, Adam 0.01, alpha 0.01. vgg-bn: a VGG-style net with
batch norm and dropout on Fashion-MNIST, 15 epochs, batch 128, Adam 0.001
(target 0.93); fcn1d and resnet1d: the time-series FCN (batch 16) and a
small 1-D ResNet on MNIST-1D, 100 epochs, Adam 0.001, compared with their
PyTorch twins (--torch): at least as accurate, within 0.5 points.
--last-epochs K also reports, for each seed, the test accuracy after each
of the last K epochs (fastcnn trained by partial_fit an epoch at a time, so
that it can be scored between epochs): late in a long run with Adam the
accuracy moves from epoch to epoch, and one epoch's figure is a draw from
that spread. Fashion-MNIST comes from Debian's dataset-fashion-mnist package;
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
    "lenet5": (load_fashion, dict(max_iter=5, batch_size=64, learning_rate_init=0.001),
               0.89),
    # without an L2 penalty it overfits by epoch 10 (training loss 0.05);
    # alpha 0.05 holds it back. The learning rate is the problem's, not the
    # constructor's default (which is tuned for fast fits of small data).
    "fourconv": (load_fashion, dict(max_iter=10, batch_size=128, learning_rate_init=0.001,
                                    alpha=0.05), 0.92),
    # 150 epochs = 6000 steps of 100, the paper's budget; run them all
    "mnist1d": (load_mnist1d,
                dict(max_iter=150, batch_size=100, learning_rate_init=0.01,
                     alpha=0.01, n_iter_no_change=150), 0.94),
    # the networks of issue 18, each beside its PyTorch twin with --torch
    # (Adam, no L2 penalty in either, the same epochs and batches)
    "vgg-bn": (load_fashion, dict(max_iter=15, batch_size=128,
                                  learning_rate_init=0.001, alpha=0.0), 0.93),
    "fcn1d": (load_mnist1d, dict(max_iter=100, batch_size=16,
                                 learning_rate_init=0.001, alpha=0.0), None),
    "resnet1d": (load_mnist1d, dict(max_iter=100, batch_size=100,
                                    learning_rate_init=0.001, alpha=0.0), None),
}


def run(name, n_threads, seeds, repeats, verbose):
    loader, settings, target = PROBLEMS[name]
    try:
        X_train, X_test, y_train, y_test = loader()
    except (FileNotFoundError, ImportError) as error:
        print(f"{name}: skipped ({str(error).splitlines()[0]})")
        return None
    accuracies, times = [], []
    for seed in seeds:
        for _ in range(repeats):
            # fixed epochs on all the training data, whatever the defaults'
            # stopping rule
            clf = CNNClassifier(layers=NETWORKS[name], random_state=seed,
                                n_threads=n_threads, verbose=verbose,
                                early_stopping=False,
                                **{"n_iter_no_change": settings["max_iter"], **settings})
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                clf.fit(X_train, y_train)
            times.append(time.perf_counter() - start)
        accuracies.append(clf.score(X_test, y_test))   # the same every repeat
    accuracy = statistics.median(accuracies)
    verdict = ("no target" if target is None else
               f"{'meets' if accuracy >= target else 'MISSES'} {target}")
    print(f"{name:9s} test accuracy {accuracy:.4f} (median over random_state "
          f"{seeds}: {', '.join(f'{a:.4f}' for a in accuracies)}; {verdict}); "
          f"fit {statistics.median(times):.2f} s (median of {len(times)}), "
          f"{clf.n_iter_} epochs, {n_threads} threads")
    return accuracy


def _late_summary(library, name, seed, accuracies):
    """One line on the test accuracies after the last epochs of a seed."""
    low = sum(a < 0.98 for a in accuracies) / len(accuracies)
    print(f"{name:9s} {library} seed {seed}, last {len(accuracies)} epochs: "
          f"median {statistics.median(accuracies):.4f}, min {min(accuracies):.4f}, "
          f"max {max(accuracies):.4f}, share below 0.98 {low:.2f}", flush=True)


def run_last_epochs(name, n_threads, seeds, last):
    """fastcnn's test accuracy after each of the last ``last`` epochs."""
    loader, settings, _ = PROBLEMS[name]
    X_train, X_test, y_train, y_test = loader()
    pooled = []
    for seed in seeds:
        clf = CNNClassifier(layers=NETWORKS[name], random_state=seed,
                            n_threads=n_threads, early_stopping=False,
                            **{**settings, "max_iter": 1})
        classes = sorted(set(y_train))
        accuracies = []
        for epoch in range(settings["max_iter"]):
            clf.partial_fit(X_train, y_train, classes=classes)
            if epoch >= settings["max_iter"] - last:
                accuracies.append(clf.score(X_test, y_test))
        _late_summary("fastcnn", name, seed, accuracies)
        pooled += accuracies
    _late_summary("fastcnn", name, "all", pooled)


def run_torch(name, n_threads, seeds, last=0):
    """PyTorch's twin of the problem's network (bench_training.torch_model),
    trained as fastcnn is: Adam at the same learning rate, the same epochs
    and batch size, shuffled each epoch; the median test accuracy over the
    seeds (torch.manual_seed; the twin starts from fastcnn's initial weights
    for that seed's network)."""
    import torch
    from bench_training import torch_model
    loader, settings, _ = PROBLEMS[name]
    X_train, X_test, y_train, y_test = loader()
    torch.set_num_threads(n_threads)
    X, y = torch.from_numpy(X_train), torch.from_numpy(y_train.astype("int64"))
    def test_accuracy(model):
        model.eval()
        with torch.no_grad():
            predicted = model(torch.from_numpy(X_test)).argmax(1).numpy()
        return float((predicted == y_test).mean())

    accuracies, pooled = [], []
    for seed in seeds:
        torch.manual_seed(seed)
        model = torch_model(NETWORKS[name], X_train.shape[1:], seed=seed)
        optimizer = torch.optim.Adam(model.parameters(), lr=settings["learning_rate_init"])
        batch = settings["batch_size"]
        late = []
        for epoch in range(settings["max_iter"]):
            model.train()
            order = torch.randperm(len(X))
            for start in range(0, len(X), batch):
                index = order[start:start + batch]
                optimizer.zero_grad(set_to_none=True)
                loss = torch.nn.functional.cross_entropy(model(X[index]), y[index])
                loss.backward()
                optimizer.step()
            if epoch >= settings["max_iter"] - last:
                late.append(test_accuracy(model))
        accuracies.append(test_accuracy(model))
        if last:
            _late_summary("PyTorch", name, seed, late)
            pooled += late
    if last:
        _late_summary("PyTorch", name, "all", pooled)
    accuracy = statistics.median(accuracies)
    print(f"{name:9s} PyTorch test accuracy {accuracy:.4f} (median over seeds "
          f"{seeds}: {', '.join(f'{a:.4f}' for a in accuracies)}), {n_threads} threads")
    return accuracy


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(PROBLEMS))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3,
                        help="fits per seed for the median time (digits only; "
                        "the others fit once per seed)")
    parser.add_argument("--seeds", default="0,1,2",
                        help="random_state values; the accuracy reported is "
                        "their median (fourconv uses the first only unless "
                        "--all-seeds: 10 epochs take minutes)")
    parser.add_argument("--all-seeds", action="store_true")
    parser.add_argument("--verbose", type=int, default=0)
    parser.add_argument("--torch", action="store_true",
                        help="also train each problem's PyTorch twin, side by side")
    parser.add_argument("--last-epochs", type=int, default=0, metavar="K",
                        help="also the test accuracy after each of the last K "
                        "epochs of every seed (fastcnn through partial_fit)")
    args = parser.parse_args()
    n_threads = effective_n_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    for name in args.only.split(","):
        repeats = args.repeats if name == "digits" else 1
        use = seeds if (name != "fourconv" or args.all_seeds) else seeds[:1]
        if run(name, n_threads, use, repeats, args.verbose) is None:
            continue
        if args.last_epochs:
            run_last_epochs(name, n_threads, use, args.last_epochs)
        if args.torch:
            run_torch(name, n_threads, use, args.last_epochs)


if __name__ == "__main__":
    main()
