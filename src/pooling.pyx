"""Pooling kernels: max (with the index of each window's maximum), average
and L2 (the square root of the sum of squares).

Layout: x (N, C, H, W), y (N, C, Ho, Wo), C-contiguous. Windows of
(kh, kw) at stride (sh, sw), no padding; Ho = (H - kh) // sh + 1.
Threads split the N*C planes; every plane's gradient is summed by one
thread in a fixed order, so results do not depend on the thread count.
The 2x2, stride-2 max pool (pooling.h) computes output rows in fixed
blocks of 8 windows, one vector loop each even on 4 x 4 planes: a short
row's block runs into the next rows, which overwrite it.
The caller (fastcnn.functional) validates shapes and allocates outputs.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int32_t
from libc.math cimport sqrt
from libc.stddef cimport ptrdiff_t
from libc.string cimport memset

cdef extern from "pooling.h" nogil:
    void fcnn_max_pool_row_f32(const float *x, ptrdiff_t W, ptrdiff_t r0,
                               ptrdiff_t Wo, ptrdiff_t kh, ptrdiff_t kw,
                               ptrdiff_t sw, float *y, int32_t *arg, int relu)
    void fcnn_max_pool_row_f64(const double *x, ptrdiff_t W, ptrdiff_t r0,
                               ptrdiff_t Wo, ptrdiff_t kh, ptrdiff_t kw,
                               ptrdiff_t sw, double *y, int32_t *arg, int relu)
    void fcnn_max_pool_2x2_f32(const float *x, ptrdiff_t x_size, ptrdiff_t H,
                               ptrdiff_t W, ptrdiff_t Ho, ptrdiff_t Wo,
                               ptrdiff_t p0, ptrdiff_t p1, float *y,
                               int32_t *arg, int relu)
    void fcnn_max_pool_2x2_f64(const double *x, ptrdiff_t x_size, ptrdiff_t H,
                               ptrdiff_t W, ptrdiff_t Ho, ptrdiff_t Wo,
                               ptrdiff_t p0, ptrdiff_t p1, double *y,
                               int32_t *arg, int relu)


def max_pool2d_forward(const floating[:, :, :, ::1] x,
                       floating[:, :, :, ::1] y,
                       int32_t[:, :, :, ::1] argmax,
                       Py_ssize_t kh, Py_ssize_t kw,
                       Py_ssize_t sh, Py_ssize_t sw, bint relu,
                       int n_threads):
    """y = the maximum of every window; argmax = its index h*W + w in the
    plane (argmax None: the maxima alone, as inference needs).

    Ties go to the first maximum in row-major order. A NaN in a window is its
    maximum (the first NaN), as NaN should propagate rather than vanish.
    With relu, y is then max(y, 0) (NaN stays NaN): the pooling of a ReLU's
    output, which is the same, in one pass.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2]
    cdef Py_ssize_t W = x.shape[3], Ho = y.shape[2], Wo = y.shape[3]
    cdef Py_ssize_t plane, i, t, n_planes = N * C
    cdef int32_t *arg = NULL if argmax is None else &argmax[0, 0, 0, 0]
    if kh == 2 and kw == 2 and sh == 2 and sw == 2:
        # each thread one run of planes: the kernel's blocks may run past an
        # output row into the next, which must be the same thread's
        with nogil:
            for t in prange(n_threads, num_threads=n_threads, schedule='static'):
                if floating is float:
                    fcnn_max_pool_2x2_f32(
                        &x[0, 0, 0, 0], n_planes * H * W, H, W, Ho, Wo,
                        n_planes * t // n_threads,
                        n_planes * (t + 1) // n_threads,
                        &y[0, 0, 0, 0], arg, relu)
                else:
                    fcnn_max_pool_2x2_f64(
                        &x[0, 0, 0, 0], n_planes * H * W, H, W, Ho, Wo,
                        n_planes * t // n_threads,
                        n_planes * (t + 1) // n_threads,
                        &y[0, 0, 0, 0], arg, relu)
        return
    with nogil:
        for plane in prange(n_planes, num_threads=n_threads, schedule='static'):
            for i in range(Ho):
                if floating is float:
                    fcnn_max_pool_row_f32(
                        &x[0, 0, 0, 0] + plane * H * W, W, i * sh, Wo, kh, kw,
                        sw, &y[0, 0, 0, 0] + (plane * Ho + i) * Wo,
                        NULL if arg == NULL else arg + (plane * Ho + i) * Wo, relu)
                else:
                    fcnn_max_pool_row_f64(
                        &x[0, 0, 0, 0] + plane * H * W, W, i * sh, Wo, kh, kw,
                        sw, &y[0, 0, 0, 0] + (plane * Ho + i) * Wo,
                        NULL if arg == NULL else arg + (plane * Ho + i) * Wo, relu)


