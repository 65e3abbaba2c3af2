"""Networks and data shared by the benchmarks (not part of the package)."""
import ctypes
import os
import subprocess
import tempfile
import threading
import time

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from fastcnn import _network, datasets
from fastcnn.inspection import flop_counts
from fastcnn.layers import (BatchNorm1D, BatchNorm2D, Conv1D, Conv2D, Dense,
                            Dropout, Flatten, GlobalAvgPool1D, MaxPool2D, ReLU,
                            Residual)

# The hidden layers of each benchmark network; the estimator adds the output
# Dense(10). The PyTorch twins (tests/_helpers/torch_twin.py) follow these
# exactly.
NETWORKS = {
    # LeCun et al. 1998, with ReLU and max pooling
    "lenet5": [Conv2D(6, 5, padding=2), ReLU(), MaxPool2D(2),
               Conv2D(16, 5), ReLU(), MaxPool2D(2),
               Flatten(), Dense(120), ReLU(), Dense(84), ReLU()],
    # two conv-conv-pool blocks, 3x3 same padding, dense 128
    "fourconv": [Conv2D(32, 3, padding="same"), ReLU(),
                 Conv2D(32, 3, padding="same"), ReLU(), MaxPool2D(2),
                 Conv2D(64, 3, padding="same"), ReLU(),
                 Conv2D(64, 3, padding="same"), ReLU(), MaxPool2D(2),
                 Flatten(), Dense(128), ReLU()],
    # the MNIST-1D paper's CNN (Greydanus 2020): 3 x Conv1D(25), dense 125 -> 10
    "mnist1d": [Conv1D(25, 5, stride=2, padding=1), ReLU(),
                Conv1D(25, 3, stride=2, padding=1), ReLU(),
                Conv1D(25, 3, stride=2, padding=1), ReLU(), Flatten()],
    # the main job's digits CNN: 16 and 32 filters 3x3 same, pool 2, dense 10
    "digits": [Conv2D(16, 3, padding="same"), ReLU(), MaxPool2D(2),
               Conv2D(32, 3, padding="same"), ReLU(), MaxPool2D(2), Flatten()],
    # VGG-style blocks on 3 x 32 x 32 images (CIFAR-10's size): two 3x3 same
    # convolutions per block, max pooling between blocks, dense 256
    "vgg-cifar": [Conv2D(32, 3, padding=1), ReLU(), Conv2D(32, 3, padding=1), ReLU(),
                  MaxPool2D(2),
                  Conv2D(64, 3, padding=1), ReLU(), Conv2D(64, 3, padding=1), ReLU(),
                  MaxPool2D(2), Flatten(), Dense(256), ReLU()],
    # a small 1-D ResNet for MNIST-1D: three blocks of two 3-tap convolutions,
    # the first with an identity shortcut, the others halving the length
    # with 1x1 projection shortcuts
    "resnet1d": [Conv1D(32, 5, padding=2), ReLU(),
                 Residual([Conv1D(32, 3, padding=1), ReLU(), Conv1D(32, 3, padding=1)]),
                 ReLU(),
                 Residual([Conv1D(64, 3, stride=2, padding=1), ReLU(),
                           Conv1D(64, 3, padding=1)]), ReLU(),
                 Residual([Conv1D(64, 3, stride=2, padding=1), ReLU(),
                           Conv1D(64, 3, padding=1)]), ReLU(), Flatten()],
    # the fully convolutional network for time series (Wang et al. 2017):
    # three convolution + batch norm + ReLU blocks, global average pooling
    "fcn1d": [Conv1D(128, 8, padding="same"), BatchNorm1D(), ReLU(),
              Conv1D(256, 5, padding="same"), BatchNorm1D(), ReLU(),
              Conv1D(128, 3, padding="same"), BatchNorm1D(), ReLU(),
              GlobalAvgPool1D()],
    # VGG-style blocks with batch norm and dropout, for 28 x 28 images
    "vgg-bn": [Conv2D(32, 3, padding="same"), BatchNorm2D(), ReLU(),
               Conv2D(32, 3, padding="same"), BatchNorm2D(), ReLU(), MaxPool2D(2),
               Dropout(0.25),
               Conv2D(64, 3, padding="same"), BatchNorm2D(), ReLU(),
               Conv2D(64, 3, padding="same"), BatchNorm2D(), ReLU(), MaxPool2D(2),
               Dropout(0.25), Flatten(), Dense(256), BatchNorm1D(), ReLU(),
               Dropout(0.5)],
}


def load_digits_split(seed=0):
    """digits as (n, 1, 8, 8) in [0, 1], 25% held out (stratified)."""
    digits = load_digits()
    X = (digits.images[:, np.newaxis] / 16.0).astype(np.float32)
    return train_test_split(X, digits.target, test_size=0.25,
                            random_state=seed, stratify=digits.target)


