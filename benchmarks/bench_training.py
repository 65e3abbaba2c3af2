"""Whole-network training and inference speed, fastcnn against PyTorch's CPU
build, side by side in one run.

    python benchmarks/bench_training.py [--only lenet5-64,lenet5-256,fourconv,mnist1d,digits,vgg-cifar,resnet1d,fcn1d,vgg-bn]
                                        [--threads 1,2] [--repeats 5] [--no-torch]
                                        [--no-memory] [--profile]

For each network the same layers are built in both libraries (the PyTorch
model is generated from fastcnn's layer specifications), in float32, with the
same batch size and optimizer (Adam, learning rate 1e-3, no weight decay),
trained on the same in-memory data. Training speed is images per second over
a fixed number of batches, shuffling and batch gathering included: fastcnn
through ``CNNClassifier.partial_fit`` (one epoch per call, after a warm-up
call), PyTorch through the usual loop (randperm, index_select, forward,
cross_entropy, backward, Adam step). Inference is images per second in
batches of 1000 (``predict_proba`` / ``model(x)`` under ``no_grad``). Each
figure is the median of ``--repeats`` runs, with the thread counts and the
two libraries interleaved within each repeat; below the table, each
library's training speedup from the fewest to the most threads.
Below that, each network's arithmetic: floating-point operations per
training step (2 per multiply-add of the convolutions and dense layers:
forward, kernel gradient, and input gradient except the first layer's;
pooling, activations, loss and optimizer not counted; the count of the
direct correlation also for fastcnn's layers that run as Winograd's
F(4x4, 3x3), which does fewer multiplications, so that the share below is
an effective one there: the direct correlation's work over the time
taken), and each library's training GFLOP/s as a share of the machine's
float32 peak, measured before and after the runs at each thread count by a
loop of independent AVX-512 FMAs (16 chains, compiled with the system's cc;
fma_peak_gflops in _common.py); the shares use the higher of the two.
Peak memory is the maximum RSS (VmHWM) of a separate process that loads
Fashion-MNIST and fits LeNet-5 (batch 64) for one epoch over all of it, one
process per library, each importing only its own library and numpy.

``--profile`` prints where fastcnn's training time goes: forward and backward
milliseconds per layer, the loss, the optimizer step, and the shuffling and
batch copies, per batch, at each thread count of ``--threads``.

Fashion-MNIST comes from Debian's dataset-fashion-mnist package, MNIST-1D
(for mnist1d and resnet1d, a small ResNet of three residual blocks) from the
mnist1d package's local generator, the VGG-style net's 3 x 32 x 32
images from a seeded generator (load_synthetic_cifar: ten smooth class
patterns plus noise, 2560 training images); a network whose data is missing
is skipped. PyTorch is optional (``pip install torch==2.13.0``).
"""
import argparse
import os
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def _rss_child_if_asked():
    """``--rss-child LIBRARY``: fit LeNet-5 (batch 64) for one epoch on all
    of Fashion-MNIST and print this process's peak RSS in MiB. Runs before
    anything else is imported, so that each process holds only its own
    library, numpy and the data (read with fastcnn's IDX reader loaded as a
    lone file, which imports nothing but numpy)."""
    if "--rss-child" not in sys.argv:
        return
    import importlib.util
    library = sys.argv[sys.argv.index("--rss-child") + 1]
    spec = importlib.util.spec_from_file_location(
        "idx_reader", os.path.join(HERE, "..", "fastcnn", "datasets.py"))
    reader = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reader)
    images, labels, _, _ = reader.load_fashion_mnist()
    X = images[:, np.newaxis] * np.float32(1 / 255)
    del images
    y = labels.astype(np.int64)
    if library == "torch":
        import torch
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Conv2d(1, 6, 5, padding=2), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(6, 16, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Flatten(), torch.nn.Linear(400, 120), torch.nn.ReLU(),
            torch.nn.Linear(120, 84), torch.nn.ReLU(), torch.nn.Linear(84, 10))
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        X, y = torch.from_numpy(X), torch.from_numpy(y)
        order = torch.randperm(len(X))
        for start in range(0, len(X), 64):
            index = order[start:start + 64]
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(X[index]), y[index])
            loss.backward()
            optimizer.step()
    else:
        sys.path.insert(0, os.path.join(HERE, ".."))
        from fastcnn import CNNClassifier
        from fastcnn.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
        lenet5 = [Conv2D(6, 5, padding=2), ReLU(), MaxPool2D(2),
                  Conv2D(16, 5), ReLU(), MaxPool2D(2),
                  Flatten(), Dense(120), ReLU(), Dense(84), ReLU()]
        import warnings
        warnings.simplefilter("ignore")   # max_iter=1: no convergence
        # all of X, as PyTorch's twin, without a validation split's copy
        CNNClassifier(layers=lenet5, batch_size=64, max_iter=1, alpha=0.0,
                      early_stopping=False, random_state=0).fit(X, y)
    with open("/proc/self/status") as status:
        # VmHWM, not getrusage's ru_maxrss: a child started by fork + exec
        # inherits its parent's maximum there
        peak = next(int(line.split()[1]) for line in status
                    if line.startswith("VmHWM:"))
    print(peak / 1024)
    sys.exit(0)


