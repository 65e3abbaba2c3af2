"""Normalization kernels: batch normalization and local response
normalization (across channels), forward and backward.

Layout: x (N, C, S), C-contiguous, S the spatial positions of a sample
flattened (1 for flat features). Batch statistics are per channel, over
(n, s): each channel is summed by one thread, in float64 whatever the
data's dtype, samples in order and the positions of each in eight partial
sums of a fixed pattern (normalization.h), so the
statistics and everything derived from them are the same bits for any
thread count. Per-element passes split the N*C planes between threads.
Local response normalization works on each sample alone: threads split
the samples, and every sum over a channel window runs in channel order.
The caller (fastcnn.functional) validates shapes and allocates outputs.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport pow, sqrt
from libc.stddef cimport ptrdiff_t


cdef extern from "normalization.h" nogil:
    double fcnn_channel_sum_f32(const float *x, ptrdiff_t planes, ptrdiff_t S,
                                ptrdiff_t stride)
    double fcnn_channel_sum_f64(const double *x, ptrdiff_t planes, ptrdiff_t S,
                                ptrdiff_t stride)
    double fcnn_channel_squares_f32(const float *x, ptrdiff_t planes,
                                    ptrdiff_t S, ptrdiff_t stride, double mean)
    double fcnn_channel_squares_f64(const double *x, ptrdiff_t planes,
                                    ptrdiff_t S, ptrdiff_t stride, double mean)
    void fcnn_channel_gradient_sums_f32(const float *g, const float *relu_y,
                                        const float *x, ptrdiff_t planes,
                                        ptrdiff_t S, ptrdiff_t stride,
                                        double mean, double *sum_g,
                                        double *sum_gx)
    void fcnn_channel_gradient_sums_f64(const double *g, const double *relu_y,
                                        const double *x, ptrdiff_t planes,
                                        ptrdiff_t S, ptrdiff_t stride,
                                        double mean, double *sum_g,
                                        double *sum_gx)
    void fcnn_batch_norm_grad_input_f32(const float *g, const float *relu_y,
                                        const float *x, float *gx, ptrdiff_t n,
                                        double mean, double scale, double slope,
                                        double shift)
    void fcnn_batch_norm_grad_input_f64(const double *g, const double *relu_y,
                                        const double *x, double *gx, ptrdiff_t n,
                                        double mean, double scale, double slope,
                                        double shift)
    void fcnn_feature_sums_f32(const float *x, ptrdiff_t N, ptrdiff_t C,
                               ptrdiff_t c0, ptrdiff_t c1, double *sums)
    void fcnn_feature_sums_f64(const double *x, ptrdiff_t N, ptrdiff_t C,
                               ptrdiff_t c0, ptrdiff_t c1, double *sums)
    void fcnn_feature_squares_f32(const float *x, ptrdiff_t N, ptrdiff_t C,
                                  ptrdiff_t c0, ptrdiff_t c1, const double *mean,
                                  double *sums)
    void fcnn_feature_squares_f64(const double *x, ptrdiff_t N, ptrdiff_t C,
                                  ptrdiff_t c0, ptrdiff_t c1, const double *mean,
                                  double *sums)
    void fcnn_feature_gradient_sums_f32(const float *g, const float *relu_y,
                                        const float *x, ptrdiff_t N, ptrdiff_t C,
                                        ptrdiff_t c0, ptrdiff_t c1,
                                        const double *mean, double *sum_g,
                                        double *sum_gx)
    void fcnn_feature_gradient_sums_f64(const double *g, const double *relu_y,
                                        const double *x, ptrdiff_t N, ptrdiff_t C,
                                        ptrdiff_t c0, ptrdiff_t c1,
                                        const double *mean, double *sum_g,
                                        double *sum_gx)
    void fcnn_batch_norm_row_f32(const float *x, float *y, ptrdiff_t C,
                                 const double *center, const double *scale,
                                 const double *shift, int relu)
    void fcnn_batch_norm_row_f64(const double *x, double *y, ptrdiff_t C,
                                 const double *center, const double *scale,
                                 const double *shift, int relu)
    void fcnn_batch_norm_grad_input_row_f32(
        const float *g, const float *relu_y, const float *x, float *gx,
        ptrdiff_t C, const double *mean, const double *scale,
        const double *slope, const double *shift)
    void fcnn_batch_norm_grad_input_row_f64(
        const double *g, const double *relu_y, const double *x, double *gx,
        ptrdiff_t C, const double *mean, const double *scale,
        const double *slope, const double *shift)


# Channels a block of the flat-feature (S = 1) sums: a block is summed by
# one thread, across its channels at once.
cdef enum:
    FEATURE_BLOCK = 64


cdef void moments(const floating *x, Py_ssize_t N, Py_ssize_t C, Py_ssize_t S,
                  double *mean, double *var, int n_threads) noexcept nogil:
    """Mean and biased variance of every channel over every (n, s), two
    passes (the second about the mean, which keeps the variance exact for
    data far from zero), each in normalization.h's fixed order."""
    cdef Py_ssize_t c, b, c0, c1
    if S == 1:
        for b in prange((C + FEATURE_BLOCK - 1) // FEATURE_BLOCK,
                        num_threads=n_threads, schedule='static'):
            c0 = b * FEATURE_BLOCK
            c1 = min(C, c0 + FEATURE_BLOCK)
            if floating is float:
                fcnn_feature_sums_f32(x, N, C, c0, c1, mean)
            else:
                fcnn_feature_sums_f64(x, N, C, c0, c1, mean)
            for c in range(c0, c1):
                mean[c] = mean[c] / N
            if floating is float:
                fcnn_feature_squares_f32(x, N, C, c0, c1, mean, var)
            else:
                fcnn_feature_squares_f64(x, N, C, c0, c1, mean, var)
            for c in range(c0, c1):
                var[c] = var[c] / N
        return
    for c in prange(C, num_threads=n_threads, schedule='static'):
        if floating is float:
            mean[c] = fcnn_channel_sum_f32(x + c * S, N, S, C * S) / (N * S)
            var[c] = fcnn_channel_squares_f32(x + c * S, N, S, C * S,
                                              mean[c]) / (N * S)
        else:
            mean[c] = fcnn_channel_sum_f64(x + c * S, N, S, C * S) / (N * S)
            var[c] = fcnn_channel_squares_f64(x + c * S, N, S, C * S,
                                              mean[c]) / (N * S)