def max_pool2d_backward(const floating[:, :, :, ::1] grad_y,
                        const int32_t[:, :, :, ::1] argmax,
                        floating[:, :, :, ::1] grad_x,
                        const floating[:, :, :, ::1] relu_output,
                        int n_threads):
    """grad_x[plane][argmax] += grad_y: every gradient goes to its window's
    maximum only; overlapping windows add up. grad_x is overwritten.

    With relu_output (y of max_pool2d_forward with relu, of grad_y's shape;
    None for none) only the gradients where it is positive pass: the ReLU's
    gradient too.

    An index outside the plane is skipped and counted, never followed: the
    return value is the number of such indices (0 for argmax from
    max_pool2d_forward), which the caller turns into an error. Checking here
    costs one compare per element instead of a separate pass over argmax.
    """
    cdef Py_ssize_t N = grad_x.shape[0], C = grad_x.shape[1]
    cdef Py_ssize_t HW = grad_x.shape[2] * grad_x.shape[3]
    cdef Py_ssize_t HoWo = grad_y.shape[2] * grad_y.shape[3]
    cdef Py_ssize_t plane, o, bad = 0
    cdef int32_t idx
    cdef const floating *gy
    cdef const floating *yp
    cdef const floating *relu_y = NULL
    cdef floating g
    cdef const int32_t *ap
    cdef floating *gx
    if relu_output is not None:
        relu_y = &relu_output[0, 0, 0, 0]
    with nogil:
        for plane in prange(N * C, num_threads=n_threads, schedule='static'):
            gx = &grad_x[0, 0, 0, 0] + plane * HW
            gy = &grad_y[0, 0, 0, 0] + plane * HoWo
            ap = &argmax[0, 0, 0, 0] + plane * HoWo
            memset(gx, 0, HW * sizeof(floating))
            if relu_y == NULL:
                for o in range(HoWo):
                    idx = ap[o]
                    if idx >= 0 and idx < HW:
                        gx[idx] += gy[o]
                    else:
                        bad += 1
                continue
            # a select, not a branch, on the sign: about half the outputs
            # of a ReLU are positive, and a branch on that mispredicts half
            # the time (adding +0 leaves every sum as it was: none is -0)
            yp = relu_y + plane * HoWo
            for o in range(HoWo):
                idx = ap[o]
                g = gy[o]
                if idx >= 0 and idx < HW:
                    gx[idx] += g if yp[o] > 0 else 0
                else:
                    bad += 1
    return bad