_rss_child_if_asked()
sys.path.insert(0, HERE)
# the PyTorch twins are the tests' (tests/_helpers/torch_twin.py)
sys.path.insert(1, os.path.join(HERE, os.pardir, "tests"))
from _common import (NETWORKS, fma_peak_gflops, load_digits_split,  # noqa: E402
                     load_fashion, load_mnist1d, load_synthetic_cifar,
                     training_flops)

from fastcnn import CNNClassifier, profile_training  # noqa: E402
from fastcnn import layers as L  # noqa: E402
from fastcnn._network import Network  # noqa: E402

# name: (network, batch size, loader, images per timed training run)
BENCHMARKS = {
    "lenet5-64": ("lenet5", 64, load_fashion, 64 * 150),
    "lenet5-256": ("lenet5", 256, load_fashion, 256 * 40),
    "fourconv": ("fourconv", 128, load_fashion, 128 * 12),
    "mnist1d": ("mnist1d", 100, load_mnist1d, 4000),
    "digits": ("digits", 64, load_digits_split, 1347),
    "vgg-cifar": ("vgg-cifar", 128, load_synthetic_cifar, 128 * 8),
    "resnet1d": ("resnet1d", 100, load_mnist1d, 4000),
    "fcn1d": ("fcn1d", 16, load_mnist1d, 16 * 100),
    "vgg-bn": ("vgg-bn", 128, load_fashion, 128 * 8),
}
N_CLASSES = 10
INFERENCE_BATCH = 1000


# ----------------------------------------------------------------- PyTorch

def torch_model(specs, input_shape, seed=0):
    """The PyTorch twin of fastcnn's specs (+ the output Dense(10)), in
    float32, with the initial weights fastcnn draws from ``seed``: the
    tests' twin builder (tests/_helpers/torch_twin.py), one module per
    fastcnn layer."""
    from _helpers.torch_twin import torch_twin
    network = Network(list(specs) + [L.Dense(N_CLASSES)], input_shape, np.float64)
    network.initialize(np.random.RandomState(seed))
    return torch_twin(network)[0].float()


class TorchRun:
    def __init__(self, specs, X, y, batch_size):
        import torch
        torch.manual_seed(0)
        self.torch = torch
        self.model = torch_model(specs, X.shape[1:])
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.X, self.y = torch.from_numpy(X), torch.from_numpy(y.astype(np.int64))
        self.batch_size = batch_size

    def train(self, n_images, n_threads):
        torch = self.torch
        torch.set_num_threads(n_threads)
        self.model.train()
        order = torch.randperm(len(self.X))
        loss_fn = torch.nn.functional.cross_entropy
        for start in range(0, n_images, self.batch_size):
            index = order[start:start + self.batch_size]
            xb, yb = self.X.index_select(0, index), self.y.index_select(0, index)
            self.optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(self.model(xb), yb)
            loss.backward()
            self.optimizer.step()

    def infer(self, X, n_threads):
        torch = self.torch
        torch.set_num_threads(n_threads)
        self.model.eval()
        X = torch.from_numpy(X)
        with torch.no_grad():
            for start in range(0, len(X), INFERENCE_BATCH):
                self.model(X[start:start + INFERENCE_BATCH])


# ----------------------------------------------------------------- fastcnn

class FastcnnRun:
    def __init__(self, specs, X, y, batch_size):
        self.clf = CNNClassifier(layers=specs, batch_size=batch_size, alpha=0.0,
                                 learning_rate_init=1e-3, random_state=0)
        self.X, self.y = X, y
        self.clf.partial_fit(X[:batch_size], y[:batch_size], classes=np.arange(N_CLASSES))

    def train(self, n_images, n_threads):
        self.clf.set_params(n_threads=n_threads)
        self.clf.partial_fit(self.X[:n_images], self.y[:n_images])

    def infer(self, X, n_threads):
        self.clf.set_params(n_threads=n_threads)
        for start in range(0, len(X), INFERENCE_BATCH):
            self.clf.predict_proba(X[start:start + INFERENCE_BATCH])


