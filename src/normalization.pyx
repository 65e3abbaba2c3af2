"""Normalization kernels: batch normalization and local response
normalization (across channels), forward and backward.

Layout: x (N, C, S), C-contiguous, S the spatial positions of a sample
flattened (1 for flat features). Batch statistics are per channel, over
(n, s): each channel is summed by one thread, in float64 whatever the
data's dtype, samples in order and the positions of each in eight partial
sums of a fixed pattern (normalization.h), so the
statistics and everything derived from them are the same bits for any
thread count. A thread takes whole channels (a static split), each
channel's sums and then its per-element pass, whose data the sums have
just brought into that thread's cache.
Local response normalization works on each sample alone: threads split
the samples, and every sum over a channel window runs in channel order.
The caller (fastcnn.functional) validates shapes and allocates outputs.
"""
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.math cimport sqrt
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
    void fcnn_batch_norm_channel_f32(const float *x, float *y, ptrdiff_t planes,
                                     ptrdiff_t S, ptrdiff_t stride, double center,
                                     double scale, double shift, int relu)
    void fcnn_batch_norm_channel_f64(const double *x, double *y, ptrdiff_t planes,
                                     ptrdiff_t S, ptrdiff_t stride, double center,
                                     double scale, double shift, int relu)
    void fcnn_batch_norm_grad_input_f32(const float *g, const float *relu_y,
                                        const float *x, float *gx, ptrdiff_t planes,
                                        ptrdiff_t S, ptrdiff_t stride, double mean,
                                        double scale, double slope, double shift)
    void fcnn_batch_norm_grad_input_f64(const double *g, const double *relu_y,
                                        const double *x, double *gx,
                                        ptrdiff_t planes, ptrdiff_t S,
                                        ptrdiff_t stride, double mean, double scale,
                                        double slope, double shift)
    void fcnn_lrn_forward_f32(const float *x, float *y, float *scale, ptrdiff_t C,
                              ptrdiff_t S, ptrdiff_t size, double ratio, double beta,
                              double k)
    void fcnn_lrn_forward_f64(const double *x, double *y, double *scale, ptrdiff_t C,
                              ptrdiff_t S, ptrdiff_t size, double ratio, double beta,
                              double k)
    void fcnn_lrn_backward_f32(const float *g, const float *x, const float *y,
                               const float *scale, float *gx, ptrdiff_t C,
                               ptrdiff_t S, ptrdiff_t size, double beta, double coef)
    void fcnn_lrn_backward_f64(const double *g, const double *x, const double *y,
                               const double *scale, double *gx, ptrdiff_t C,
                               ptrdiff_t S, ptrdiff_t size, double beta, double coef)
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


cdef inline void feature_moments(const floating *x, Py_ssize_t N, Py_ssize_t C,
                                 Py_ssize_t c0, Py_ssize_t c1, double *mean,
                                 double *var) noexcept nogil:
    """Mean and biased variance of flat features [c0, c1), two passes (the
    second about the mean, which keeps the variance exact for data far from
    zero), each in normalization.h's fixed order."""
    cdef Py_ssize_t c
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


cdef inline void channel_moments(const floating *x, Py_ssize_t N, Py_ssize_t C,
                                 Py_ssize_t S, Py_ssize_t c, double *mean,
                                 double *var) noexcept nogil:
    """Mean and biased variance of channel c over every (n, s), as above."""
    if floating is float:
        mean[c] = fcnn_channel_sum_f32(x + c * S, N, S, C * S) / (N * S)
        var[c] = fcnn_channel_squares_f32(x + c * S, N, S, C * S, mean[c]) / (N * S)
    else:
        mean[c] = fcnn_channel_sum_f64(x + c * S, N, S, C * S) / (N * S)
        var[c] = fcnn_channel_squares_f64(x + c * S, N, S, C * S, mean[c]) / (N * S)


cdef inline void training_coefficients(
        Py_ssize_t c, Py_ssize_t count, const floating *weight,
        const floating *bias, floating *running_mean, floating *running_var,
        bint update_running, double momentum, double eps, const double *mean,
        double *invstd, double *scale, double *shift) noexcept nogil:
    """Channel c's invstd, scale (weight * invstd) and shift (bias) from its
    mean and biased variance (in shift on entry); the running statistics
    move towards the mean and the unbiased variance."""
    cdef double m = mean[c], v = shift[c], unbiased
    invstd[c] = 1.0 / sqrt(v + eps)
    scale[c] = weight[c] * invstd[c]
    shift[c] = bias[c]
    if update_running:
        running_mean[c] = <floating>((1.0 - momentum) * running_mean[c] + momentum * m)
        if count > 1:
            unbiased = v * count / (count - 1)
            running_var[c] = <floating>(
                (1.0 - momentum) * running_var[c] + momentum * unbiased)


