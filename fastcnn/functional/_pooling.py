"""Max, average and L2 pooling of images and signals, and their
gradients: the functions over src/pooling.pyx.

As in the correlation module, each operation is built once for images and
signals (``ndim`` 2 or 1) by a ``_*_call`` function, and the public 2-D
and 1-D functions are its two faces.
"""
import math

import numpy as np

from .._kernels import pooling as _kernels
from ._calls import KernelCall, preparable, run_unless_preparing
from ._checks import (SPATIAL, as_4d, cached_for_ints, check_apart,
                      check_shape, float_array, output_array, output_pair,
                      output_size_unchecked, per_axis, readable, same_dtype,
                      spatial2d)


@cached_for_ints
def _pool_geometry(spatial, size, stride, ndim):
    """Validated (size, stride, output spatial shape), all per axis."""
    size = per_axis(size, "size", ndim, 1)
    stride = size if stride is None else per_axis(stride, "stride", ndim, 1)
    for s, k in zip(spatial, size):
        if k > s:
            raise ValueError(
                f"pool size {size} is larger than the input {tuple(spatial)}")
    out = tuple(output_size_unchecked(s, k, st)
                for s, k, st in zip(spatial, size, stride))
    return size, stride, out


def _check_plane(spatial, name):
    """argmax indexes a plane with int32 (half the memory of int64, and the
    fused kernels' layout): refuse planes it cannot index."""
    plane = math.prod(spatial)
    if plane > _MAX_PLANE:
        raise ValueError(
            f"max pooling indexes each plane of {name} with int32, and a "
            f"plane of {tuple(spatial)} has {plane} elements, more than "
            f"{_MAX_PLANE}: split it (pool it in pieces)")


def _argmax_check(argmax, plane):
    """The check run after a backward kernel that skips, and counts, the
    argmax values outside a plane of ``plane`` elements."""
    def check(n_bad):
        if n_bad:
            raise ValueError(
                f"argmax values must index the input plane [0, {plane}), got "
                f"{n_bad} outside it (values in [{argmax.min()}, {argmax.max()}])")
    return check


# The 2x2 kernel's last block in a plane also computes (and drops) up to 16
# windows past its end, whose indices must stay within int32 as well.
_MAX_PLANE = np.iinfo(np.int32).max - 32


def _max_pool_call(x, size, stride, ndim, out, relu, return_argmax):
    _check_plane(np.shape(x)[2:], "x")   # before a copy of such a plane
    x = float_array(x, "x", ndim + 2, SPATIAL[ndim])
    size, stride, out_spatial = _pool_geometry(x.shape[2:], size, stride, ndim)
    shape = x.shape[:2] + out_spatial
    if return_argmax:
        y, argmax = output_pair(out, "(y, argmax)")
        y = output_array(y, shape, x.dtype, "out[0] (y)")
        argmax = output_array(argmax, shape, np.int32, "out[1] (argmax)")
        outputs = [("out[0] (y)", y), ("out[1] (argmax)", argmax)]
    else:
        y, argmax = output_array(out, shape, x.dtype), None
        outputs = [("out", y)]
    if out is not None:
        check_apart(outputs, [("x", x)])
    (kh, kw), (sh, sw) = spatial2d(size, ndim, 1), spatial2d(stride, ndim, 1)
    return KernelCall(_kernels.max_pool2d_forward,
                      (as_4d(x, ndim), as_4d(y, ndim),
                       None if argmax is None else as_4d(argmax, ndim),
                       kh, kw, sh, sw, bool(relu)),
                      (y, argmax) if return_argmax else y)


def _check_relu_output(relu_output, grad_y, ndim):
    """relu_output as the kernel reads it: an array of grad_y's shape and
    dtype, seen as an image; None stays None."""
    if relu_output is None:
        return None
    relu_output = float_array(relu_output, "relu_output", ndim + 2,
                              SPATIAL[ndim])
    same_dtype("grad_y", grad_y, "relu_output", relu_output)
    if relu_output.shape != grad_y.shape:
        raise ValueError(
            f"relu_output must have grad_y's shape {grad_y.shape}, got "
            f"{relu_output.shape}")
    return as_4d(relu_output, ndim)


