"""``python -m fastcnn``: a short tour of the kernels on scikit-learn's digits.

Runs one convolution layer, ReLU and max pooling forward and backward on the
8x8 digit images bundled with scikit-learn (nothing is downloaded), checks
one gradient against a finite difference, and prints what it did.
"""
import argparse
import time

import numpy as np
from sklearn.datasets import load_digits

from . import functional as F
from ._kernels.correlation import gemm_kernel_name
from ._threads import effective_n_threads


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastcnn", description=__doc__)
    parser.add_argument("--threads", type=int, default=None,
                        help="kernel threads (default: the physical cores)")
    args = parser.parse_args(argv)
    n_threads = effective_n_threads(args.threads)

    digits = load_digits()
    x = (digits.images[:, np.newaxis] / 16.0).astype(np.float32)  # (1797, 1, 8, 8)
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((16, 1, 3, 3)) / 3).astype(np.float32)
    b = np.zeros(16, dtype=np.float32)
    print(f"fastcnn kernels: {gemm_kernel_name()} matrix micro-kernel, "
          f"{n_threads} thread(s)")
    print(f"digits: {x.shape[0]} images of {x.shape[2]}x{x.shape[3]}")

    start = time.perf_counter()
    y = F.correlate2d(x, w, b, padding=1, n_threads=n_threads)   # (N, 16, 8, 8)
    h = np.maximum(y, 0)
    pooled, argmax = F.max_pool2d(h, 2, n_threads=n_threads)      # (N, 16, 4, 4)
    loss = 0.5 * float(np.sum(pooled.astype(np.float64) ** 2))
    grad_h = F.max_pool2d_backward(pooled, argmax, h.shape, n_threads=n_threads)
    grad_y = grad_h * (y > 0)
    grad_x, grad_w, grad_b = F.correlate2d_backward(x, w, grad_y, padding=1,
                                                    n_threads=n_threads)
    elapsed = time.perf_counter() - start
    print(f"conv 16@3x3 -> ReLU -> maxpool 2x2: {x.shape} -> {y.shape} -> "
          f"{pooled.shape}, forward + backward in {elapsed * 1e3:.1f} ms")

    # The analytic gradient of one kernel weight against a central difference.
    def loss_at(w_try):
        out = np.maximum(F.correlate2d(x.astype(np.float64), w_try, padding=1), 0)
        return 0.5 * np.sum(F.max_pool2d(out, 2)[0] ** 2)

    w64, eps, index = w.astype(np.float64), 1e-4, (3, 0, 1, 2)
    w_plus, w_minus = w64.copy(), w64.copy()
    w_plus[index] += eps
    w_minus[index] -= eps
    numeric = (loss_at(w_plus) - loss_at(w_minus)) / (2 * eps)
    print(f"loss {loss:.4f}; dloss/dw{list(index)}: analytic {grad_w[index]:.5f}, "
          f"finite difference {numeric:.5f}")


if __name__ == "__main__":
    main()
