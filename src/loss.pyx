"""The losses: softmax cross-entropy (classification) and the squared error
(regression), each the mean loss over a batch (or its mean weighted by the
rows' weights) and its gradient with respect to the scores, in one pass
over each row; and the softmax of rows of scores (class probabilities).

Single-threaded: a batch of scores is small (N x outputs), and the loss is
summed over rows in row order, in double precision, so its bits are fixed
whatever the thread count of the rest of a step. The caller
(fastcnn.functional) validates shapes; cross-entropy's target values are
checked here, one compare per row (two NumPy reductions cost more than the
loss on small batches).
"""
from cython cimport floating
from libc.math cimport exp, log

# int32 targets take half the memory of intp ones for a large training set
ctypedef fused class_index:
    int
    Py_ssize_t


cdef inline double shifted_exps(const floating *row, Py_ssize_t K,
                                floating *out, double *top) noexcept nogil:
    """out[k] = exp(row[k] - m) for the row's maximum m (no overflow), which
    goes to *top; returns the sum of the exponentials, in double precision."""
    cdef Py_ssize_t k
    cdef double m = row[0], total = 0, e
    for k in range(1, K):
        if row[k] > m:
            m = row[k]
    for k in range(K):
        e = exp(row[k] - m)
        total += e
        out[k] = <floating> e
    top[0] = m
    return total


def softmax_rows(const floating[:, ::1] logits, floating[:, ::1] out):
    """out[n, k] = exp(logits[n, k] - m) / sum_j exp(logits[n, j] - m), m
    the row's maximum (no overflow), the sum in double precision. A row
    holding a NaN, or +inf (inf - inf), is NaN."""
    cdef Py_ssize_t N = logits.shape[0], K = logits.shape[1], n, k
    cdef double top, scale
    with nogil:
        for n in range(N):
            scale = 1.0 / shifted_exps(&logits[n, 0], K, &out[n, 0], &top)
            for k in range(K):
                out[n, k] = <floating> (out[n, k] * scale)


def softmax_cross_entropy(const floating[:, ::1] logits,
                          const class_index[::1] target,
                          floating[:, ::1] grad,
                          const double[::1] weight=None):
    """Returns mean_n(log sum_k exp(logits[n, k]) - logits[n, target[n]])
    and writes grad = (softmax(logits) - onehot(target)) / N. The row
    maximum is subtracted before exponentiating (no overflow). A target
    outside [0, K) raises ValueError before anything is written.

    With ``weight`` (N non-negative values), the weighted mean: the loss is
    sum_n weight[n] * loss_n / W and grad's row n is multiplied by
    weight[n] * N / W, W = sum_n weight[n] (summed in row order; W = 0
    gives loss 0 and grad 0). Unit weights give the bits of no weights:
    every factor weight[n] / W is then exactly 1 / N."""
    cdef Py_ssize_t N = logits.shape[0], K = logits.shape[1], n, k, bad = 0
    cdef double top, total, ratio, row_scale, loss = 0, scale = 1.0 / N
    cdef double weight_sum = 0
    cdef bint weighted = weight is not None
    for n in range(N):
        bad += target[n] < 0 or target[n] >= K
    if bad:
        raise ValueError(f"target values must lie in [0, {K}), got {bad} outside")
    if weighted:
        weight_sum = _sum(weight)
        scale = 1.0 / weight_sum if weight_sum > 0 else 0.0
    row_scale = scale
    with nogil:
        for n in range(N):
            # one exponential per score, as they take most of the time:
            # kept in grad, then scaled by 1 / (row total * N)
            total = shifted_exps(&logits[n, 0], K, &grad[n, 0], &top)
            if weighted:
                row_scale = weight[n] * scale
                loss += weight[n] * (log(total) - (logits[n, target[n]] - top))
            else:
                loss += log(total) - (logits[n, target[n]] - top)
            ratio = row_scale / total
            for k in range(K):
                grad[n, k] = <floating> (grad[n, k] * ratio)
            grad[n, target[n]] -= <floating> row_scale
    if not weighted:
        return loss / N
    return loss / weight_sum if weight_sum > 0 else 0.0


def squared_error(const floating[:, ::1] prediction,
                  const floating[:, ::1] target,
                  floating[:, ::1] grad,
                  const double[::1] weight=None):
    """Returns sum_{n,k} (prediction[n, k] - target[n, k])^2 / (2 N) and
    writes grad = (prediction - target) / N: the loss whose gradient
    MLPRegressor's backpropagation uses (halved, so that the gradient has
    no factor 2; summed over the outputs, not averaged). Each difference is
    taken in double precision (exact for float32) and the squares are summed
    in row order, in double precision, so the loss's bits are fixed.

    With ``weight`` (N non-negative values), the weighted mean: row n's
    squares count weight[n] times and grad's row n is (prediction -
    target) * weight[n] / W, W = sum_n weight[n] (summed in row order; W = 0
    gives loss 0 and grad 0). Unit weights give the bits of no weights."""
    cdef Py_ssize_t N = prediction.shape[0], K = prediction.shape[1], n, k
    cdef double d, w = 1, loss = 0, scale = 1.0 / N, row_scale
    cdef bint weighted = weight is not None
    if weighted:
        scale = _sum(weight)
        scale = 1.0 / scale if scale > 0 else 0.0
    row_scale = scale
    with nogil:
        for n in range(N):
            if weighted:
                w = weight[n]
                row_scale = w * scale
            for k in range(K):
                d = <double> prediction[n, k] - <double> target[n, k]
                loss += w * d * d
                grad[n, k] = <floating> (d * row_scale)
    return 0.5 * loss * scale


cdef double _sum(const double[::1] weight) noexcept nogil:
    """sum(weight), in index order (the same bits for any thread count)."""
    cdef double total = 0
    cdef Py_ssize_t n
    for n in range(weight.shape[0]):
        total += weight[n]
    return total