cdef inline void scale_row(const floating *x, floating *y, Py_ssize_t C,
                           const double *center, const double *scale,
                           const double *shift, bint relu) noexcept nogil:
    if floating is float:
        fcnn_batch_norm_row_f32(x, y, C, center, scale, shift, relu)
    else:
        fcnn_batch_norm_row_f64(x, y, C, center, scale, shift, relu)


cdef inline void scale_planes(const floating *x, floating *y, Py_ssize_t planes,
                              Py_ssize_t S, Py_ssize_t stride, double center,
                              double scale, double shift, bint relu) noexcept nogil:
    if floating is float:
        fcnn_batch_norm_channel_f32(x, y, planes, S, stride, center, scale, shift, relu)
    else:
        fcnn_batch_norm_channel_f64(x, y, planes, S, stride, center, scale, shift, relu)


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
    weight + bias, in float64 before rounding to y (centred first: no
    cancellation for data far from 0). With update_running, running_mean
    and running_var move towards the batch mean and the unbiased variance
    by ``momentum``; a channel with a single value (N * S == 1) has no
    unbiased variance and keeps its running_var. With relu, y is then
    max(y, 0) as a ReLU layer computes it (NaN stays). scale, shift: (C,)
    scratch.

    A thread takes a whole channel: its statistics, then its planes of y,
    which the statistics' passes have just brought into its cache. Flat
    features (S = 1) are summed by blocks of channels and scaled a sample's
    row at a time.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2]
    cdef Py_ssize_t count = N * S, c, b, c0, c1, n
    cdef const floating *px = &x[0, 0, 0]
    cdef floating *py = &y[0, 0, 0]
    cdef floating *prm = &running_mean[0] if running_mean is not None else NULL
    cdef floating *prv = &running_var[0] if running_var is not None else NULL
    with nogil:
        if S == 1:
            with parallel(num_threads=n_threads):
                for b in prange((C + FEATURE_BLOCK - 1) // FEATURE_BLOCK,
                                schedule='static'):
                    c0 = b * FEATURE_BLOCK
                    c1 = min(C, c0 + FEATURE_BLOCK)
                    feature_moments(px, N, C, c0, c1, &mean[0], &shift[0])
                    for c in range(c0, c1):
                        training_coefficients(c, count, &weight[0], &bias[0], prm,
                                              prv, update_running, momentum, eps,
                                              &mean[0], &invstd[0], &scale[0],
                                              &shift[0])
                for n in prange(N, schedule='static'):
                    scale_row(px + n * C, py + n * C, C, &mean[0], &scale[0],
                              &shift[0], relu)
        else:
            for c in prange(C, num_threads=n_threads, schedule='static'):
                channel_moments(px, N, C, S, c, &mean[0], &shift[0])
                training_coefficients(c, count, &weight[0], &bias[0], prm, prv,
                                      update_running, momentum, eps, &mean[0],
                                      &invstd[0], &scale[0], &shift[0])
                scale_planes(px + c * S, py + c * S, N, S, C * S, mean[c], scale[c],
                             shift[c], relu)


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
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2], c, n
    cdef const floating *px = &x[0, 0, 0]
    cdef floating *py = &y[0, 0, 0]
    with nogil:
        for c in range(C):
            center[c] = running_mean[c]
            scale[c] = weight[c] / sqrt(<double>running_var[c] + eps)
            shift[c] = bias[c]
        if S == 1:
            for n in prange(N, num_threads=n_threads, schedule='static'):
                scale_row(px + n * C, py + n * C, C, &center[0], &scale[0],
                          &shift[0], relu)
        else:
            for c in prange(C, num_threads=n_threads, schedule='static'):
                scale_planes(px + c * S, py + c * S, N, S, C * S, center[c], scale[c],
                             shift[c], relu)


