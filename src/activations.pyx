"""Elementwise activation kernels on flat arrays: ReLU and its gradient.

The loops themselves are in elementwise.h (vectorised, branch-free). Threads
take fixed blocks of BLOCK elements. Outputs may alias inputs: each element
is read before it is written.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.stddef cimport ptrdiff_t

cdef extern from "elementwise.h" nogil:
    void fcnn_relu_f32(const float *x, float *y, ptrdiff_t n)
    void fcnn_relu_f64(const double *x, double *y, ptrdiff_t n)
    void fcnn_relu_backward_f32(const float *gy, const float *y, float *gx, ptrdiff_t n)
    void fcnn_relu_backward_f64(const double *gy, const double *y, double *gx, ptrdiff_t n)

cdef Py_ssize_t BLOCK = 1 << 12
# Arrays shorter than this run on one thread: waking another costs more.
cdef Py_ssize_t MIN_PARALLEL = 1 << 15


cdef inline int threads_for(Py_ssize_t n, int n_threads) noexcept nogil:
    return n_threads if n >= MIN_PARALLEL else 1


def relu_forward(const floating[::1] x, floating[::1] y, int n_threads):
    """y = max(x, 0); NaN stays NaN."""
    cdef Py_ssize_t n = x.shape[0], block, start, length
    with nogil:
        for block in prange((n + BLOCK - 1) // BLOCK, schedule='static',
                            num_threads=threads_for(n, n_threads)):
            start = block * BLOCK
            length = n - start if n - start < BLOCK else BLOCK
            if floating is float:
                fcnn_relu_f32(&x[0] + start, &y[0] + start, length)
            else:
                fcnn_relu_f64(&x[0] + start, &y[0] + start, length)


def relu_backward(const floating[::1] grad_y, const floating[::1] y,
                  floating[::1] grad_x, int n_threads):
    """grad_x = grad_y where the ReLU output y is positive, 0 elsewhere."""
    cdef Py_ssize_t n = y.shape[0], block, start, length
    with nogil:
        for block in prange((n + BLOCK - 1) // BLOCK, schedule='static',
                            num_threads=threads_for(n, n_threads)):
            start = block * BLOCK
            length = n - start if n - start < BLOCK else BLOCK
            if floating is float:
                fcnn_relu_backward_f32(&grad_y[0] + start, &y[0] + start,
                                       &grad_x[0] + start, length)
            else:
                fcnn_relu_backward_f64(&grad_y[0] + start, &y[0] + start,
                                       &grad_x[0] + start, length)
