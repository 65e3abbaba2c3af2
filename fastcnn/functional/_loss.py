"""Softmax, its logarithm and the cross-entropy loss: the functions over
src/loss.pyx."""
import numpy as np

from .._kernels import loss as _kernels
from ._checks import (INDEX_DTYPES, any_shape_float_array, check_apart,
                      output_array, readable)


def log_softmax(logits):
    """``log(softmax(logits))`` along the last axis, computed stably (the
    row maximum is subtracted before exponentiating)."""
    logits = any_shape_float_array(logits, "logits")
    if logits.ndim == 0 or logits.shape[-1] == 0:
        raise ValueError(
            f"logits must have at least one class along its last axis, got "
            f"shape {logits.shape}")
    shifted = logits - logits.max(axis=-1, keepdims=True)
    shifted -= np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return shifted


def softmax(logits):
    """Class probabilities from scores along the last axis, computed stably."""
    return np.exp(log_softmax(logits))


def softmax_cross_entropy(logits, target, out=None):
    """Mean cross-entropy of softmax(logits) against class indices, and its
    gradient with respect to the logits.

    Parameters
    ----------
    logits : array of shape (N, K), float32 or float64
    target : integer array of shape (N,), values in [0, K)
    out : array of shape (N, K), dtype of logits, optional
        Where to write grad.

    Returns
    -------
    loss : float
        ``mean_n (log sum_k exp(logits[n, k]) - logits[n, target[n]])``,
        accumulated in float64.
    grad : array of shape (N, K), dtype of logits
        ``(softmax(logits) - onehot(target)) / N``; written into ``out``
        when given.
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
    grad = output_array(out, logits.shape, logits.dtype)   # the kernel checks target's range
    if out is not None:
        check_apart([("out", grad)], [("logits", logits), ("target", target)])
    loss = _kernels.softmax_cross_entropy(logits, target, grad)
    return loss, grad