def load_fashion(data_dir=None):
    """Fashion-MNIST as (n, 1, 28, 28) float32 in [0, 1]: X_tr, X_te, y_tr, y_te."""
    X_train, y_train, X_test, y_test = datasets.load_fashion_mnist(data_dir)
    scale = np.float32(1 / 255)
    return (X_train[:, np.newaxis] * scale, X_test[:, np.newaxis] * scale,
            y_train, y_test)


def load_mnist1d(seed=42):
    """MNIST-1D from the mnist1d package's local generator (never its
    download): 4000 training and 1000 test signals (n, 1, 40)."""
    from mnist1d.data import get_dataset_args, make_dataset
    args = get_dataset_args()
    args.seed = seed
    data = make_dataset(args)
    X_train = data["x"][:, np.newaxis].astype(np.float32)
    X_test = data["x_test"][:, np.newaxis].astype(np.float32)
    return X_train, X_test, data["y"], data["y_test"]


def load_synthetic_cifar(seed=0, n_train=2560, n_test=1000):
    """Synthetic data of CIFAR-10's shape, (n, 3, 32, 32) float32, 10 classes:
    each class a fixed random smooth pattern, each image its class's pattern
    plus unit Gaussian noise (learnable, nothing downloaded; only its shape
    matters to the speed)."""
    rng = np.random.default_rng(seed)
    coarse = rng.standard_normal((10, 3, 8, 8)).astype(np.float32)
    patterns = coarse.repeat(4, axis=2).repeat(4, axis=3)

    def draw(n):
        y = rng.integers(0, 10, n)
        X = patterns[y] + rng.standard_normal((n, 3, 32, 32), dtype=np.float32)
        return X, y
    X_train, y_train = draw(n_train)
    X_test, y_test = draw(n_test)
    return X_train, X_test, y_train, y_test


def training_flops(network):
    """Floating-point operations of one training image through the
    convolutions and dense layers of a fastcnn._network.Network, those in
    residual blocks included: their training-step counts from
    fastcnn.inspection.flop_counts (2 per multiply-add, forward, kernel
    gradient and input gradient, none for the first layer, whose input
    needs no gradient). Pooling, activations, normalization, the blocks'
    sums, the loss and the optimizer are not counted: the figure measures
    the matrix products against the FMA peak."""
    return sum(training for layer, _, training in flop_counts(network)
               if isinstance(layer, (_network.Conv, _network.Dense)))


_FMA_LOOP = r"""
#include <immintrin.h>
/* 16 independent chains of 16-lane float32 FMAs: more chains than both FMA
 * pipes' latency needs, so the loop runs at the FMA units' throughput. */
__attribute__((target("avx512f")))
float fma_loop(long iterations, float m, float c)
{
    __m512 vm = _mm512_set1_ps(m), vc = _mm512_set1_ps(c), acc[16];
    for (int j = 0; j < 16; ++j) acc[j] = _mm512_set1_ps((float)j);
    for (long i = 0; i < iterations; ++i) {
#pragma GCC unroll 16
        for (int j = 0; j < 16; ++j) acc[j] = _mm512_fmadd_ps(acc[j], vm, vc);
    }
    __m512 s = acc[0];
    for (int j = 1; j < 16; ++j) s = _mm512_add_ps(s, acc[j]);
    return _mm512_reduce_add_ps(s);
}
"""
_FMA_FLOPS_PER_ITERATION = 16 * 16 * 2


def fma_peak_gflops(n_threads, seconds=0.3):
    """Float32 peak of this machine: a loop of independent AVX-512 FMAs
    (_FMA_LOOP, compiled here with the system's cc), run on n_threads
    threads at once, GFLOP/s over the wall time. None when no C compiler
    or no AVX-512."""
    with tempfile.TemporaryDirectory() as tmp:
        source, library = os.path.join(tmp, "fma.c"), os.path.join(tmp, "fma.so")
        with open(source, "w") as f:
            f.write(_FMA_LOOP)
        try:
            subprocess.run(["cc", "-O2", "-shared", "-fPIC", source, "-o", library],
                           check=True, capture_output=True)
            loop = ctypes.CDLL(library).fma_loop
        except (OSError, subprocess.CalledProcessError):
            return None
    with open("/proc/cpuinfo") as f:
        if "avx512f" not in f.read():
            return None
    loop.restype = ctypes.c_float
    loop.argtypes = [ctypes.c_long, ctypes.c_float, ctypes.c_float]
    iterations = 1 << 20
    start = time.perf_counter()
    loop(iterations, 0.999999, 1e-7)
    iterations = max(1, int(iterations * seconds / (time.perf_counter() - start)))
    best = 0.0
    for _ in range(3):
        # ctypes releases the GIL, so the threads' loops run at once
        threads = [threading.Thread(target=loop, args=(iterations, 0.999999, 1e-7))
                   for _ in range(n_threads)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - start
        best = max(best, n_threads * iterations * _FMA_FLOPS_PER_ITERATION / elapsed / 1e9)
    return best