def _max_pool_backward_call(grad_y, argmax, x_shape, ndim, out, relu_output):
    grad_y = float_array(grad_y, "grad_y", ndim + 2, SPATIAL[ndim])
    relu_output = _check_relu_output(relu_output, grad_y, ndim)
    x_shape = check_shape(x_shape, "x_shape", ndim)
    _check_plane(x_shape[2:], "x_shape")
    argmax = np.asarray(argmax)
    if argmax.dtype.kind not in "iu":
        raise TypeError(f"argmax must be an integer array, got dtype {argmax.dtype}")
    if argmax.shape != grad_y.shape:
        raise ValueError(
            f"argmax must have grad_y's shape {grad_y.shape}, got {argmax.shape}")
    if grad_y.shape[:2] != x_shape[:2]:
        raise ValueError(
            f"grad_y {grad_y.shape} and x_shape {x_shape} must agree on "
            "samples and channels")
    plane = math.prod(x_shape[2:])
    if argmax.dtype != np.int32:
        # a wider index could wrap into range when narrowed: check it first
        if argmax.size and (argmax.min() < 0 or argmax.max() >= plane):
            raise ValueError(
                f"argmax values must index the input plane [0, {plane}), "
                f"got values in [{argmax.min()}, {argmax.max()}]")
    argmax = readable(argmax.astype(np.int32, copy=False))
    grad_x = output_array(out, x_shape, grad_y.dtype)
    if out is not None:
        check_apart([("out", grad_x)], [("grad_y", grad_y), ("argmax", argmax),
                                        ("relu_output", relu_output)])
    return KernelCall(_kernels.max_pool2d_backward,
                      (as_4d(grad_y, ndim), as_4d(argmax, ndim),
                       as_4d(grad_x, ndim), relu_output), grad_x,
                      check=_argmax_check(argmax, plane))


def _avg_pool_call(x, size, stride, ndim, out):
    x = float_array(x, "x", ndim + 2, SPATIAL[ndim])
    size, stride, out_spatial = _pool_geometry(x.shape[2:], size, stride, ndim)
    y = output_array(out, x.shape[:2] + out_spatial, x.dtype)
    if out is not None:
        check_apart([("out", y)], [("x", x)])
    (kh, kw), (sh, sw) = spatial2d(size, ndim, 1), spatial2d(stride, ndim, 1)
    return KernelCall(_kernels.avg_pool2d_forward,
                      (as_4d(x, ndim), as_4d(y, ndim), kh, kw, sh, sw), y)


def _avg_pool_backward_call(grad_y, x_shape, size, stride, ndim, out):
    grad_y = float_array(grad_y, "grad_y", ndim + 2, SPATIAL[ndim])
    x_shape = check_shape(x_shape, "x_shape", ndim)
    size, stride, out_spatial = _pool_geometry(x_shape[2:], size, stride, ndim)
    if grad_y.shape != x_shape[:2] + out_spatial:
        raise ValueError(
            f"grad_y must have the pooled shape {x_shape[:2] + out_spatial}, "
            f"got {grad_y.shape}")
    grad_x = output_array(out, x_shape, grad_y.dtype)
    if out is not None:
        check_apart([("out", grad_x)], [("grad_y", grad_y)])
    (kh, kw), (sh, sw) = spatial2d(size, ndim, 1), spatial2d(stride, ndim, 1)
    return KernelCall(_kernels.avg_pool2d_backward,
                      (as_4d(grad_y, ndim), as_4d(grad_x, ndim), kh, kw, sh, sw),
                      grad_x)


@preparable
def max_pool2d(x, size, stride=None, n_threads=None, out=None, relu=False,
               return_argmax=True):
    """Maximum over each (KH, KW) window, and where it was.

    Parameters
    ----------
    x : array of shape (N, C, H, W), float32 or float64
    size : int or (int, int)
        Window height and width.
    stride : int or (int, int), default None
        Step between windows; None means ``size`` (windows that tile).
        A stride smaller than the size makes windows overlap.
    n_threads : int or None
    out : tuple of arrays (y, argmax), optional
        The array y alone when ``return_argmax`` is False.
    relu : bool, default False
        Return ``relu(y)`` (negative maxima become 0, NaN stays NaN), the
        same bits as ``max_pool2d(relu(x))`` with one pass over the data
        instead of two: ReLU keeps order, so it commutes with a maximum.
        The ReLU's gradient is then :func:`max_pool2d_backward`'s
        ``relu_output``.
    return_argmax : bool, default True
        Also find where each maximum was, which the gradient needs; False
        returns y alone, computed without them (inference).

    Returns
    -------
    y : array of shape (N, C, Ho, Wo)
        ``Ho = (H - KH) // sh + 1``, likewise ``Wo``.
    argmax : int32 array of shape (N, C, Ho, Wo)
        Index ``h * W + w`` of each maximum within its (H, W) plane. Ties
        go to the first maximum in row-major order; a NaN is a window's
        maximum (the first NaN). Only when ``return_argmax`` is True.
    """
    return run_unless_preparing(
        _max_pool_call(x, size, stride, ndim=2, out=out, relu=relu,
                       return_argmax=return_argmax),
        n_threads)