cdef void scale_planes(const floating *x, floating *y, Py_ssize_t N,
                       Py_ssize_t C, Py_ssize_t S, const double *center,
                       const double *scale, const double *shift, bint relu,
                       int n_threads) noexcept nogil:
    """y = (x - center[c]) * scale[c] + shift[c], in float64 before
    rounding to y (centred first: no cancellation for data far from 0);
    with relu, then max(y, 0) as a ReLU layer computes it (NaN stays).
    Flat features (S = 1) go a sample's row at a time, across channels."""
    cdef Py_ssize_t plane, s, c, n
    cdef const floating *p
    cdef floating *q
    cdef floating v
    cdef double m, a, b
    if S == 1:
        for n in prange(N, num_threads=n_threads, schedule='static'):
            if floating is float:
                fcnn_batch_norm_row_f32(x + n * C, y + n * C, C, center, scale,
                                        shift, relu)
            else:
                fcnn_batch_norm_row_f64(x + n * C, y + n * C, C, center, scale,
                                        shift, relu)
        return
    for plane in prange(N * C, num_threads=n_threads, schedule='static'):
        c = plane % C
        m = center[c]
        a = scale[c]
        b = shift[c]
        p = x + plane * S
        q = y + plane * S
        if relu:
            for s in range(S):
                v = <floating>((p[s] - m) * a + b)
                q[s] = 0 if v <= 0 else v
        else:
            for s in range(S):
                q[s] = <floating>((p[s] - m) * a + b)


def batch_norm_forward_training(const floating[:, :, ::1] x,
                                const floating[::1] weight,
                                const floating[::1] bias,
                                floating[::1] running_mean,
                                floating[::1] running_var,
                                bint update_running, double momentum,
                                double eps, bint relu, floating[:, :, ::1] y,
                                double[::1] mean, double[::1] invstd,
                                double[::1] scale, double[::1] shift,
                                int n_threads):
    """Normalise with the batch's statistics.

    mean, invstd = the batch mean and 1 / sqrt(biased variance + eps) of
    each channel (saved for the backward pass); y = (x - mean) * invstd *
    weight + bias. With update_running, running_mean and running_var move
    towards the batch mean and the unbiased variance by ``momentum``; a
    channel with a single value (N * S == 1) has no unbiased variance and
    keeps its running_var. With relu, y is then max(y, 0). scale, shift:
    (C,) scratch.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2], c
    cdef Py_ssize_t count = N * S
    cdef double m, v, unbiased
    with nogil:
        moments(&x[0, 0, 0], N, C, S, &mean[0], &shift[0], n_threads)
        for c in prange(C, num_threads=n_threads, schedule='static'):
            m = mean[c]
            v = shift[c]
            invstd[c] = 1.0 / sqrt(v + eps)
            scale[c] = weight[c] * invstd[c]
            shift[c] = bias[c]
            if update_running:
                running_mean[c] = <floating>(
                    (1.0 - momentum) * running_mean[c] + momentum * m)
                if count > 1:
                    unbiased = v * count / (count - 1)
                    running_var[c] = <floating>(
                        (1.0 - momentum) * running_var[c] + momentum * unbiased)
        scale_planes(&x[0, 0, 0], &y[0, 0, 0], N, C, S, &mean[0], &scale[0],
                     &shift[0], relu, n_threads)


def batch_norm_forward_inference(const floating[:, :, ::1] x,
                                 const floating[::1] weight,
                                 const floating[::1] bias,
                                 const floating[::1] running_mean,
                                 const floating[::1] running_var,
                                 double eps, bint relu, floating[:, :, ::1] y,
                                 double[::1] center, double[::1] scale,
                                 double[::1] shift, int n_threads):
    """y = (x - running_mean) / sqrt(running_var + eps) * weight + bias,
    with per-channel factors computed in float64; with relu, then
    max(y, 0). center, scale, shift: (C,) scratch."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2], c
    with nogil:
        for c in range(C):
            center[c] = running_mean[c]
            scale[c] = weight[c] / sqrt(<double>running_var[c] + eps)
            shift[c] = bias[c]
        scale_planes(&x[0, 0, 0], &y[0, 0, 0], N, C, S, &center[0], &scale[0],
                     &shift[0], relu, n_threads)


