"""The losses: softmax cross-entropy (classification) and the squared error
(regression), each the mean loss over a batch and its gradient with respect
to the scores, in one pass over each row.

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


def softmax_cross_entropy(const floating[:, ::1] logits,
                          const class_index[::1] target,
                          floating[:, ::1] grad):
    """Returns mean_n(log sum_k exp(logits[n, k]) - logits[n, target[n]])
    and writes grad = (softmax(logits) - onehot(target)) / N. The row
    maximum is subtracted before exponentiating (no overflow). A target
    outside [0, K) raises ValueError before anything is written."""
    cdef Py_ssize_t N = logits.shape[0], K = logits.shape[1], n, k, bad = 0
    cdef double top, total, e, ratio, loss = 0, scale = 1.0 / N
    for n in range(N):
        bad += target[n] < 0 or target[n] >= K
    if bad:
        raise ValueError(f"target values must lie in [0, {K}), got {bad} outside")
    with nogil:
        for n in range(N):
            top = logits[n, 0]
            for k in range(1, K):
                if logits[n, k] > top:
                    top = logits[n, k]
            # one exponential per score, as they take most of the time:
            # kept in grad, then scaled by 1 / (row total * N)
            total = 0
            for k in range(K):
                e = exp(logits[n, k] - top)
                total += e
                grad[n, k] = <floating> e
            loss += log(total) - (logits[n, target[n]] - top)
            ratio = scale / total
            for k in range(K):
                grad[n, k] = <floating> (grad[n, k] * ratio)
            grad[n, target[n]] -= <floating> scale
    return loss / N


def squared_error(const floating[:, ::1] prediction,
                  const floating[:, ::1] target,
                  floating[:, ::1] grad):
    """Returns sum_{n,k} (prediction[n, k] - target[n, k])^2 / (2 N) and
    writes grad = (prediction - target) / N: the loss whose gradient
    MLPRegressor's backpropagation uses (halved, so that the gradient has
    no factor 2; summed over the outputs, not averaged). Each difference is
    taken in double precision (exact for float32) and the squares are summed
    in row order, in double precision, so the loss's bits are fixed."""
    cdef Py_ssize_t N = prediction.shape[0], K = prediction.shape[1], n, k
    cdef double d, loss = 0, scale = 1.0 / N
    with nogil:
        for n in range(N):
            for k in range(K):
                d = <double> prediction[n, k] - <double> target[n, k]
                loss += d * d
                grad[n, k] = <floating> (d * scale)
    return 0.5 * loss * scale