@preparable
def max_pool2d_backward(grad_y, argmax, x_shape, n_threads=None, out=None,
                        relu_output=None):
    """Route each output gradient to the input its window selected.

    Parameters
    ----------
    grad_y : array of shape (N, C, Ho, Wo)
    argmax : integer array of shape (N, C, Ho, Wo)
        As returned by :func:`max_pool2d`.
    x_shape : tuple (N, C, H, W)
    n_threads : int or None
    out : array of shape x_shape, optional
    relu_output : array of shape (N, C, Ho, Wo), optional
        The ``y`` of ``max_pool2d(..., relu=True)``: gradients pass only
        where it is positive, the gradient of the fused ReLU as well.

    Returns
    -------
    grad_x : array of shape x_shape
        Zero except at selected inputs; where overlapping windows selected
        the same input, their gradients add up.
    """
    return run_unless_preparing(_max_pool_backward_call(
        grad_y, argmax, x_shape, ndim=2, out=out, relu_output=relu_output),
        n_threads)


@preparable
def avg_pool2d(x, size, stride=None, n_threads=None, out=None):
    """Mean over each (KH, KW) window.

    Parameters
    ----------
    x : array of shape (N, C, H, W)
    size : int or (int, int)
    stride : int or (int, int), default None (= size)
    n_threads : int or None

    Returns
    -------
    y : array of shape (N, C, Ho, Wo)
    """
    return run_unless_preparing(
        _avg_pool_call(x, size, stride, ndim=2, out=out), n_threads)


@preparable
def avg_pool2d_backward(grad_y, x_shape, size, stride=None, n_threads=None, out=None):
    """Spread each output gradient evenly over its window.

    Parameters
    ----------
    grad_y : array of shape (N, C, Ho, Wo)
    x_shape : tuple (N, C, H, W)
    size, stride
        As given to :func:`avg_pool2d`.

    Returns
    -------
    grad_x : array of shape x_shape
    """
    return run_unless_preparing(_avg_pool_backward_call(
        grad_y, x_shape, size, stride, ndim=2, out=out), n_threads)


@preparable
def max_pool1d(x, size, stride=None, n_threads=None, out=None, relu=False,
               return_argmax=True):
    """Maximum over each window of a signal, and where it was.

    Parameters
    ----------
    x : array of shape (N, C, L)
    size : int
    stride : int, default None (= size)
    n_threads : int or None
    out : tuple of arrays (y, argmax), optional
        The array y alone when ``return_argmax`` is False.
    relu : bool, default False
        Return ``relu(y)``, as :func:`max_pool2d` does.
    return_argmax : bool, default True
        Also find where each maximum was; False returns y alone, as
        :func:`max_pool2d` does.

    Returns
    -------
    y : array of shape (N, C, Lo), ``Lo = (L - size) // stride + 1``
    argmax : int32 array of shape (N, C, Lo)
        Position of each maximum within its signal; ties to the first. Only
        when ``return_argmax`` is True.
    """
    return run_unless_preparing(
        _max_pool_call(x, size, stride, ndim=1, out=out, relu=relu,
                       return_argmax=return_argmax),
        n_threads)


@preparable
def max_pool1d_backward(grad_y, argmax, x_shape, n_threads=None, out=None,
                        relu_output=None):
    """Route each output gradient to the position its window selected.

    Parameters
    ----------
    grad_y : array of shape (N, C, Lo)
    argmax : integer array of shape (N, C, Lo)
    x_shape : tuple (N, C, L)
    n_threads : int or None
    out : array of shape x_shape, optional
    relu_output : array of shape (N, C, Lo), optional
        The ``y`` of ``max_pool1d(..., relu=True)``, as in
        :func:`max_pool2d_backward`.

    Returns
    -------
    grad_x : array of shape x_shape
    """
    return run_unless_preparing(_max_pool_backward_call(
        grad_y, argmax, x_shape, ndim=1, out=out, relu_output=relu_output),
        n_threads)


@preparable
def avg_pool1d(x, size, stride=None, n_threads=None, out=None):
    """Mean over each window of a signal.

    Returns
    -------
    y : array of shape (N, C, Lo)
    """
    return run_unless_preparing(
        _avg_pool_call(x, size, stride, ndim=1, out=out), n_threads)


@preparable
def avg_pool1d_backward(grad_y, x_shape, size, stride=None, n_threads=None, out=None):
    """Spread each output gradient evenly over its window.

    Returns
    -------
    grad_x : array of shape x_shape
    """
    return run_unless_preparing(_avg_pool_backward_call(
        grad_y, x_shape, size, stride, ndim=1, out=out), n_threads)




