"""Global average and max pooling of images and signals, and their
gradients: the functions over src/global_pooling.pyx.

Each reduces every (sample, channel) plane to one value, so that an
``(N, C, H, W)`` or ``(N, C, L)`` input gives ``(N, C)``: what PyTorch's
``AdaptiveAvgPool2d(1)`` / ``AdaptiveMaxPool2d(1)`` followed by
``Flatten`` compute. As in the pooling module, each operation is built
once for images and signals by a ``_*_call`` function, and the public 2-D
and 1-D functions are its two faces.
"""
import math

import numpy as np

from .._kernels import global_pooling as _kernels
from ._calls import KernelCall, preparable, run_unless_preparing
from ._checks import (SPATIAL, check_apart, check_shape, float_array,
                      output_array, output_pair, readable)
from ._pooling import _argmax_check, _check_plane


def _planes(a):
    """A C-contiguous (N, C, ...) array as its (N * C, plane size) view."""
    return a.reshape(a.shape[0] * a.shape[1], -1)


def _check_grad_y(grad_y, x_shape, ndim):
    """grad_y as an (N, C) float array and x_shape as ndim + 2 ints that
    agree with it on samples and channels."""
    grad_y = float_array(grad_y, "grad_y", 2, "(N, C)")
    x_shape = check_shape(x_shape, "x_shape", ndim)
    if math.prod(x_shape) > np.iinfo(np.intp).max // grad_y.itemsize:
        raise ValueError(f"x_shape {x_shape} has more elements than an array can hold")
    if grad_y.shape != x_shape[:2]:
        raise ValueError(
            f"grad_y must have shape (N, C) = {x_shape[:2]} of x_shape "
            f"{x_shape}, got {grad_y.shape}")
    return grad_y, x_shape


def _avg_call(x, ndim, out):
    x = float_array(x, "x", ndim + 2, SPATIAL[ndim])
    y = output_array(out, x.shape[:2], x.dtype)
    if out is not None:
        check_apart([("out", y)], [("x", x)])
    return KernelCall(_kernels.global_avg_pool_forward,
                      (_planes(x), y.reshape(-1)), y)


def _avg_backward_call(grad_y, x_shape, ndim, out):
    grad_y, x_shape = _check_grad_y(grad_y, x_shape, ndim)
    grad_x = output_array(out, x_shape, grad_y.dtype)
    if out is not None:
        check_apart([("out", grad_x)], [("grad_y", grad_y)])
    return KernelCall(_kernels.global_avg_pool_backward,
                      (grad_y.reshape(-1), _planes(grad_x)), grad_x)


def _max_call(x, ndim, out):
    _check_plane(np.shape(x)[2:], "x")   # before a copy of such a plane
    x = float_array(x, "x", ndim + 2, SPATIAL[ndim])
    y, argmax = output_pair(out, "(y, argmax)")
    y = output_array(y, x.shape[:2], x.dtype, "out[0] (y)")
    argmax = output_array(argmax, x.shape[:2], np.int32, "out[1] (argmax)")
    if out is not None:
        check_apart([("out[0] (y)", y), ("out[1] (argmax)", argmax)], [("x", x)])
    return KernelCall(_kernels.global_max_pool_forward,
                      (_planes(x), y.reshape(-1), argmax.reshape(-1)), (y, argmax))


def _max_backward_call(grad_y, argmax, x_shape, ndim, out):
    grad_y, x_shape = _check_grad_y(grad_y, x_shape, ndim)
    _check_plane(x_shape[2:], "x_shape")
    plane = math.prod(x_shape[2:])
    argmax = np.asarray(argmax)
    if argmax.dtype.kind not in "iu":
        raise TypeError(f"argmax must be an integer array, got dtype {argmax.dtype}")
    if argmax.shape != grad_y.shape:
        raise ValueError(
            f"argmax must have grad_y's shape {grad_y.shape}, got {argmax.shape}")
    if argmax.dtype != np.int32 and argmax.size and (
            argmax.min() < 0 or argmax.max() >= plane):
        # a wider index could wrap into range when narrowed: check it first
        raise ValueError(
            f"argmax values must index the input plane [0, {plane}), got "
            f"values in [{argmax.min()}, {argmax.max()}]")
    argmax = readable(argmax.astype(np.int32, copy=False))
    grad_x = output_array(out, x_shape, grad_y.dtype)
    if out is not None:
        check_apart([("out", grad_x)], [("grad_y", grad_y), ("argmax", argmax)])
    return KernelCall(_kernels.global_max_pool_backward,
                      (grad_y.reshape(-1), argmax.reshape(-1), _planes(grad_x)),
                      grad_x, check=_argmax_check(argmax, plane))


