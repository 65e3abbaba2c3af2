"""Training speed on a busy machine: fastcnn at its default thread count,
at 1 thread and at a fixed 2 threads, against PyTorch's CPU build, while a
background load this script starts itself runs.

    python benchmarks/bench_load.py [--loads none,busy,mixed]
                                    [--only digits,lenet5-64,fourconv,vgg-bn,fcn1d,resnet1d]
                                    [--repeats 3] [--seconds 1.0] [--no-torch]

Loads (benchmarks/_load.py): ``none``; ``busy``, one busy loop at normal
priority; ``mixed``, three processes, each in a session of its own at nice
19, each streaming through arrays larger than the caches in more threads
than there are cores. With the kernel's autogroup scheduling a process in
another session gets an equal share of the CPU whatever its nice value, so
the mixed load takes most of the machine, as compiler jobs, test runs and
local clusters started from other terminals do.

Each figure is images per second of Adam training steps (batch as in
bench_training.py), run in chunks of 4, 8, 16, ... batches until
``--seconds`` have passed: fastcnn through ``partial_fit`` (the estimator
keeps its thread governor from one call to the next, as in a user's
partial_fit loop), PyTorch through the usual loop. Configurations are
interleaved within each repeat, the order reversed every other repeat;
medians over ``--repeats``; the ratios below the table are the medians of
each repeat's own ratio (the two configurations ran within seconds of each
other, under the same phase of the load). Run it without ``chrt``: the
point is the load.
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
from _common import NETWORKS, load_digits_split, load_fashion, load_mnist1d  # noqa: E402
from _load import BackgroundLoad  # noqa: E402
from bench_training import N_CLASSES, torch_model  # noqa: E402

from fastcnn import CNNClassifier  # noqa: E402

NETS = {"digits": ("digits", 64, load_digits_split),
        "lenet5-64": ("lenet5", 64, load_fashion),
        "fourconv": ("fourconv", 128, load_fashion),
        # the networks of the layer vocabulary (not run unless named)
        "vgg-bn": ("vgg-bn", 128, load_fashion),
        "fcn1d": ("fcn1d", 16, load_mnist1d),
        "resnet1d": ("resnet1d", 100, load_mnist1d)}
DEFAULT_NETS = ("digits", "lenet5-64", "fourconv")


def chunks(batch, seconds, train):
    """Images per second of train(n_images) called on 4, 8, 16, ...
    batches until ``seconds`` have passed."""
    done, elapsed, n_batches = 0, 0.0, 4
    while elapsed < seconds:
        start = time.perf_counter()
        train(n_batches * batch)
        elapsed += time.perf_counter() - start
        done += n_batches * batch
        n_batches *= 2
    return done / elapsed


class Fastcnn:
    def __init__(self, specs, X, y, batch, n_threads):
        self.clf = CNNClassifier(layers=specs, batch_size=batch, alpha=0.0,
                                 random_state=0, n_threads=n_threads)
        self.X, self.y, self.at = X, y, 0
        self.clf.partial_fit(X[:batch], y[:batch], classes=np.arange(N_CLASSES))

    def train(self, n_images):
        # a chunk longer than the data goes in several calls
        while n_images > 0:
            take = min(n_images, len(self.X))
            if self.at + take > len(self.X):
                self.at = 0
            part = slice(self.at, self.at + take)
            self.clf.partial_fit(self.X[part], self.y[part])
            self.at += take
            n_images -= take


class Torch:
    def __init__(self, specs, X, y, batch, n_threads):
        import torch
        torch.manual_seed(0)
        self.torch, self.n_threads, self.batch = torch, n_threads, batch
        self.model = torch_model(specs, X.shape[1:])
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.X, self.y = torch.from_numpy(X), torch.from_numpy(y.astype(np.int64))
        self.order = torch.randperm(len(self.X))
        self.at = 0

    def train(self, n_images):
        torch = self.torch
        torch.set_num_threads(self.n_threads)
        for _ in range(0, n_images, self.batch):
            if self.at + self.batch > len(self.X):
                self.at = 0
            index = self.order[self.at:self.at + self.batch]
            self.at += self.batch
            self.optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(
                self.model(self.X.index_select(0, index)), self.y.index_select(0, index))
            loss.backward()
            self.optimizer.step()


# Memory the repeated training data may take
DATA_BYTES = 512 * 2**20


def data(loader, at_least):
    X, _, y, _ = loader()
    X, y = np.ascontiguousarray(X, dtype=np.float32), np.asarray(y)
    at_least = min(at_least, DATA_BYTES // X[0].nbytes)
    if len(X) < at_least:   # the digits: repeated, so chunks seldom run out
        times = -(-at_least // len(X))
        X, y = np.concatenate([X] * times), np.concatenate([y] * times)
    return X, y


def print_ratios(rows, repeats, header):
    """The default's speed against the other configurations: the median of
    each repeat's own ratio (the two ran within seconds of each other, under
    the same phase of the load)."""
    print()
    print("images/s, medians of", repeats, "repeats:", " | ".join(header))
    for load_kind, net, medians, rates in rows:
        def paired(other):
            return statistics.median(a / b for a, b in zip(rates["fastcnn", None],
                                                           rates[other]))
        line = (f"{load_kind:>6} {net:>10}  default/1-thread {paired(('fastcnn', 1)):5.2f}"
                f"  default/fixed-2 {paired(('fastcnn', 2)):6.2f}")
        if ("torch", 2) in medians:
            line += f"  default/torch-2 {paired(('torch', 2)):7.1f}"
        print(line)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loads", default="none,busy,mixed")
    parser.add_argument("--only", default=",".join(DEFAULT_NETS),
                        help=f"networks, of {', '.join(NETS)}")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch_ok = not args.no_torch
    if torch_ok:
        try:
            import torch  # noqa: F401
        except ImportError:
            torch_ok = False
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}  python {' '.join(sys.argv)}")
    print(f"# cpus {os.cpu_count()}, autogroup "
          f"{open('/proc/sys/kernel/sched_autogroup_enabled').read().strip() if os.path.exists('/proc/sys/kernel/sched_autogroup_enabled') else 'n/a'}, "
          f"load before {os.getloadavg()[0]:.2f}")
    configs = [("fastcnn", None), ("fastcnn", 1), ("fastcnn", 2)]
    if torch_ok:
        configs += [("torch", 2), ("torch", 1)]
    header = ("load", "net") + tuple(f"{lib} {'default' if t is None else t}" for lib, t in configs)
    rows = []
    for net in args.only.split(","):
        name, batch, loader = NETS[net]
        try:
            X, y = data(loader, 4 * batch * 2**12)
        except (OSError, FileNotFoundError) as error:
            print(f"# {net}: skipped ({error})")
            continue
        for load_kind in args.loads.split(","):
            runs = {}
            for lib, t in configs:
                cls = Fastcnn if lib == "fastcnn" else Torch
                runs[lib, t] = cls(NETWORKS[name], X, y, batch, t)
            with BackgroundLoad(load_kind) as load:
                rates = {key: [] for key in runs}
                for repeat in range(args.repeats):
                    order = list(runs) if repeat % 2 == 0 else list(runs)[::-1]
                    for key in order:
                        rates[key].append(chunks(batch, args.seconds, runs[key].train))
            medians = {key: statistics.median(v) for key, v in rates.items()}
            rows.append((load_kind, net, medians, rates))
            cells = "  ".join(f"{medians[k]:>10,.0f}" for k in runs)
            print(f"{load_kind:>6} {net:>10}  {cells}   ({load.describe()})", flush=True)
    print_ratios(rows, args.repeats, header)
    print(f"# load after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
