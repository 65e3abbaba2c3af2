"""Dropout kernels on flat arrays: each value times the mask value of its
uniform, ``scale`` where the uniform is at least ``rate``, 0 elsewhere.

The uniforms are the caller's (drawn in Python from the layer's
generator), so a result depends on its inputs alone and never on the
threads. The loops are in dropout.h. Outputs may alias their input
element for element.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.stddef cimport ptrdiff_t

cdef extern from "dropout.h" nogil:
    void fcnn_dropout_f32(const float *x, const float *u, float *y, ptrdiff_t n,
                          float rate, float scale)
    void fcnn_dropout_f64(const double *x, const double *u, double *y, ptrdiff_t n,
                          double rate, double scale)
    void fcnn_times_f32(const float *x, float *y, ptrdiff_t n, float m)
    void fcnn_times_f64(const double *x, double *y, ptrdiff_t n, double m)

cdef Py_ssize_t BLOCK = 1 << 12
# Arrays shorter than this run on one thread: waking another costs more.
cdef Py_ssize_t MIN_PARALLEL = 1 << 15


cdef inline int threads_for(Py_ssize_t n, int n_threads) noexcept nogil:
    return n_threads if n >= MIN_PARALLEL else 1


def dropout_values(const floating[::1] x, const floating[::1] uniforms,
                   floating[::1] y, double rate, double scale, int n_threads):
    """y[i] = x[i] * (scale if uniforms[i] >= rate else 0), rate and scale
    rounded to the arrays' type; threads take fixed blocks of BLOCK values."""
    cdef Py_ssize_t n = x.shape[0], block, start, length
    cdef floating r = <floating>rate, s = <floating>scale
    with nogil:
        for block in prange((n + BLOCK - 1) // BLOCK, schedule='static',
                            num_threads=threads_for(n, n_threads)):
            start = block * BLOCK
            length = n - start if n - start < BLOCK else BLOCK
            if floating is float:
                fcnn_dropout_f32(&x[0] + start, &uniforms[0] + start,
                                 &y[0] + start, length, r, s)
            else:
                fcnn_dropout_f64(&x[0] + start, &uniforms[0] + start,
                                 &y[0] + start, length, r, s)


def dropout_rows(const floating[::1] x, const floating[::1] uniforms,
                 floating[::1] y, double rate, double scale, int n_threads):
    """x as len(uniforms) rows of equal length (a sample's channel each):
    row r times (scale if uniforms[r] >= rate else 0); threads take rows."""
    cdef Py_ssize_t n = x.shape[0], rows = uniforms.shape[0], row, length
    cdef floating r = <floating>rate, s = <floating>scale, m
    if rows == 0 or n == 0:
        return
    length = n // rows
    with nogil:
        for row in prange(rows, schedule='static',
                          num_threads=threads_for(n, n_threads)):
            m = s if uniforms[row] >= r else 0
            if floating is float:
                fcnn_times_f32(&x[0] + row * length, &y[0] + row * length,
                               length, m)
            else:
                fcnn_times_f64(&x[0] + row * length, &y[0] + row * length,
                               length, m)
