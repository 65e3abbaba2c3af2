"""Dense (linear) layers and their gradients: the functions over
src/dense.pyx."""
import functools

import numpy as np

from .._kernels import dense as _kernels
from ._calls import KernelCall, preparable, run_unless_preparing
from ._checks import (check_apart, check_bias, float_array, output_array,
                      output_pair, same_dtype)


@functools.lru_cache(maxsize=64)
def _row_offsets(n_rows, row_length):
    """Where each row of an (n_rows, row_length) array starts, for the dense
    kernels, which read the rows of their left operand in place (x, or w
    in a transposed forward: n_rows covers the longer of the two)."""
    offsets = np.arange(n_rows, dtype=np.intp) * row_length
    offsets.flags.writeable = False
    return offsets


def _check_linear(x, w, x_name="x"):
    x = float_array(x, x_name, 2, "(N, D)")
    w = float_array(w, "w", 2, "(U, D)")
    same_dtype(x_name, x, "w", w)
    return x, w


def _check_linear_forward(x, w):
    """x and w of a forward pass, checked to agree on the features."""
    x, w = _check_linear(x, w)
    if x.shape[1] != w.shape[1]:
        raise ValueError(
            f"x has {x.shape[1]} features but w (U, D) = {w.shape} expects "
            f"{w.shape[1]}")
    return x, w


@preparable
def linear(x, w, bias=None, n_threads=None, out=None, relu=False):
    """Dense layer: ``y = x w^T + bias``, or ``relu(x w^T + bias)``.

    Parameters
    ----------
    x : array of shape (N, D), float32 or float64
    w : array of shape (U, D), same dtype
    bias : array of shape (U,), default None (zero)
    n_threads : int or None
    out : array of shape (N, U), optional
        Where to write y (C-contiguous, dtype of x).
    relu : bool, default False
        Return :func:`relu` of y, the same values as applying it after, in
        one pass (its gradient: :func:`relu_backward` with this output).

    Returns
    -------
    y : array of shape (N, U)
    """
    x, w = _check_linear_forward(x, w)
    units = w.shape[0]
    bias = check_bias(bias, units, x, "(U,)")
    y = output_array(out, (x.shape[0], units), x.dtype)
    if out is not None:
        check_apart([("out", y)], [("x", x), ("w", w), ("bias", bias)])
    return run_unless_preparing(
        KernelCall(_kernels.dense_forward,
                   (x, w, bias, y, _row_offsets(max(x.shape[0], units), x.shape[1]),
                    bool(relu)), y),
        n_threads)


@preparable
def linear_backward_input(grad_y, w, n_threads=None, out=None):
    """Gradient of :func:`linear` with respect to x: ``grad_y w``.

    Parameters
    ----------
    grad_y : array of shape (N, U)
    w : array of shape (U, D)
    out : array of shape (N, D), optional

    Returns
    -------
    grad_x : array of shape (N, D)
    """
    grad_y, w = _check_linear(grad_y, w, "grad_y")
    if grad_y.shape[1] != w.shape[0]:
        raise ValueError(
            f"grad_y has {grad_y.shape[1]} columns but w (U, D) = {w.shape} "
            f"has {w.shape[0]} units")
    grad_x = output_array(out, (grad_y.shape[0], w.shape[1]), w.dtype)
    if out is not None:
        check_apart([("out", grad_x)], [("grad_y", grad_y), ("w", w)])
    return run_unless_preparing(
        KernelCall(_kernels.dense_backward_input,
                   (grad_y, w, grad_x, _row_offsets(*grad_y.shape)), grad_x),
        n_threads)


@preparable
def linear_backward_weight(x, grad_y, n_threads=None, out=None):
    """Gradients of :func:`linear` with respect to w and bias.

    ``grad_w = grad_y^T x`` and ``grad_b`` = grad_y summed over samples, each
    summed over the batch in sample order (the same bits for any thread
    count).

    Parameters
    ----------
    x : array of shape (N, D)
    grad_y : array of shape (N, U)
    out : tuple of arrays (U, D) and (U,), optional

    Returns
    -------
    grad_w : array of shape (U, D)
    grad_b : array of shape (U,)
    """
    x = float_array(x, "x", 2, "(N, D)")
    grad_y = float_array(grad_y, "grad_y", 2, "(N, U)")
    same_dtype("x", x, "grad_y", grad_y)
    if grad_y.shape[0] != x.shape[0]:
        raise ValueError(
            f"x has {x.shape[0]} samples but grad_y has {grad_y.shape[0]}")
    units = grad_y.shape[1]
    grad_w, grad_b = output_pair(out, "(grad_w, grad_b)")
    grad_w = output_array(grad_w, (units, x.shape[1]), x.dtype, "out[0] (grad_w)")
    grad_b = output_array(grad_b, (units,), x.dtype, "out[1] (grad_b)")
    if out is not None:
        check_apart([("out[0] (grad_w)", grad_w), ("out[1] (grad_b)", grad_b)],
                    [("x", x), ("grad_y", grad_y)])
    return run_unless_preparing(
        KernelCall(_kernels.dense_backward_weight, (x, grad_y, grad_w, grad_b),
                   (grad_w, grad_b)),
        n_threads)


def linear_backward(x, w, grad_y, n_threads=None):
    """Gradients through :func:`linear`: ``(grad_x, grad_w, grad_b)``."""
    x, w = _check_linear_forward(x, w)
    grad_x = linear_backward_input(grad_y, w, n_threads)
    grad_w, grad_b = linear_backward_weight(x, grad_y, n_threads)
    return grad_x, grad_w, grad_b


