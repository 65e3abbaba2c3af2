"""Global pooling kernels: the mean or the maximum of every plane.

Layout: x as planes (P, S), P = N * C planes of S = H * W (or L) values,
C-contiguous; y (P,), one value per plane. Threads split the planes and
each plane is reduced by one thread in a fixed order, so results do not
depend on the thread count. A plane's maximum is found by a vector
reduction and then a scan for its first occurrence (global_pooling.h).
The caller (fastcnn.functional) validates shapes and allocates outputs.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.stddef cimport ptrdiff_t
from libc.stdint cimport int32_t
from libc.string cimport memset

cdef extern from "global_pooling.h" nogil:
    ptrdiff_t fcnn_first_max_f32(const float *x, ptrdiff_t n)
    ptrdiff_t fcnn_first_max_f64(const double *x, ptrdiff_t n)

# Planes a thread zeroes at once in the max's backward pass
cdef enum:
    ZERO_BLOCK = 64

# Partial sums of a plane's mean: four independent chains instead of one,
# so the additions overlap; the pattern is fixed, so is the result.
cdef enum:
    LANES = 4


cdef inline floating plane_sum(const floating *p, Py_ssize_t S) noexcept nogil:
    """Sum of p[0:S]: element i goes to partial sum i % LANES, the partial
    sums added as ((0 + 1) + (2 + 3))."""
    cdef floating s0 = 0, s1 = 0, s2 = 0, s3 = 0
    cdef Py_ssize_t i = 0
    while i + LANES <= S:
        s0 = s0 + p[i]
        s1 = s1 + p[i + 1]
        s2 = s2 + p[i + 2]
        s3 = s3 + p[i + 3]
        i += LANES
    if i < S:
        s0 = s0 + p[i]
    if i + 1 < S:
        s1 = s1 + p[i + 1]
    if i + 2 < S:
        s2 = s2 + p[i + 2]
    return (s0 + s1) + (s2 + s3)


def global_avg_pool_forward(const floating[:, ::1] x, floating[::1] y,
                            int n_threads):
    """y[p] = the mean of plane p."""
    cdef Py_ssize_t P = x.shape[0], S = x.shape[1], plane
    with nogil:
        for plane in prange(P, num_threads=n_threads, schedule='static'):
            y[plane] = plane_sum(&x[0, 0] + plane * S, S) / S


def global_avg_pool_backward(const floating[::1] grad_y,
                             floating[:, ::1] grad_x, int n_threads):
    """grad_x[p, :] = grad_y[p] / S: the gradient spread evenly over the
    plane. grad_x is overwritten."""
    cdef Py_ssize_t P = grad_x.shape[0], S = grad_x.shape[1], plane, i
    cdef floating share
    cdef floating *gx
    with nogil:
        for plane in prange(P, num_threads=n_threads, schedule='static'):
            share = grad_y[plane] / S
            gx = &grad_x[0, 0] + plane * S
            for i in range(S):
                gx[i] = share


def global_max_pool_forward(const floating[:, ::1] x, floating[::1] y,
                            int32_t[::1] argmax, int n_threads):
    """y[p] = the maximum of plane p, argmax[p] its index in the plane.

    Ties go to the first maximum; a NaN is the maximum (the first NaN), as
    in max pooling (global_pooling.h)."""
    cdef Py_ssize_t P = x.shape[0], S = x.shape[1], plane
    cdef const floating *xp
    cdef ptrdiff_t where
    with nogil:
        for plane in prange(P, num_threads=n_threads, schedule='static'):
            xp = &x[0, 0] + plane * S
            if floating is float:
                where = fcnn_first_max_f32(xp, S)
            else:
                where = fcnn_first_max_f64(xp, S)
            y[plane] = xp[where]
            argmax[plane] = <int32_t>where


def global_max_pool_backward(const floating[::1] grad_y,
                             const int32_t[::1] argmax,
                             floating[:, ::1] grad_x, int n_threads):
    """grad_x[p, argmax[p]] = grad_y[p], zero elsewhere. grad_x is
    overwritten.

    An index outside the plane is skipped and counted, never followed: the
    return value is the number of such indices, which the caller turns
    into an error."""
    cdef Py_ssize_t P = grad_x.shape[0], S = grad_x.shape[1], plane, block
    cdef Py_ssize_t first, last
    cdef Py_ssize_t bad = 0
    cdef int32_t idx
    cdef floating *gx = &grad_x[0, 0]
    with nogil:
        # zeroed a block of planes at a time: one memset instead of one per
        # plane, which for small planes (7 x 7) cost more than the zeros
        for block in prange((P + ZERO_BLOCK - 1) // ZERO_BLOCK,
                            num_threads=n_threads, schedule='static'):
            first = block * ZERO_BLOCK
            last = min(P, first + ZERO_BLOCK)
            memset(gx + first * S, 0, (last - first) * S * sizeof(floating))
            for plane in range(first, last):
                idx = argmax[plane]
                if idx >= 0 and idx < S:
                    gx[plane * S + idx] = grad_y[plane]
                else:
                    bad += 1
    return bad