cdef void gradient_sums(const floating *g, const floating *relu_y,
                        const floating *x, Py_ssize_t N, Py_ssize_t C,
                        Py_ssize_t S, const double *mean, double *sum_g,
                        double *sum_gx, int n_threads) noexcept nogil:
    """Sums over each channel of g and of g * (x - mean), in
    normalization.h's fixed order."""
    cdef Py_ssize_t c, b, c0, c1
    cdef const floating *relu_c = NULL
    if S == 1:
        for b in prange((C + FEATURE_BLOCK - 1) // FEATURE_BLOCK,
                        num_threads=n_threads, schedule='static'):
            c0 = b * FEATURE_BLOCK
            c1 = min(C, c0 + FEATURE_BLOCK)
            if floating is float:
                fcnn_feature_gradient_sums_f32(g, relu_y, x, N, C, c0, c1, mean,
                                               sum_g, sum_gx)
            else:
                fcnn_feature_gradient_sums_f64(g, relu_y, x, N, C, c0, c1, mean,
                                               sum_g, sum_gx)
        return
    for c in prange(C, num_threads=n_threads, schedule='static'):
        if relu_y != NULL:
            relu_c = relu_y + c * S
        if floating is float:
            fcnn_channel_gradient_sums_f32(g + c * S, relu_c, x + c * S, N, S,
                                           C * S, mean[c], &sum_g[c], &sum_gx[c])
        else:
            fcnn_channel_gradient_sums_f64(g + c * S, relu_c, x + c * S, N, S,
                                           C * S, mean[c], &sum_g[c], &sum_gx[c])


cdef void grad_input(const floating *g, const floating *relu_y,
                     const floating *x, floating *gx, Py_ssize_t N,
                     Py_ssize_t C, Py_ssize_t S, const double *mean,
                     const double *scale, const double *slope,
                     const double *shift, int n_threads) noexcept nogil:
    """gx = v * scale[c] + (x - mean[c]) * slope[c] + shift[c] per element,
    v the gradient that reaches the norm (normalization.h); planes split
    between threads, flat features (S = 1) a sample's row at a time."""
    cdef Py_ssize_t plane, c, n
    cdef const floating *relu_at = NULL
    if S == 1:
        for n in prange(N, num_threads=n_threads, schedule='static'):
            if relu_y != NULL:
                relu_at = relu_y + n * C
            if floating is float:
                fcnn_batch_norm_grad_input_row_f32(g + n * C, relu_at, x + n * C,
                                                   gx + n * C, C, mean, scale,
                                                   slope, shift)
            else:
                fcnn_batch_norm_grad_input_row_f64(g + n * C, relu_at, x + n * C,
                                                   gx + n * C, C, mean, scale,
                                                   slope, shift)
        return
    for plane in prange(N * C, num_threads=n_threads, schedule='static'):
        c = plane % C
        if relu_y != NULL:
            relu_at = relu_y + plane * S
        if floating is float:
            fcnn_batch_norm_grad_input_f32(g + plane * S, relu_at, x + plane * S,
                                           gx + plane * S, S, mean[c], scale[c],
                                           slope[c], shift[c])
        else:
            fcnn_batch_norm_grad_input_f64(g + plane * S, relu_at, x + plane * S,
                                           gx + plane * S, S, mean[c], scale[c],
                                           slope[c], shift[c])