# ------------------------------------------------------------- measuring

def rate(run, n_images, repeats):
    """Median images per second of ``run()`` over ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return n_images / statistics.median(times)


def peak_rss_mib(library):
    """Peak RSS of a fresh process fitting LeNet-5 for one full epoch."""
    result = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--rss-child", library],
        capture_output=True, text=True, env=dict(os.environ))
    if result.returncode != 0:
        return float("nan")
    return float(result.stdout.strip().splitlines()[-1])


def profile(name, n_threads):
    """Per-batch milliseconds of each part of fastcnn's training step."""
    network, batch_size, loader, n_images = BENCHMARKS[name]
    X, _, y, _ = loader()
    run = FastcnnRun(NETWORKS[network], X, y, batch_size)
    run.train(n_images, n_threads)                # warm up
    with profile_training() as timed:
        run.train(n_images, n_threads)
    timings, n_batches = timed.seconds, timed.steps
    total = sum(timings.values())
    print(f"\nprofile {name}, {n_threads} thread{'s' * (n_threads > 1)}: "
          f"{1e3 * total / n_batches:.3f} ms per batch of {batch_size}")
    for key, seconds in sorted(timings.items(), key=lambda kv: str(kv[0])):
        label = " ".join(str(k) for k in key) if isinstance(key, tuple) else key
        print(f"  {label:32s} {1e3 * seconds / n_batches:8.3f} ms "
              f"{100 * seconds / total:5.1f}%")


# --------------------------------------------------------- the benchmark

@dataclass
class NetworkResult:
    """One network's figures: median images per second of training and of
    inference, by (library, n_threads), and the floating-point operations of
    one training step."""
    name: str
    network: str
    batch_size: int
    libraries: list
    train: dict
    infer: dict
    step_flops: int


def parse_arguments():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(BENCHMARKS))
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--profile", action="store_true")
    return parser.parse_args()


def torch_available():
    """Whether PyTorch imports; prints its version, or that it is missing."""
    try:
        import torch
    except ImportError:
        print("PyTorch not installed: fastcnn figures only")
        return False
    print(f"PyTorch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()})")
    return True


def measure_peaks(threads, when, before=None):
    """The float32 peak GFLOP/s at each thread count (None where not
    measured), printed; with ``before`` (the peaks measured at the start),
    the higher of the two at each count. A peak measured while something
    else held a core comes out low (once, 2 threads as 1), and the shares
    would then pass 100%."""
    peak = {t: fma_peak_gflops(t) for t in threads}
    print(f"float32 peak (AVX-512 FMA loop) {when}: " + (", ".join(
        f"{t} thread{'s' * (t > 1)} {peak[t]:.0f} GFLOP/s" for t in threads)
        if None not in peak.values() else "not measured (no cc or no AVX-512)"))
    if before is None or None in peak.values() or None in before.values():
        return peak
    return {t: max(peak[t], before[t]) for t in threads}


def print_table_header(threads, repeats):
    print(f"threads {threads}, medians of {repeats}; ratio = fastcnn / PyTorch")
    header = "| network | batch | threads | train img/s fastcnn | PyTorch | ratio | infer img/s fastcnn | PyTorch | ratio |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))


def library_runs(specs, X, y, batch_size, has_torch):
    """Each library's run of the network, fastcnn first."""
    runs = {"fastcnn": FastcnnRun(specs, X, y, batch_size)}
    if has_torch:
        runs["torch"] = TorchRun(specs, X, y, batch_size)
    return runs


def median_rates(runs, threads, n_images, X_infer, repeats):
    """Median training and inference images per second, by (library,
    n_threads)."""
    # Repeats outermost, then thread counts, then libraries: every figure
    # is a median over the same stretch of time, so a slow spell on this
    # shared machine does not land on one thread count or one library.
    train, infer = {}, {}
    for _ in range(repeats):
        for n_threads in threads:
            for library, run in runs.items():
                train.setdefault((library, n_threads), []).append(
                    rate(lambda: run.train(n_images, n_threads), n_images, 1))
                infer.setdefault((library, n_threads), []).append(
                    rate(lambda: run.infer(X_infer, n_threads), len(X_infer), 1))
    train = {key: statistics.median(values) for key, values in train.items()}
    infer = {key: statistics.median(values) for key, values in infer.items()}
    return train, infer


