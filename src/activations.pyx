"""Elementwise activation kernels on flat arrays: ReLU and its gradient.

Threads take fixed blocks of BLOCK elements, so every element goes through
the same instructions (vector body or scalar tail) whatever the thread count.
Outputs may alias inputs: each element is read before it is written.
"""
from cython cimport floating
from cython.parallel cimport prange

cdef Py_ssize_t BLOCK = 4096
# Arrays shorter than this run on one thread.
cdef Py_ssize_t MIN_PARALLEL = 1 << 15


cdef inline int threads_for(Py_ssize_t n, int n_threads) noexcept nogil:
    return n_threads if n >= MIN_PARALLEL else 1


def relu_forward(const floating[::1] x, floating[::1] y, int n_threads):
    """y = max(x, 0); NaN stays NaN (it is not <= 0)."""
    cdef Py_ssize_t n = x.shape[0], block, i, end
    cdef floating v
    with nogil:
        for block in prange((n + BLOCK - 1) // BLOCK, schedule='static',
                            num_threads=threads_for(n, n_threads)):
            end = (block + 1) * BLOCK if (block + 1) * BLOCK < n else n
            for i in range(block * BLOCK, end):
                v = x[i]
                y[i] = 0 if v <= 0 else v


def relu_backward(const floating[::1] grad_y, const floating[::1] y,
                  floating[::1] grad_x, int n_threads):
    """grad_x = grad_y where the ReLU output y is positive, 0 elsewhere."""
    cdef Py_ssize_t n = y.shape[0], block, i, end
    with nogil:
        for block in prange((n + BLOCK - 1) // BLOCK, schedule='static',
                            num_threads=threads_for(n, n_threads)):
            end = (block + 1) * BLOCK if (block + 1) * BLOCK < n else n
            for i in range(block * BLOCK, end):
                grad_x[i] = grad_y[i] if y[i] > 0 else 0