def batch_norm_backward(const floating[:, :, ::1] grad_y,
                        const floating[:, :, ::1] x,
                        const floating[::1] weight,
                        const double[::1] mean, const double[::1] invstd,
                        floating[:, :, ::1] grad_x,
                        floating[::1] grad_weight, floating[::1] grad_bias,
                        const floating[:, :, ::1] relu_output,
                        double[::1] scale, double[::1] shift,
                        double[::1] slope, int n_threads):
    """Gradients of the training-mode forward pass (batch statistics).

    grad_bias = sum of grad_y, grad_weight = sum of grad_y * x_hat, with
    x_hat = (x - mean) * invstd; grad_x (None: not computed) =
    weight * invstd * (grad_y - mean(grad_y) - x_hat * mean(grad_y * x_hat)),
    written as grad_y * scale + (x - mean) * slope + shift per channel.
    With relu_output (the forward pass's y with relu; None: none), grad_y
    counts only where it is positive: the fused ReLU's gradient.
    scale, shift, slope: (C,) scratch.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2]
    cdef Py_ssize_t c
    cdef double count = N * S, sg, sgx, a
    cdef const floating *relu_y = NULL
    cdef bint want_grad_x = grad_x is not None
    if relu_output is not None:
        relu_y = &relu_output[0, 0, 0]
    with nogil:
        gradient_sums(&grad_y[0, 0, 0], relu_y, &x[0, 0, 0], N, C, S, &mean[0],
                      &scale[0], &shift[0], n_threads)
        for c in prange(C, num_threads=n_threads, schedule='static'):
            sg = scale[c]
            sgx = shift[c]
            grad_bias[c] = <floating>sg
            grad_weight[c] = <floating>(sgx * invstd[c])
            a = weight[c] * invstd[c]
            scale[c] = a
            shift[c] = -a * sg / count
            slope[c] = -a * invstd[c] * invstd[c] * sgx / count
        if want_grad_x:
            grad_input(&grad_y[0, 0, 0], relu_y, &x[0, 0, 0], &grad_x[0, 0, 0],
                       N, C, S, &mean[0], &scale[0], &slope[0], &shift[0],
                       n_threads)


cdef inline Py_ssize_t imax(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return a if a > b else b


cdef inline Py_ssize_t imin(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return a if a < b else b


def local_response_norm_forward(const floating[:, :, ::1] x,
                                floating[:, :, ::1] y,
                                floating[:, :, ::1] scale,
                                Py_ssize_t size, double alpha, double beta,
                                double k, int n_threads):
    """scale[n, c, s] = k + alpha / size * sum of x[n, c', s]^2 over
    c' in [c - size // 2, c + (size - 1) // 2] (channels outside [0, C)
    count as zeros); y = x * scale^-beta. scale may be None (inference):
    y is the same, from the same rounded scale."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2]
    cdef Py_ssize_t n, c, d, s, lo, hi
    cdef bint keep = scale is not None
    cdef floating sv
    cdef double acc, v, ratio = alpha / size
    with nogil:
        for n in prange(N, num_threads=n_threads, schedule='static'):
            for c in range(C):
                lo = imax(c - size // 2, 0)
                hi = imin(c + (size - 1) // 2, C - 1)
                for s in range(S):
                    acc = 0
                    for d in range(lo, hi + 1):
                        v = x[n, d, s]
                        acc = acc + v * v
                    sv = <floating>(k + ratio * acc)
                    if keep:
                        scale[n, c, s] = sv
                    y[n, c, s] = <floating>(x[n, c, s] * pow(<double>sv, -beta))


def local_response_norm_backward(const floating[:, :, ::1] grad_y,
                                 const floating[:, :, ::1] x,
                                 const floating[:, :, ::1] y,
                                 const floating[:, :, ::1] scale,
                                 Py_ssize_t size, double alpha, double beta,
                                 floating[:, :, ::1] grad_x, int n_threads):
    """grad_x[j] = grad_y[j] * scale[j]^-beta - 2 alpha beta / size * x[j]
    * sum of grad_y[i] * y[i] / scale[i] over the channels i whose window
    holds j (i in [j - (size - 1) // 2, j + size // 2]); y / scale is
    x * scale^(-beta - 1), read from the forward pass's output instead of
    a second power."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2]
    cdef Py_ssize_t n, c, i, s, lo, hi
    cdef double acc, coef = 2.0 * alpha * beta / size
    with nogil:
        for n in prange(N, num_threads=n_threads, schedule='static'):
            for c in range(C):
                lo = imax(c - (size - 1) // 2, 0)
                hi = imin(c + size // 2, C - 1)
                for s in range(S):
                    acc = 0
                    for i in range(lo, hi + 1):
                        acc = acc + <double>grad_y[n, i, s] * y[n, i, s] / scale[n, i, s]
                    grad_x[n, c, s] = <floating>(
                        grad_y[n, c, s] * pow(<double>scale[n, c, s], -beta)
                        - coef * x[n, c, s] * acc)