@preparable
def global_avg_pool2d(x, n_threads=None, out=None):
    """Mean of every (H, W) plane.

    Parameters
    ----------
    x : array of shape (N, C, H, W), float32 or float64
    n_threads : int or None
    out : array of shape (N, C), optional

    Returns
    -------
    y : array of shape (N, C)
    """
    return run_unless_preparing(_avg_call(x, 2, out), n_threads)


@preparable
def global_avg_pool2d_backward(grad_y, x_shape, n_threads=None, out=None):
    """Spread each gradient evenly over its plane.

    Parameters
    ----------
    grad_y : array of shape (N, C)
    x_shape : tuple (N, C, H, W)
    n_threads : int or None
    out : array of shape x_shape, optional

    Returns
    -------
    grad_x : array of shape x_shape, ``grad_y[n, c] / (H * W)`` everywhere
        in plane (n, c)
    """
    return run_unless_preparing(_avg_backward_call(grad_y, x_shape, 2, out),
                                n_threads)


@preparable
def global_max_pool2d(x, n_threads=None, out=None):
    """Maximum of every (H, W) plane, and where it was.

    Parameters
    ----------
    x : array of shape (N, C, H, W), float32 or float64
    n_threads : int or None
    out : tuple of arrays (y, argmax), optional

    Returns
    -------
    y : array of shape (N, C)
    argmax : int32 array of shape (N, C)
        Index ``h * W + w`` of each maximum within its plane. Ties go to
        the first maximum in row-major order; a NaN is a plane's maximum
        (the first NaN), as in :func:`max_pool2d`.
    """
    return run_unless_preparing(_max_call(x, 2, out), n_threads)


@preparable
def global_max_pool2d_backward(grad_y, argmax, x_shape, n_threads=None, out=None):
    """Route each gradient to the position of its plane's maximum.

    Parameters
    ----------
    grad_y : array of shape (N, C)
    argmax : integer array of shape (N, C)
        As returned by :func:`global_max_pool2d`.
    x_shape : tuple (N, C, H, W)
    n_threads : int or None
    out : array of shape x_shape, optional

    Returns
    -------
    grad_x : array of shape x_shape, zero except at the maxima
    """
    return run_unless_preparing(
        _max_backward_call(grad_y, argmax, x_shape, 2, out), n_threads)


@preparable
def global_avg_pool1d(x, n_threads=None, out=None):
    """Mean of every signal: x (N, C, L) -> y (N, C)."""
    return run_unless_preparing(_avg_call(x, 1, out), n_threads)


@preparable
def global_avg_pool1d_backward(grad_y, x_shape, n_threads=None, out=None):
    """Spread each gradient (N, C) evenly over its signal of x_shape
    (N, C, L): ``grad_y[n, c] / L``."""
    return run_unless_preparing(_avg_backward_call(grad_y, x_shape, 1, out),
                                n_threads)


@preparable
def global_max_pool1d(x, n_threads=None, out=None):
    """Maximum of every signal, and where it was: x (N, C, L) -> (y,
    argmax), both (N, C), argmax the position in the signal (ties to the
    first; a NaN is the maximum)."""
    return run_unless_preparing(_max_call(x, 1, out), n_threads)


@preparable
def global_max_pool1d_backward(grad_y, argmax, x_shape, n_threads=None, out=None):
    """Route each gradient (N, C) to the position of its signal's maximum;
    grad_x of x_shape (N, C, L)."""
    return run_unless_preparing(
        _max_backward_call(grad_y, argmax, x_shape, 1, out), n_threads)
