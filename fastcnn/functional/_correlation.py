"""Correlation (what deep learning calls convolution) of images and
signals, and its gradients: the functions over src/correlation.pyx.

Each operation is built once, for images and signals alike (``ndim`` 2 or
1: a signal runs through the image kernels as an image of height 1), by a
``_*_call`` function that validates its arguments into a KernelCall; the
public functions for 2-D and 1-D are its two faces, and the only place of
their parameters' defaults.
"""
import math

import numpy as np

from .._kernels import correlation as _kernels
from .._kernels import winograd as _winograd
from ._calls import KernelCall, preparable, run_unless_preparing
from ._checks import (KERNEL_LAYOUT, SPATIAL, as_4d, cached_for_ints,
                      check_apart, check_bias, check_shape, float_array,
                      output_array, output_pair, output_size_unchecked,
                      padding_pairs, per_axis, same_dtype, spatial2d)


def _kernel_stride(stride, out_spatial):
    """The stride the kernels get: 1 along an axis with a single output,
    where it moves no window but would still widen the kernels' frames
    (about stride columns a row) and their scratch with them."""
    return tuple(1 if o == 1 else st for st, o in zip(stride, out_spatial))


# 2**50 values is 8 PiB of float64
_MAX_SCRATCH_ITEMS = 2**50


def _span(kernel, dilation):
    """How many input positions a window covers along an axis."""
    return dilation * (kernel - 1) + 1


@cached_for_ints
def _conv_geometry(x_shape, w_shape, stride, padding, dilation, ndim):
    """Validated (stride, padding, dilation, output spatial shape), all per
    axis, padding as (before, after) pairs."""
    stride = per_axis(stride, "stride", ndim, 1)
    padding = padding_pairs(padding, ndim)
    dilation = per_axis(dilation, "dilation", ndim, 1)
    spatial, kernel = x_shape[2:], w_shape[2:]
    if x_shape[1] != w_shape[1]:
        raise ValueError(
            f"x has {x_shape[1]} channels but w expects {w_shape[1]}: "
            f"x is {SPATIAL[ndim]} = {tuple(x_shape)}, "
            f"w is {KERNEL_LAYOUT[ndim]} = {tuple(w_shape)}")
    for size, k, (before, after), d in zip(spatial, kernel, padding, dilation):
        if k > size + before + after:
            raise ValueError(
                f"kernel {tuple(kernel)} is larger than the padded input: "
                f"input {tuple(spatial)} with padding {padding}")
        if _span(k, d) > size + before + after:
            raise ValueError(
                f"dilation {dilation} leaves no output: kernel {tuple(kernel)} "
                f"then spans {tuple(_span(*kd) for kd in zip(kernel, dilation))}, "
                f"more than the input {tuple(spatial)} with padding {padding}")

    out = tuple(output_size_unchecked(s, k, st, p, d)
                for s, k, st, p, d in zip(spatial, kernel, stride, padding, dilation))
    # The kernels' frames hold a padded sample (and the patch matrix of one
    # is about K*P values): refuse sizes no memory holds before a product
    # of them leaves 64 bits (x_shape is only a tuple in the backward
    # passes).
    padded = w_shape[1] * math.prod(s + b + a for s, (b, a) in zip(spatial, padding))
    patches = math.prod(w_shape[1:]) * math.prod(out)
    if max(padded, patches) > _MAX_SCRATCH_ITEMS:
        raise ValueError(
            f"padding {padding} and kernel {tuple(kernel)} on an input of "
            f"{tuple(spatial)} need a padded sample of {padded} values and "
            f"{patches} patch values, more than any memory holds")
    return stride, padding, dilation, out


def _kernel_geometry(stride, padding, dilation, out_spatial, ndim):
    """The kernels' (sh, sw, ph, pw, dh, dw): the padding before each axis
    only, as the output size fixes the padding after it."""
    (sh, sw) = spatial2d(_kernel_stride(stride, out_spatial), ndim, 1)
    (ph, pw) = spatial2d(tuple(before for before, _ in padding), ndim, 0)
    (dh, dw) = spatial2d(dilation, ndim, 1)
    return sh, sw, ph, pw, dh, dw