def avg_pool2d_forward(const floating[:, :, :, ::1] x,
                       floating[:, :, :, ::1] y,
                       Py_ssize_t kh, Py_ssize_t kw,
                       Py_ssize_t sh, Py_ssize_t sw, int n_threads):
    """y = the mean of every window."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2]
    cdef Py_ssize_t W = x.shape[3], Ho = y.shape[2], Wo = y.shape[3]
    cdef Py_ssize_t plane, i, j, a, b
    cdef const floating *xp
    cdef const floating *row
    cdef floating *yp
    cdef floating total
    cdef floating scale = 1.0 / (kh * kw)
    with nogil:
        for plane in prange(N * C, num_threads=n_threads, schedule='static'):
            xp = &x[0, 0, 0, 0] + plane * H * W
            yp = &y[0, 0, 0, 0] + plane * Ho * Wo
            for i in range(Ho):
                for j in range(Wo):
                    total = 0
                    for a in range(kh):
                        row = xp + (i * sh + a) * W + j * sw
                        for b in range(kw):
                            total = total + row[b]
                    yp[i * Wo + j] = total * scale


def avg_pool2d_backward(const floating[:, :, :, ::1] grad_y,
                        floating[:, :, :, ::1] grad_x,
                        Py_ssize_t kh, Py_ssize_t kw,
                        Py_ssize_t sh, Py_ssize_t sw, int n_threads):
    """Every output gradient, divided by the window size, added to each input
    of its window. grad_x is overwritten."""
    cdef Py_ssize_t N = grad_x.shape[0], C = grad_x.shape[1]
    cdef Py_ssize_t H = grad_x.shape[2], W = grad_x.shape[3]
    cdef Py_ssize_t Ho = grad_y.shape[2], Wo = grad_y.shape[3]
    cdef Py_ssize_t plane, i, j, a, b
    cdef const floating *gy
    cdef floating *gx
    cdef floating *row
    cdef floating g
    cdef floating scale = 1.0 / (kh * kw)
    with nogil:
        for plane in prange(N * C, num_threads=n_threads, schedule='static'):
            gx = &grad_x[0, 0, 0, 0] + plane * H * W
            gy = &grad_y[0, 0, 0, 0] + plane * Ho * Wo
            memset(gx, 0, H * W * sizeof(floating))
            for i in range(Ho):
                for j in range(Wo):
                    g = gy[i * Wo + j] * scale
                    for a in range(kh):
                        row = gx + (i * sh + a) * W + j * sw
                        for b in range(kw):
                            row[b] += g


def l2_pool2d_forward(const floating[:, :, :, ::1] x,
                      floating[:, :, :, ::1] y,
                      Py_ssize_t kh, Py_ssize_t kw,
                      Py_ssize_t sh, Py_ssize_t sw, int n_threads):
    """y = sqrt of the sum of squares of every window, summed in row-major
    order within the window."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2]
    cdef Py_ssize_t W = x.shape[3], Ho = y.shape[2], Wo = y.shape[3]
    cdef Py_ssize_t plane, i, j, a, b
    cdef const floating *xp
    cdef const floating *row
    cdef floating *yp
    cdef floating total
    with nogil:
        for plane in prange(N * C, num_threads=n_threads, schedule='static'):
            xp = &x[0, 0, 0, 0] + plane * H * W
            yp = &y[0, 0, 0, 0] + plane * Ho * Wo
            for i in range(Ho):
                for j in range(Wo):
                    total = 0
                    for a in range(kh):
                        row = xp + (i * sh + a) * W + j * sw
                        for b in range(kw):
                            total = total + row[b] * row[b]
                    yp[i * Wo + j] = sqrt(total)


def l2_pool2d_backward(const floating[:, :, :, ::1] grad_y,
                       const floating[:, :, :, ::1] x,
                       const floating[:, :, :, ::1] y,
                       floating[:, :, :, ::1] grad_x,
                       Py_ssize_t kh, Py_ssize_t kw,
                       Py_ssize_t sh, Py_ssize_t sw, int n_threads):
    """grad_x = sum over the windows holding each input of grad_y * x / y.
    grad_x is overwritten.

    A window whose output is 0 (all its inputs 0) passes no gradient: the
    square root has no derivative there, and 0 is the subgradient that
    leaves such a window where it is. A NaN or infinite output is divided
    by as any other, so NaN propagates."""
    cdef Py_ssize_t N = grad_x.shape[0], C = grad_x.shape[1]
    cdef Py_ssize_t H = grad_x.shape[2], W = grad_x.shape[3]
    cdef Py_ssize_t Ho = grad_y.shape[2], Wo = grad_y.shape[3]
    cdef Py_ssize_t plane, i, j, a, b
    cdef const floating *gy
    cdef const floating *yp
    cdef const floating *xp
    cdef const floating *xrow
    cdef floating *gx
    cdef floating *row
    cdef floating g, norm
    with nogil:
        for plane in prange(N * C, num_threads=n_threads, schedule='static'):
            gx = &grad_x[0, 0, 0, 0] + plane * H * W
            xp = &x[0, 0, 0, 0] + plane * H * W
            gy = &grad_y[0, 0, 0, 0] + plane * Ho * Wo
            yp = &y[0, 0, 0, 0] + plane * Ho * Wo
            memset(gx, 0, H * W * sizeof(floating))
            for i in range(Ho):
                for j in range(Wo):
                    norm = yp[i * Wo + j]
                    if norm == 0:
                        continue
                    g = gy[i * Wo + j] / norm
                    for a in range(kh):
                        row = gx + (i * sh + a) * W + j * sw
                        xrow = xp + (i * sh + a) * W + j * sw
                        for b in range(kw):
                            row[b] += g * xrow[b]