def benchmark(name, threads, repeats, has_torch):
    """Times one network in each library; None, after a 'skipped' row,
    when its data is missing."""
    network, batch_size, loader, n_images = BENCHMARKS[name]
    try:
        X_train, X_test, y_train, _ = loader()
    except (FileNotFoundError, ImportError) as error:
        print(f"| {name} | skipped: {str(error).splitlines()[0]} |")
        return None
    n_images = min(n_images, len(X_train))
    X_infer = np.ascontiguousarray(X_test[:max(INFERENCE_BATCH, min(len(X_test), 5000))])
    runs = library_runs(NETWORKS[network], X_train, y_train, batch_size, has_torch)
    for n_threads in threads:
        for run in runs.values():              # warm up both
            run.train(min(n_images, 4 * batch_size), n_threads)
    train, infer = median_rates(runs, threads, n_images, X_infer, repeats)
    step_flops = batch_size * training_flops(runs["fastcnn"].clf.network_)
    return NetworkResult(name, network, batch_size, list(runs), train, infer, step_flops)


# ------------------------------------------------------------- reporting

def print_rows(result, threads):
    """The network's table rows, one per thread count."""
    network, batch_size = result.network, result.batch_size
    train, infer = result.train, result.infer
    for n_threads in threads:
        f_train, f_infer = train["fastcnn", n_threads], infer["fastcnn", n_threads]
        if "torch" in result.libraries:
            t_train, t_infer = train["torch", n_threads], infer["torch", n_threads]
            print(f"| {network} | {batch_size} | {n_threads} | {f_train:,.0f} | {t_train:,.0f} | "
                  f"{f_train / t_train:.2f}x | {f_infer:,.0f} | {t_infer:,.0f} | {f_infer / t_infer:.2f}x |")
        else:
            print(f"| {network} | {batch_size} | {n_threads} | {f_train:,.0f} | | | {f_infer:,.0f} | | |")


def arithmetic_line(result, threads, peak):
    """GFLOP per training step, and each library's GFLOP/s at each thread
    count as a share of the peak."""
    shares = []
    for n_threads in threads:
        for library in result.libraries:
            gflops = result.step_flops / result.batch_size * result.train[library, n_threads] / 1e9
            share = (f" = {100 * gflops / peak[n_threads]:.0f}% of peak"
                     if peak[n_threads] else "")
            shares.append(f"{library} {n_threads}t {gflops:.0f} GFLOP/s{share}")
    return (f"{result.name}: {result.step_flops / 1e9:.3f} GFLOP per training step "
            f"of {result.batch_size}; " + ", ".join(shares))


def scaling_line(result, threads):
    """Each library's training speedup from the fewest to the most threads."""
    low, high = min(threads), max(threads)
    speedups = ", ".join(
        f"{library} {result.train[library, high] / result.train[library, low]:.2f}"
        for library in result.libraries)
    return f"{result.name}: training {high} threads / {low}: {speedups}"


def print_summary(arithmetic, scaling, memory):
    """The lines below the table: arithmetic, scaling, peak memory."""
    if arithmetic:
        print()
        print("\n".join(arithmetic))
    if scaling:
        print()
        print("\n".join(scaling))
    for name, mine, theirs in memory:
        print(f"\npeak RSS of a one-epoch fit on all the data ({name}): fastcnn "
              f"{mine:.1f} MiB, PyTorch {theirs:.1f} MiB, ratio {mine / theirs:.3f}")


def main():
    args = parse_arguments()
    warnings.simplefilter("ignore")
    has_torch = not args.no_torch and torch_available()
    threads = [int(t) for t in args.threads.split(",")]
    peak = measure_peaks(threads, "before the runs")
    print_table_header(threads, args.repeats)
    memory, scaling, results = [], [], []
    for name in args.only.split(","):
        result = benchmark(name, threads, args.repeats, has_torch)
        if result is None:
            continue
        print_rows(result, threads)
        results.append(result)
        if len(threads) > 1:
            scaling.append(scaling_line(result, threads))
        if not args.no_memory and name == "lenet5-64":
            memory.append((name, peak_rss_mib("fastcnn"),
                           peak_rss_mib("torch") if has_torch else float("nan")))
    print()
    peak = measure_peaks(threads, "after the runs", before=peak)
    arithmetic = [arithmetic_line(result, threads, peak) for result in results]
    print_summary(arithmetic, scaling, memory)
    if args.profile:
        for name in args.only.split(","):
            for n_threads in threads:
                profile(name, n_threads)


if __name__ == "__main__":
    main()