# ------------------------------------------------------------ correlation

def _correlate_call(x, w, bias, stride, padding, dilation, ndim, out):
    x = float_array(x, "x", ndim + 2, SPATIAL[ndim])
    w = float_array(w, "w", ndim + 2, KERNEL_LAYOUT[ndim])
    dtype = same_dtype("x", x, "w", w)
    stride, padding, dilation, out_spatial = _conv_geometry(
        x.shape, w.shape, stride, padding, dilation, ndim)
    n_filters = w.shape[0]
    bias = check_bias(bias, n_filters, x, "(F,)")
    y = output_array(out, (x.shape[0], n_filters) + out_spatial, dtype)
    if out is not None:
        check_apart([("out", y)], [("x", x), ("w", w), ("bias", bias)])
    trim = _Trim.of(x.shape[2:], w.shape[2:], stride, padding, dilation,
                    out_spatial)
    if trim is not None:
        return trim.forward_call(x, w, bias, y, stride, dilation)
    if _winograd_is_faster(w.shape, out_spatial, stride, dilation, ndim):
        (ph, pw) = spatial2d(tuple(before for before, _ in padding), ndim, 0)
        return KernelCall(_winograd.correlate2d_forward_winograd,
                          (x, w, bias, y, ph, pw), y)
    return KernelCall(_kernels.correlate2d_forward,
                      (as_4d(x, ndim), as_4d(w, ndim), bias, as_4d(y, ndim))
                      + _kernel_geometry(stride, padding, dilation, out_spatial, ndim),
                      y)


# Fewest input channels and filters for which Winograd's F(4x4, 3x3) beats
# the direct correlation: its 36 matrix products sum over the channels (a
# product of depth C, F rows), and its transforms cost about what the
# products do when these are small.
_WINOGRAD_MIN_CHANNELS = 16
# The transforms and products run over whole 4 x 4 tiles, each row of
# tiles in slots of a multiple of 4 (src/winograd.h), so small outputs
# compute much that is dropped (8 x 8 outputs: half of what is computed,
# still faster than direct; 7 x 7: 38%, slower except with 64 channels
# or more; 4 x 4: a quarter, 1.3-2x slower). The share of the computed
# outputs that must be kept, at least.
_WINOGRAD_MIN_USE = 0.5


# The kernel gradient's transforms cost more per tile (two gathers from
# memory, x's and grad_y's, and two transforms), so it needs more channels
# (16: as fast as directly) and more of the computed outputs kept (8 x 8:
# as fast as directly).
_WINOGRAD_GRADIENT_MIN_CHANNELS = 32
_WINOGRAD_GRADIENT_MIN_USE = 0.75


def _winograd_is_faster(w_shape, out_spatial, stride, dilation, ndim,
                        min_channels=_WINOGRAD_MIN_CHANNELS, min_use=_WINOGRAD_MIN_USE):
    """Whether a forward correlation runs as Winograd's F(4x4, 3x3)
    (src/winograd.pyx): 3 x 3 kernels on images at stride 1 without
    dilation, between enough channels, with outputs that use enough of
    the tiles computed. The caller has trimmed padding past the kernel's
    span, as that kernel requires."""
    if not (ndim == 2 and tuple(w_shape[2:]) == (3, 3)
            and all(s == 1 for s in stride) and all(d == 1 for d in dilation)
            and min(w_shape[:2]) >= min_channels):
        return False
    computed = 16 * _winograd.tile_slots(*out_spatial)
    return out_spatial[0] * out_spatial[1] >= min_use * computed