def _l2_pool_call(x, size, stride, ndim, out):
    x = float_array(x, "x", ndim + 2, SPATIAL[ndim])
    size, stride, out_spatial = _pool_geometry(x.shape[2:], size, stride, ndim)
    y = output_array(out, x.shape[:2] + out_spatial, x.dtype)
    if out is not None:
        check_apart([("out", y)], [("x", x)])
    (kh, kw), (sh, sw) = spatial2d(size, ndim, 1), spatial2d(stride, ndim, 1)
    return KernelCall(_kernels.l2_pool2d_forward,
                      (as_4d(x, ndim), as_4d(y, ndim), kh, kw, sh, sw), y)


def _l2_pool_backward_call(grad_y, x, y, size, stride, ndim, out):
    x = float_array(x, "x", ndim + 2, SPATIAL[ndim])
    y = float_array(y, "y", ndim + 2, SPATIAL[ndim])
    grad_y = float_array(grad_y, "grad_y", ndim + 2, SPATIAL[ndim])
    same_dtype("x", x, "y", y)
    same_dtype("x", x, "grad_y", grad_y)
    size, stride, out_spatial = _pool_geometry(x.shape[2:], size, stride, ndim)
    pooled = x.shape[:2] + out_spatial
    for name, a in (("y", y), ("grad_y", grad_y)):
        if a.shape != pooled:
            raise ValueError(
                f"{name} must have the pooled shape {pooled} of x, got {a.shape}")
    grad_x = output_array(out, x.shape, x.dtype)
    if out is not None:
        check_apart([("out", grad_x)], [("grad_y", grad_y), ("x", x), ("y", y)])
    (kh, kw), (sh, sw) = spatial2d(size, ndim, 1), spatial2d(stride, ndim, 1)
    return KernelCall(_kernels.l2_pool2d_backward,
                      (as_4d(grad_y, ndim), as_4d(x, ndim), as_4d(y, ndim),
                       as_4d(grad_x, ndim), kh, kw, sh, sw), grad_x)


@preparable
def l2_pool2d(x, size, stride=None, n_threads=None, out=None):
    """L2 norm of each (KH, KW) window: ``sqrt(sum x**2)``.

    PyTorch's ``LPPool2d(2, size, stride)`` computes the same values.

    Parameters
    ----------
    x : array of shape (N, C, H, W)
    size : int or (int, int)
    stride : int or (int, int), default None (= size)
    n_threads : int or None
    out : array of shape (N, C, Ho, Wo), optional

    Returns
    -------
    y : array of shape (N, C, Ho, Wo), ``Ho = (H - KH) // sh + 1``
    """
    return run_unless_preparing(
        _l2_pool_call(x, size, stride, ndim=2, out=out), n_threads)


@preparable
def l2_pool2d_backward(grad_y, x, y, size, stride=None, n_threads=None, out=None):
    """Gradient of :func:`l2_pool2d`: each window adds ``grad_y * x / y``
    to its inputs.

    A window whose output ``y`` is 0 (all its inputs are 0) passes no
    gradient: the norm has no derivative at 0, and 0 is its subgradient
    that keeps such a window at rest.

    Parameters
    ----------
    grad_y : array of shape (N, C, Ho, Wo)
    x : array of shape (N, C, H, W), the input of :func:`l2_pool2d`
    y : array of shape (N, C, Ho, Wo), its output
    size, stride
        As given to :func:`l2_pool2d`.

    Returns
    -------
    grad_x : array of x's shape
    """
    return run_unless_preparing(_l2_pool_backward_call(
        grad_y, x, y, size, stride, ndim=2, out=out), n_threads)


@preparable
def l2_pool1d(x, size, stride=None, n_threads=None, out=None):
    """L2 norm of each window of a signal, as :func:`l2_pool2d`.

    Returns
    -------
    y : array of shape (N, C, Lo)
    """
    return run_unless_preparing(
        _l2_pool_call(x, size, stride, ndim=1, out=out), n_threads)


@preparable
def l2_pool1d_backward(grad_y, x, y, size, stride=None, n_threads=None, out=None):
    """Gradient of :func:`l2_pool1d`, as :func:`l2_pool2d_backward` (0 at
    windows whose output is 0).

    Returns
    -------
    grad_x : array of x's shape (N, C, L)
    """
    return run_unless_preparing(_l2_pool_backward_call(
        grad_y, x, y, size, stride, ndim=1, out=out), n_threads)