cdef inline void gradient_coefficients(
        Py_ssize_t c, double count, const floating *weight, const double *invstd,
        floating *grad_weight, floating *grad_bias, double *scale,
        double *shift, double *slope) noexcept nogil:
    """Channel c's grad_bias, grad_weight and the factors of its grad_x
    (scale, shift, slope) from its sums of v and v * (x - mean), which
    scale and shift hold on entry."""
    cdef double sg = scale[c], sgx = shift[c], a
    grad_bias[c] = <floating>sg
    grad_weight[c] = <floating>(sgx * invstd[c])
    a = weight[c] * invstd[c]
    scale[c] = a
    shift[c] = -a * sg / count
    slope[c] = -a * invstd[c] * invstd[c] * sgx / count


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

    Threads split the work as the forward pass does: a whole channel at a
    time (its sums, then its planes of grad_x), flat features by blocks of
    channels for the sums and by samples for grad_x.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2]
    cdef Py_ssize_t c, b, c0, c1, n
    cdef double count = N * S
    cdef const floating *g = &grad_y[0, 0, 0]
    cdef const floating *px = &x[0, 0, 0]
    cdef floating *gx = &grad_x[0, 0, 0] if grad_x is not None else NULL
    cdef const floating *relu_y = NULL
    cdef const floating *relu_at
    cdef Py_ssize_t rows = N if grad_x is not None else 0
    if relu_output is not None:
        relu_y = &relu_output[0, 0, 0]
    with nogil:
        if S == 1:
            with parallel(num_threads=n_threads):
                for b in prange((C + FEATURE_BLOCK - 1) // FEATURE_BLOCK,
                                schedule='static'):
                    c0 = b * FEATURE_BLOCK
                    c1 = min(C, c0 + FEATURE_BLOCK)
                    if floating is float:
                        fcnn_feature_gradient_sums_f32(g, relu_y, px, N, C, c0, c1,
                                                       &mean[0], &scale[0], &shift[0])
                    else:
                        fcnn_feature_gradient_sums_f64(g, relu_y, px, N, C, c0, c1,
                                                       &mean[0], &scale[0], &shift[0])
                    for c in range(c0, c1):
                        gradient_coefficients(c, count, &weight[0], &invstd[0],
                                              &grad_weight[0], &grad_bias[0],
                                              &scale[0], &shift[0], &slope[0])
                for n in prange(rows, schedule='static'):
                    relu_at = relu_y + n * C if relu_y != NULL else NULL
                    if floating is float:
                        fcnn_batch_norm_grad_input_row_f32(
                            g + n * C, relu_at, px + n * C, gx + n * C, C,
                            &mean[0], &scale[0], &slope[0], &shift[0])
                    else:
                        fcnn_batch_norm_grad_input_row_f64(
                            g + n * C, relu_at, px + n * C, gx + n * C, C,
                            &mean[0], &scale[0], &slope[0], &shift[0])
        else:
            for c in prange(C, num_threads=n_threads, schedule='static'):
                relu_at = relu_y + c * S if relu_y != NULL else NULL
                if floating is float:
                    fcnn_channel_gradient_sums_f32(g + c * S, relu_at, px + c * S, N,
                                                   S, C * S, mean[c], &scale[c],
                                                   &shift[c])
                else:
                    fcnn_channel_gradient_sums_f64(g + c * S, relu_at, px + c * S, N,
                                                   S, C * S, mean[c], &scale[c],
                                                   &shift[c])
                gradient_coefficients(c, count, &weight[0], &invstd[0],
                                      &grad_weight[0], &grad_bias[0], &scale[0],
                                      &shift[0], &slope[0])
                if rows == 0:
                    continue
                if floating is float:
                    fcnn_batch_norm_grad_input_f32(g + c * S, relu_at, px + c * S,
                                                   gx + c * S, N, S, C * S, mean[c],
                                                   scale[c], slope[c], shift[c])
                else:
                    fcnn_batch_norm_grad_input_f64(g + c * S, relu_at, px + c * S,
                                                   gx + c * S, N, S, C * S, mean[c],
                                                   scale[c], slope[c], shift[c])


def local_response_norm_forward(const floating[:, :, ::1] x,
                                floating[:, :, ::1] y,
                                floating[:, :, ::1] scale,
                                Py_ssize_t size, double alpha, double beta,
                                double k, int n_threads):
    """scale[n, c, s] = k + alpha / size * sum of x[n, c', s]^2 over
    c' in [c - size // 2, c + (size - 1) // 2] (channels outside [0, C)
    count as zeros); y = x * scale^-beta. scale may be None (inference):
    y is the same, from the same rounded scale. Threads split the samples
    (normalization.h's fcnn_lrn_forward)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2], n
    cdef floating *keep = &scale[0, 0, 0] if scale is not None else NULL
    cdef double ratio = alpha / size
    with nogil:
        for n in prange(N, num_threads=n_threads, schedule='static'):
            if floating is float:
                fcnn_lrn_forward_f32(&x[n, 0, 0], &y[n, 0, 0],
                                     keep + n * C * S if keep != NULL else NULL,
                                     C, S, size, ratio, beta, k)
            else:
                fcnn_lrn_forward_f64(&x[n, 0, 0], &y[n, 0, 0],
                                     keep + n * C * S if keep != NULL else NULL,
                                     C, S, size, ratio, beta, k)


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
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2], n
    cdef double coef = 2.0 * alpha * beta / size
    with nogil:
        for n in prange(N, num_threads=n_threads, schedule='static'):
            if floating is float:
                fcnn_lrn_backward_f32(&grad_y[n, 0, 0], &x[n, 0, 0], &y[n, 0, 0],
                                      &scale[n, 0, 0], &grad_x[n, 0, 0], C, S, size,
                                      beta, coef)
            else:
                fcnn_lrn_backward_f64(&grad_y[n, 0, 0], &x[n, 0, 0], &y[n, 0, 0],
                                      &scale[n, 0, 0], &grad_x[n, 0, 0], C, S, size,
                                      beta, coef)