def _winograd_gradient_is_faster(w_shape, out_spatial, stride, dilation, ndim):
    """The same for the kernel gradient, with its own thresholds."""
    return _winograd_is_faster(w_shape, out_spatial, stride, dilation, ndim,
                               _WINOGRAD_GRADIENT_MIN_CHANNELS,
                               _WINOGRAD_GRADIENT_MIN_USE)


class _Trim:
    """A correlation whose padding reaches past the kernel's span (its size
    when not dilated) has windows that read padding only. The kernels' frames hold the padded input, so they
    would grow with the padding, not with what the windows read; such a
    call runs instead on the region that the windows reading the input
    cover, padded explicitly once (``region``, zero outside the input), and
    the other windows' outputs are the bias alone (their gradients zero).
    Per spatial axis: ``outputs``, the slice of those windows' outputs;
    ``shape``, the region's size; ``into`` and ``taken``, where the input
    sits in the region and which part of it does. ``empty`` when no
    window reads an input value. A dilated window whose span meets the
    input may still read only zeros (between its taps): it is kept, as the
    kernels compute it right, and the region grows by the span at most."""

    @classmethod
    def of(cls, spatial, kernel, stride, padding, dilation, out_spatial):
        """The trim of a call, or None when every window's span meets the
        input (padding below the span on both sides of every axis)."""
        for k, (before, after), d in zip(kernel, padding, dilation):
            if max(before, after) >= _span(k, d):
                return cls(spatial, kernel, stride, padding, dilation, out_spatial)
        return None

    def __init__(self, spatial, kernel, stride, padding, dilation, out_spatial):
        self.outputs, self.shape, self.into, self.taken = [], [], [], []
        self.empty = False
        for size, k, s, (p, _), d, o in zip(spatial, kernel, stride, padding,
                                             dilation, out_spatial):
            k = _span(k, d)
            first = max(0, -(-(p - k + 1) // s))    # ends past the padding
            last = min(o - 1, (p + size - 1) // s)  # starts before its end
            self.empty |= first > last
            start, end = first * s, last * s + k    # padded coordinates
            low, high = max(start, p), min(end, p + size)
            self.outputs.append(slice(first, last + 1))
            self.shape.append(max(end - start, k))
            self.into.append(slice(low - start, high - start))
            self.taken.append(slice(low - p, high - p))
        whole = (slice(None),) * 2
        self.outputs, self.into, self.taken = (
            whole + tuple(v) for v in (self.outputs, self.into, self.taken))
        self.shape = tuple(self.shape)

    def _region(self, x):
        region = np.zeros(x.shape[:2] + self.shape, dtype=x.dtype)
        return region, lambda: np.copyto(region[self.into], x[self.taken])

    def forward_call(self, x, w, bias, y, stride, dilation):
        per_filter = bias.reshape((-1,) + (1,) * (y.ndim - 2))
        if self.empty:
            return KernelCall(lambda n_threads: np.copyto(y, per_filter), (), y)
        region, fill = self._region(x)
        inner = _correlate_call(region, w, bias, stride, 0, dilation, y.ndim - 2,
                                None)

        def run(n_threads):
            fill()
            inner.run(n_threads)
            np.copyto(y, per_filter)
            y[self.outputs] = inner.result
        return KernelCall(run, (), y)

    def backward_input_call(self, grad_y, w, grad_x, stride, dilation):
        if self.empty:
            return KernelCall(lambda n_threads: grad_x.fill(0), (), grad_x)
        part = np.empty_like(grad_y[self.outputs])
        inner = _correlate_backward_input_call(
            part, w, grad_x.shape[:2] + self.shape, stride, 0, dilation,
            grad_x.ndim - 2, None)

        def run(n_threads):
            np.copyto(part, grad_y[self.outputs])
            inner.run(n_threads)
            grad_x.fill(0)
            grad_x[self.taken] = inner.result[self.into]
        return KernelCall(run, (), grad_x)

    def backward_kernel_call(self, x, grad_y, grad_w, grad_b, stride, dilation):
        # every window's gradient reaches the bias, read or not
        positions = (0,) + tuple(range(2, grad_y.ndim))
        if self.empty:
            def run(n_threads):
                grad_w.fill(0)
                np.sum(grad_y, axis=positions, out=grad_b)
            return KernelCall(run, (), (grad_w, grad_b))
        region, fill = self._region(x)
        part = np.empty_like(grad_y[self.outputs])
        inner = _correlate_backward_kernel_call(
            region, part, grad_w.shape, stride, 0, dilation, x.ndim - 2,
            (grad_w, np.empty_like(grad_b)))

        def run(n_threads):
            fill()
            np.copyto(part, grad_y[self.outputs])
            inner.run(n_threads)
            np.sum(grad_y, axis=positions, out=grad_b)
        return KernelCall(run, (), (grad_w, grad_b))


def _check_grad_y(grad_y, expected_shape, dtype, ndim):
    grad_y = float_array(grad_y, "grad_y", ndim + 2, SPATIAL[ndim])
    if grad_y.dtype != dtype:
        raise TypeError(
            f"grad_y has dtype {grad_y.dtype} but the forward arrays have "
            f"dtype {dtype}; cast both to the same float dtype")
    if grad_y.shape != tuple(expected_shape):
        raise ValueError(
            f"grad_y must have the forward output's shape {tuple(expected_shape)}, "
            f"got {grad_y.shape}")
    return grad_y


# Fewest input channels for which the mirrored correlation beats the
# transposed product: its matrix product has one row per input channel, and
# the micro-kernel works on panels of 8 rows, so with fewer channels most of
# each panel is wasted (LeNet-5's second layer, C = 6, is faster transposed).
_MIRRORED_MIN_CHANNELS = 8


def _mirrored_is_plain_correlation(stride, padding, kernel, dilation):
    """At stride 1 with padding <= the span less one the mirrored form needs
    no dilation by the stride: it is the forward correlation at padding
    span - 1 - padding (each side's from the other side's)."""
    return all(s == 1 for s in stride) and all(
        max(p) <= _span(k, d) - 1 for p, k, d in zip(padding, kernel, dilation))


def _check_backward_input(grad_y, w, x_shape, stride, padding, dilation, ndim,
                          out):
    """The validated arguments of a backward-to-the-input call (``out`` is
    checked for overlap only: its shape and dtype by output_array)."""
    w = float_array(w, "w", ndim + 2, KERNEL_LAYOUT[ndim])
    x_shape = check_shape(x_shape, "x_shape", ndim)
    stride, padding, dilation, out_spatial = _conv_geometry(
        x_shape, w.shape, stride, padding, dilation, ndim)
    grad_y = _check_grad_y(grad_y, (x_shape[0], w.shape[0]) + out_spatial,
                           w.dtype, ndim)
    if isinstance(out, np.ndarray):
        check_apart([("out", out)], [("grad_y", grad_y), ("w", w)])
    return grad_y, w, x_shape, stride, padding, dilation


def _correlate_backward_input_call(grad_y, w, x_shape, stride, padding,
                                   dilation, ndim, out):
    grad_y, w, x_shape, stride, padding, dilation = _check_backward_input(
        grad_y, w, x_shape, stride, padding, dilation, ndim, out)
    trim = _Trim.of(x_shape[2:], w.shape[2:], stride, padding, dilation,
                    grad_y.shape[2:])
    if trim is not None:
        grad_x = output_array(out, x_shape, w.dtype)
        return trim.backward_input_call(grad_y, w, grad_x, stride, dilation)
    if (x_shape[1] >= _MIRRORED_MIN_CHANNELS and _mirrored_is_plain_correlation(
            stride, padding, w.shape[2:], dilation)):
        return _backward_input_mirrored_call(grad_y, w, x_shape, stride, padding,
                                             dilation, ndim, out)
    grad_x = output_array(out, x_shape, w.dtype)
    return KernelCall(_kernels.correlate2d_backward_input,
                      (as_4d(grad_y, ndim), as_4d(w, ndim), as_4d(grad_x, ndim))
                      + _kernel_geometry(stride, padding, dilation,
                                         grad_y.shape[2:], ndim), grad_x)


def _correlate_backward_kernel_call(x, grad_y, w_shape, stride, padding,
                                    dilation, ndim, out):
    x = float_array(x, "x", ndim + 2, SPATIAL[ndim])
    w_shape = check_shape(w_shape, "w_shape", ndim)
    stride, padding, dilation, out_spatial = _conv_geometry(
        x.shape, w_shape, stride, padding, dilation, ndim)
    grad_y = _check_grad_y(grad_y, (x.shape[0], w_shape[0]) + out_spatial,
                           x.dtype, ndim)
    grad_w, grad_b = output_pair(out, "(grad_w, grad_b)")
    grad_w = output_array(grad_w, w_shape, x.dtype, "out[0] (grad_w)")
    grad_b = output_array(grad_b, (w_shape[0],), x.dtype, "out[1] (grad_b)")
    if out is not None:
        check_apart([("out[0] (grad_w)", grad_w), ("out[1] (grad_b)", grad_b)],
                    [("x", x), ("grad_y", grad_y)])
    trim = _Trim.of(x.shape[2:], w_shape[2:], stride, padding, dilation,
                    out_spatial)
    if trim is not None:
        return trim.backward_kernel_call(x, grad_y, grad_w, grad_b, stride,
                                         dilation)
    if _winograd_gradient_is_faster(w_shape, out_spatial, stride, dilation, ndim):
        (ph, pw) = spatial2d(tuple(before for before, _ in padding), ndim, 0)
        return KernelCall(_winograd.correlate2d_backward_kernel_winograd,
                          (x, grad_y, grad_w, grad_b, ph, pw), (grad_w, grad_b))
    return KernelCall(_kernels.correlate2d_backward_kernel,
                      (as_4d(x, ndim), as_4d(grad_y, ndim), as_4d(grad_w, ndim),
                       grad_b)
                      + _kernel_geometry(stride, padding, dilation, out_spatial, ndim),
                      (grad_w, grad_b))


def _correlate_backward(x, w, grad_y, stride, padding, dilation, n_threads,
                        ndim):
    x = float_array(x, "x", ndim + 2, SPATIAL[ndim])
    w = float_array(w, "w", ndim + 2, KERNEL_LAYOUT[ndim])
    same_dtype("x", x, "w", w)
    grad_x = run_unless_preparing(_correlate_backward_input_call(
        grad_y, w, x.shape, stride, padding, dilation, ndim, None), n_threads)
    grad_w, grad_b = run_unless_preparing(_correlate_backward_kernel_call(
        x, grad_y, w.shape, stride, padding, dilation, ndim, None), n_threads)
    return grad_x, grad_w, grad_b


@preparable
def correlate2d(x, w, bias=None, stride=1, padding=0, dilation=1, n_threads=None,
                out=None):
    """Multi-channel 2-D correlation of a batch of images with a bank of kernels.

    A 3 x 3 kernel at stride 1 without dilation, between 16 or more input
    channels and filters, where at least half of the outputs computed in
    whole 4 x 4 tiles are kept (8 x 8 outputs and up, not 9 x 9), runs as
    Winograd's minimal filtering F(4x4, 3x3): the same function, 36
    multiplications per 4 x 4 outputs and pair of channels instead of 144,
    summed in another order and through transforms with coefficients up to
    8, so the rounding error is larger than the direct sum's: in float32 up
    to about 1e-5 of the sum of the absolute products (median 1e-7;
    directly at most a few 1e-7), and it comes from the 6 x 6 window around
    each 4 x 4 block of outputs, so an all-zero 3 x 3 window among nonzero
    neighbours can give a rounding residue instead of 0. The bits are still
    the same for any number of threads. The input gradient of such a layer
    is such a correlation too (with the mirrored kernel) and runs the same
    way.

    Parameters
    ----------
    x : array of shape (N, C, H, W), float32 or float64
        The images.
    w : array of shape (F, C, KH, KW), same dtype as x
        F kernels, each spanning all C input channels.
    bias : array of shape (F,), same dtype as x, default None
        Added to every output of filter f; None means zero.
    stride : int or (int, int), default 1
        Step between windows, per axis (height, width); at least 1.
    padding : int, (int, int) or per axis an int or a (before, after) pair, default 0
        Zeros added around the image, at least 0: an int pads every side
        alike; per axis (height, width), an int pads both sides, a pair
        (top, bottom) or (left, right) each side its own, e.g.
        ``((0, 1), (0, 1))`` for PyTorch's ``padding='same'`` with a 2 x 2
        kernel.
    dilation : int or (int, int), default 1
        Step between the taps of a window, per axis; at least 1: window
        element (a, b) reads ``x[i*sh + a*dh - ph, j*sw + b*dw - pw]``.
    n_threads : int or None, default None
        See the module documentation.

    Returns
    -------
    y : array of shape (N, F, Ho, Wo), dtype of x
        ``Ho = (H + top + bottom - dh*(KH - 1) - 1) // sh + 1`` and likewise
        ``Wo``.

    Raises
    ------
    TypeError
        A dtype that is not float32/float64, or x, w and bias differing.
    ValueError
        Wrong number of dimensions, an empty array, channel mismatch, a
        kernel larger than the padded input, a dilation that leaves no
        output, stride < 1, dilation < 1 or padding < 0.
    """
    return run_unless_preparing(
        _correlate_call(x, w, bias, stride, padding, dilation, ndim=2, out=out),
        n_threads)


def correlate2d_backward(x, w, grad_y, stride=1, padding=0, dilation=1,
                         n_threads=None):
    """Gradients of a loss through :func:`correlate2d`.

    Parameters
    ----------
    x : array of shape (N, C, H, W)
        The forward input.
    w : array of shape (F, C, KH, KW)
        The forward kernels.
    grad_y : array of shape (N, F, Ho, Wo)
        Gradient of the loss with respect to the forward output.
    stride, padding, dilation, n_threads
        As given to :func:`correlate2d`.

    Returns
    -------
    grad_x : array of shape (N, C, H, W)
        ``W^T grad_y``, see :func:`correlate2d_backward_input`.
    grad_w : array of shape (F, C, KH, KW)
        The correlation of the input with the output gradient,
        see :func:`correlate2d_backward_kernel`.
    grad_b : array of shape (F,)
        grad_y summed over samples and positions.
    """
    return _correlate_backward(x, w, grad_y, stride, padding, dilation, n_threads,
                               ndim=2)


@preparable
def correlate2d_backward_input(grad_y, w, x_shape, stride=1, padding=0,
                               dilation=1, n_threads=None, out=None):
    """Gradient with respect to the input of :func:`correlate2d`.

    This is ``W^T grad_y``: every output gradient is multiplied by the kernel
    and added back to the input positions its window covered. It equals the
    correlation of the stride-dilated, zero-padded output gradient with the
    mirrored kernel (:func:`correlate2d_backward_input_mirrored`). Whichever
    is faster is used: the mirrored correlation at stride 1 with 8 or more
    input channels, the transposed product (which needs no dilation)
    otherwise.

    Parameters
    ----------
    grad_y : array of shape (N, F, Ho, Wo)
    w : array of shape (F, C, KH, KW)
    x_shape : tuple (N, C, H, W)
        Shape of the forward input (the output size alone does not fix it
        when the stride does not divide evenly).
    stride, padding, dilation, n_threads
        As given to :func:`correlate2d`.

    Returns
    -------
    grad_x : array of shape x_shape
    """
    return run_unless_preparing(_correlate_backward_input_call(
        grad_y, w, x_shape, stride, padding, dilation, ndim=2, out=out), n_threads)


@preparable
def correlate2d_backward_kernel(x, grad_y, w_shape, stride=1, padding=0,
                                dilation=1, n_threads=None, out=None):
    """Gradients with respect to the kernels and bias of :func:`correlate2d`.

    ``grad_w[f, c, a, b] = sum_{n,i,j} grad_y[n, f, i, j] x[n, c, i*sh + a*dh - ph, j*sw + b*dw - pw]``,
    the correlation of the input with the output gradient, summed over the
    batch in a fixed order (the same bits for any thread count).

    Where :func:`correlate2d` runs as Winograd's F(4x4, 3x3), between 32
    or more channels and filters, and at least three quarters of the
    outputs computed in whole tiles are kept (12 x 12 outputs and up), so
    does this: ``grad_w = G^T dU G`` with ``dU`` the
    sum over tiles of the transformed output gradients times the
    transformed input windows, 36 products per tile and pair of channels
    instead of 144. In float32 its error is about 1e-6 of the sum of the
    absolute products; a NaN in x spoils the whole gradient of its
    channel's kernels (the transforms mix a window's 36 values).

    Parameters
    ----------
    x : array of shape (N, C, H, W)
    grad_y : array of shape (N, F, Ho, Wo)
    w_shape : tuple (F, C, KH, KW)
    stride, padding, dilation, n_threads
        As given to :func:`correlate2d`.

    Returns
    -------
    grad_w : array of shape w_shape
    grad_b : array of shape (F,)
    """
    return run_unless_preparing(_correlate_backward_kernel_call(
        x, grad_y, w_shape, stride, padding, dilation, ndim=2, out=out), n_threads)


def correlate2d_backward_input_mirrored(grad_y, w, x_shape, stride=1,
                                        padding=0, dilation=1, n_threads=None,
                                        out=None):
    """:func:`correlate2d_backward_input` as the textbook identity.

    The output gradient is dilated by the stride (``stride - 1`` zeros
    between its entries), padded by ``S - 1 - padding`` on each side (S the
    kernel's span, ``dilation*(K - 1) + 1``), and correlated with the
    mirrored kernel at the same dilation: rotated 180 degrees, with input
    and output channels swapped. Same result as the transposed product (up
    to rounding). At stride 1 it is the forward correlation at padding
    ``S - 1 - padding``; with stride s it multiplies by zeros s*s times
    more often. Parameters and return value as for
    :func:`correlate2d_backward_input`.
    """
    checked = _check_backward_input(grad_y, w, x_shape, stride, padding,
                                    dilation, 2, out)
    return run_unless_preparing(
        _backward_input_mirrored_call(*checked, ndim=2, out=out), n_threads)


def _backward_input_mirrored_call(grad_y, w, x_shape, stride, padding,
                                  dilation, ndim, out):
    """The mirrored form on arguments already through _check_backward_input:
    a forward correlation of (the dilated) grad_y with the mirrored kernel,
    both refreshed from grad_y and w before each run of the call."""
    out_spatial = grad_y.shape[2:]
    kernel = w.shape[2:]
    mirrored = np.empty((w.shape[1], w.shape[0]) + kernel, dtype=w.dtype)
    flat_w = w.reshape(w.shape[0], w.shape[1], -1)
    flat_mirrored = mirrored.reshape(w.shape[1], w.shape[0], -1)

    def mirror(n_threads):
        _kernels.mirror_kernel(flat_w, flat_mirrored, n_threads)

    spans = tuple(_span(k, d) for k, d in zip(kernel, dilation))
    if _mirrored_is_plain_correlation(stride, padding, kernel, dilation):
        # no dilation by the stride needed: the frame is the forward's own
        # zero padding
        frame_padding = tuple((k - 1 - before, k - 1 - after)
                              for k, (before, after) in zip(spans, padding))
        call = _correlate_call(grad_y, mirrored, None, 1, frame_padding,
                               dilation, ndim, out)
        call.before = mirror
        return call
    # Place the stride-dilated gradient in a zero frame of size input +
    # span - 1: output position i sits at i*stride + (span - 1 - padding
    # before), clipped where that padding exceeds span - 1 (those positions
    # read only padding).
    frame_shape = tuple(s + k - 1 for s, k in zip(x_shape[2:], spans))
    frame = np.zeros(grad_y.shape[:2] + frame_shape, dtype=w.dtype)
    index_frame, index_grad = [slice(None)] * 2, [slice(None)] * 2
    for o, s, k, (p, _), size in zip(out_spatial, stride, spans, padding,
                                     frame_shape):
        positions = np.arange(o) * s + (k - 1 - p)
        keep = (positions >= 0) & (positions < size)
        index_frame.append(positions[keep])
        index_grad.append(np.flatnonzero(keep))
    into = np.ix_(*[np.arange(n) for n in frame.shape[:2]], *index_frame[2:])
    taken = np.ix_(*[np.arange(n) for n in grad_y.shape[:2]], *index_grad[2:])

    def mirror_and_dilate(n_threads):
        mirror(n_threads)
        frame[into] = grad_y[taken]

    call = _correlate_call(frame, mirrored, None, 1, 0, dilation, ndim, out)
    call.before = mirror_and_dilate
    return call


# -------------------------------------------------------------- 1-D signals

@preparable
def correlate1d(x, w, bias=None, stride=1, padding=0, dilation=1, n_threads=None,
                out=None):
    """Multi-channel 1-D correlation of a batch of signals.

    ``y[n, f, i] = bias[f] + sum_{c, a} w[f, c, a] x[n, c, i*stride + a*dilation - before]``.

    Parameters
    ----------
    x : array of shape (N, C, L), float32 or float64
    w : array of shape (F, C, K)
    bias : array of shape (F,), default None
    stride : int or (int,), default 1
    padding : int, (int,) or ((before, after),), default 0
        Zeros added on both sides alike, or before and after the signal.
    dilation : int or (int,), default 1
    n_threads : int or None

    Returns
    -------
    y : array of shape (N, F, Lo),
        ``Lo = (L + before + after - dilation*(K - 1) - 1) // stride + 1``
    """
    return run_unless_preparing(
        _correlate_call(x, w, bias, stride, padding, dilation, ndim=1, out=out), n_threads)


def correlate1d_backward(x, w, grad_y, stride=1, padding=0, dilation=1,
                         n_threads=None):
    """Gradients through :func:`correlate1d`.

    Returns
    -------
    grad_x : array of shape (N, C, L)
    grad_w : array of shape (F, C, K)
    grad_b : array of shape (F,)
    """
    return _correlate_backward(x, w, grad_y, stride, padding, dilation, n_threads,
                               ndim=1)


@preparable
def correlate1d_backward_input(grad_y, w, x_shape, stride=1, padding=0,
                               dilation=1, n_threads=None, out=None):
    """Gradient with respect to the input of :func:`correlate1d`.

    Parameters
    ----------
    grad_y : array of shape (N, F, Lo)
    w : array of shape (F, C, K)
    x_shape : tuple (N, C, L)

    Returns
    -------
    grad_x : array of shape x_shape
    """
    return run_unless_preparing(_correlate_backward_input_call(
        grad_y, w, x_shape, stride, padding, dilation, ndim=1, out=out), n_threads)


@preparable
def correlate1d_backward_kernel(x, grad_y, w_shape, stride=1, padding=0,
                                dilation=1, n_threads=None, out=None):
    """Gradients with respect to the kernels and bias of :func:`correlate1d`.

    Parameters
    ----------
    x : array of shape (N, C, L)
    grad_y : array of shape (N, F, Lo)
    w_shape : tuple (F, C, K)

    Returns
    -------
    grad_w : array of shape w_shape
    grad_b : array of shape (F,)
    """
    return run_unless_preparing(_correlate_backward_kernel_call(
        x, grad_y, w_shape, stride, padding, dilation, ndim=1, out=out), n_threads)


