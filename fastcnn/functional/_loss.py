"""Softmax, its logarithm and the losses (softmax cross-entropy, squared
error): the functions over src/loss.pyx."""
import numpy as np

from .._kernels import loss as _kernels
from ._checks import (INDEX_DTYPES, any_shape_float_array, check_apart,
                      float_array, output_array, readable, same_dtype)


def _check_logits(logits):
    logits = any_shape_float_array(logits, "logits")
    if logits.ndim == 0 or logits.shape[-1] == 0:
        raise ValueError(
            f"logits must have at least one class along its last axis, got "
            f"shape {logits.shape}")
    return logits


def log_softmax(logits):
    """``log(softmax(logits))`` along the last axis, computed stably (the
    row maximum is subtracted before exponentiating)."""
    logits = _check_logits(logits)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    shifted -= np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return shifted


def softmax(logits):
    """Class probabilities from scores along the last axis, computed stably
    (the row maximum is subtracted before exponentiating; each row's sum in
    double precision)."""
    logits = _check_logits(logits)
    rows = logits.reshape(-1, logits.shape[-1])
    out = np.empty_like(rows)
    _kernels.softmax_rows(rows, out)
    return out.reshape(logits.shape)


def _batch_weights(sample_weight, n):
    """sample_weight as N finite, non-negative float64 values (None stays
    None), or a ValueError naming it."""
    if sample_weight is None:
        return None
    weights = np.asarray(sample_weight)
    if weights.shape != (n,) or weights.dtype.kind not in "fiub":
        raise ValueError(
            f"sample_weight must be {n} real numbers, one per row, got shape "
            f"{weights.shape} and dtype {weights.dtype}")
    weights = np.ascontiguousarray(weights, dtype=np.float64)
    if not (np.isfinite(weights).all() and (weights >= 0).all()):
        raise ValueError("sample_weight must be finite and non-negative")
    return weights


def softmax_cross_entropy(logits, target, out=None, sample_weight=None):
    """Mean cross-entropy of softmax(logits) against class indices, and its
    gradient with respect to the logits; with ``sample_weight``, the
    weighted mean.

    Parameters
    ----------
    logits : array of shape (N, K), float32 or float64
    target : integer array of shape (N,), values in [0, K)
    out : array of shape (N, K), dtype of logits, optional
        Where to write grad.
    sample_weight : array of shape (N,), optional
        Non-negative weights of the rows.

    Returns
    -------
    loss : float
        ``mean_n (log sum_k exp(logits[n, k]) - logits[n, target[n]])``,
        accumulated in float64; with weights ``w``, ``sum_n w[n] loss_n /
        sum_n w[n]`` (0 when the weights sum to 0).
    grad : array of shape (N, K), dtype of logits
        ``(softmax(logits) - onehot(target)) / N``, or with weights its row
        ``n`` times ``w[n] * N / sum(w)``; written into ``out`` when given.
    """
    logits = any_shape_float_array(logits, "logits")
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (N, K), got {logits.shape}")
    target = np.asarray(target)
    n, k = logits.shape
    if n == 0 or k == 0:
        raise ValueError(f"logits must not be empty, got shape {logits.shape}")
    if target.shape != (n,) or target.dtype.kind not in "iu":
        raise ValueError(
            f"target must be {n} integer class indices, got shape "
            f"{target.shape} and dtype {target.dtype}")
    if target.dtype not in INDEX_DTYPES:
        target = target.astype(np.intp)   # wider values wrap to negative
    target = readable(target)
    weights = _batch_weights(sample_weight, n)
    grad = output_array(out, logits.shape, logits.dtype)   # the kernel checks target's range
    if out is not None:
        check_apart([("out", grad)], [("logits", logits), ("target", target),
                                      ("sample_weight", weights)])
    loss = _kernels.softmax_cross_entropy(logits, target, grad, weights)
    return loss, grad


def squared_error(prediction, target, out=None, sample_weight=None):
    """Squared-error loss of a batch, ``sum_{n,k} (prediction - target)^2 / (2N)``,
    and its gradient with respect to the predictions; with ``sample_weight``,
    the weighted mean over the rows.

    This is the loss whose gradient MLPRegressor's backpropagation uses:
    halved, so that the gradient has no factor 2, and summed over the K
    outputs, averaged over the N samples. (MLPRegressor's reported
    ``loss_curve_`` also divides by K; for one output they agree.) It equals
    PyTorch's ``0.5 * mse_loss(prediction, target, reduction='sum') / N``.

    Parameters
    ----------
    prediction : array of shape (N, K), float32 or float64
    target : array of shape (N, K), dtype of prediction
    out : array of shape (N, K), dtype of prediction, optional
        Where to write grad.
    sample_weight : array of shape (N,), optional
        Non-negative weights of the rows.

    Returns
    -------
    loss : float
        Accumulated in float64, row by row in a fixed order (the same bits
        for any thread count); with weights ``w``, ``sum_n w[n] sum_k
        (prediction - target)^2 / (2 sum(w))`` (0 when the weights sum to 0).
    grad : array of shape (N, K), dtype of prediction
        ``(prediction - target) / N``, or with weights its row ``n`` times
        ``w[n] * N / sum(w)``; written into ``out`` when given.
    """
    prediction = float_array(prediction, "prediction", 2, "(N, K)")
    target = float_array(target, "target", 2, "(N, K)")
    same_dtype("prediction", prediction, "target", target)
    if target.shape != prediction.shape:
        raise ValueError(
            f"target must have the shape of prediction {prediction.shape}, "
            f"got {target.shape}")
    weights = _batch_weights(sample_weight, len(prediction))
    grad = output_array(out, prediction.shape, prediction.dtype)
    if out is not None:
        check_apart([("out", grad)], [("prediction", prediction), ("target", target),
                                      ("sample_weight", weights)])
    loss = _kernels.squared_error(prediction, target, grad, weights)
    return loss, grad
