"""NumPy and SciPy references of the fastcnn.functional operations.

Written with NumPy and SciPy only, never with fastcnn, so that every kernel
is checked against an independent implementation of the definition::

    y[n, f, i, j] = b[f] + sum_{c, a, b} w[f, c, a, b] x[n, c, i*sh + a*dh - ph, j*sw + b*dw - pw]

Padding is per axis an int (both sides) or a (before, after) pair; dilation
(dh, dw) defaults to 1.

They are written once for any number of spatial axes: a 1-D case is the same
code with one spatial axis instead of two. They compute in float64 whatever
the input dtype, so a float32 kernel is compared with the exact-ish answer.
"""
import itertools

import numpy as np
import scipy.signal
from numpy.lib.stride_tricks import sliding_window_view


def _per_axis(value, ndim):
    return (value,) * ndim if np.isscalar(value) else tuple(value)


def _pairs(padding):
    """Per-axis padding as (before, after) pairs."""
    return tuple(tuple(p) if isinstance(p, (tuple, list)) else (p, p)
                 for p in padding)


def output_spatial(spatial, kernel, stride, padding, dilation=None):
    dilation = (1,) * len(spatial) if dilation is None else dilation
    return tuple((s + b + a - d * (k - 1) - 1) // st + 1 for s, k, st, (b, a), d
                 in zip(spatial, kernel, stride, _pairs(padding), dilation))


def _window_view(offset, stride, out, dilation=None):
    """Index of the inputs that kernel offset ``offset`` meets, over all
    output positions: offset*dilation, then every stride (out of them),
    per axis."""
    dilation = (1,) * len(offset) if dilation is None else dilation
    return (slice(None), slice(None)) + tuple(
        slice(o * d, o * d + s * (n - 1) + 1, s)
        for o, s, n, d in zip(offset, stride, out, dilation))


def _pad(x, padding):
    return np.pad(np.asarray(x, np.float64),
                  [(0, 0), (0, 0)] + list(_pairs(padding)))


def _geometry(ndim, stride, padding, dilation):
    padding = (padding,) * ndim if np.isscalar(padding) else tuple(padding)
    return _per_axis(stride, ndim), padding, _per_axis(dilation, ndim)


def correlate_ref(x, w, bias=None, stride=1, padding=0, dilation=1):
    """The forward correlation, one kernel offset at a time: for each offset,
    the strided slice of the zero-padded input it meets, contracted with that
    offset's weights over the channels."""
    ndim = x.ndim - 2
    stride, padding, dilation = _geometry(ndim, stride, padding, dilation)
    w = np.asarray(w, np.float64)
    x_padded = _pad(x, padding)
    out = output_spatial(x.shape[2:], w.shape[2:], stride, padding, dilation)
    y = np.zeros((x.shape[0], w.shape[0]) + out)
    for offset in np.ndindex(w.shape[2:]):
        y += np.einsum("nc...,fc->nf...",
                       x_padded[_window_view(offset, stride, out, dilation)],
                       w[(slice(None), slice(None)) + offset])
    if bias is not None:
        y += np.asarray(bias, np.float64).reshape((1, -1) + (1,) * ndim)
    return y


def correlate_backward_input_ref(grad_y, w, x_shape, stride=1, padding=0,
                                 dilation=1):
    """grad_x by scattering: each offset's weights times grad_y, added to the
    padded input positions that offset read, then the padding cropped off."""
    ndim = len(x_shape) - 2
    stride, padding, dilation = _geometry(ndim, stride, padding, dilation)
    w = np.asarray(w, np.float64)
    out = grad_y.shape[2:]
    padded = np.zeros(tuple(x_shape[:2]) + tuple(
        s + b + a for s, (b, a) in zip(x_shape[2:], _pairs(padding))))
    for offset in np.ndindex(w.shape[2:]):
        padded[_window_view(offset, stride, out, dilation)] += np.einsum(
            "nf...,fc->nc...", np.asarray(grad_y, np.float64),
            w[(slice(None), slice(None)) + offset])
    crop = tuple(slice(b, b + s) for (b, _), s in zip(_pairs(padding), x_shape[2:]))
    return padded[(slice(None), slice(None)) + crop]


def correlate_backward_kernel_ref(x, grad_y, w_shape, stride=1, padding=0,
                                  dilation=1):
    """(grad_w, grad_b): for each offset, grad_y contracted with the slice of
    the padded input that offset read, over samples and positions."""
    ndim = x.ndim - 2
    stride, padding, dilation = _geometry(ndim, stride, padding, dilation)
    grad_y = np.asarray(grad_y, np.float64)
    x_padded = _pad(x, padding)
    out = grad_y.shape[2:]
    grad_w = np.zeros(w_shape)
    for offset in np.ndindex(tuple(w_shape[2:])):
        patches = x_padded[_window_view(offset, stride, out, dilation)]
        grad_w[(slice(None), slice(None)) + offset] = np.einsum(
            "nfp,ncp->fc", grad_y.reshape(grad_y.shape[:2] + (-1,)),
            patches.reshape(patches.shape[:2] + (-1,)))
    grad_b = grad_y.sum(axis=(0,) + tuple(range(2, 2 + ndim)))
    return grad_w, grad_b


def _pool_windows(x, size, stride):
    """Every pooling window of x, flattened: shape (N, C, *out, prod(size))."""
    ndim = x.ndim - 2
    spatial_axes = tuple(range(2, 2 + ndim))
    windows = sliding_window_view(x, size, axis=spatial_axes)
    windows = windows[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in stride)]
    return windows.reshape(windows.shape[:2 + ndim] + (-1,))


def max_pool_ref(x, size, stride=None):
    """(y, argmax) with argmax the row-major index within the input plane of
    each window's first maximum, or of its first NaN if it has one."""
    ndim = x.ndim - 2
    size = _per_axis(size, ndim)
    stride = size if stride is None else _per_axis(stride, ndim)
    windows = _pool_windows(np.asarray(x), size, stride)
    is_nan = np.isnan(windows)
    local = np.where(is_nan.any(axis=-1), np.argmax(is_nan, axis=-1),
                     np.argmax(np.where(is_nan, -np.inf, windows), axis=-1))
    y = np.take_along_axis(windows, local[..., None], axis=-1)[..., 0]
    # window position (per axis) * stride + offset within the window
    offsets = np.unravel_index(local, size)
    out = windows.shape[2:2 + ndim]
    coords = tuple(
        np.arange(n).reshape((1, 1) + tuple(-1 if a == d else 1 for a in range(ndim))) * s + o
        for d, (n, s, o) in enumerate(zip(out, stride, offsets)))
    argmax = np.ravel_multi_index(np.broadcast_arrays(*coords), x.shape[2:])
    return y, argmax


def max_pool_backward_ref(grad_y, argmax, x_shape):
    """Each output gradient added at its argmax in the plane (np.add.at, so
    repeated indices accumulate)."""
    planes = x_shape[0] * x_shape[1]
    grad_x = np.zeros((planes, int(np.prod(x_shape[2:]))))
    plane_index = np.arange(planes)[:, None]
    np.add.at(grad_x, (plane_index, np.asarray(argmax).reshape(planes, -1)),
              np.asarray(grad_y, np.float64).reshape(planes, -1))
    return grad_x.reshape(x_shape)


def avg_pool_ref(x, size, stride=None):
    ndim = x.ndim - 2
    size = _per_axis(size, ndim)
    stride = size if stride is None else _per_axis(stride, ndim)
    return _pool_windows(np.asarray(x, np.float64), size, stride).mean(axis=-1)


def avg_pool_backward_ref(grad_y, x_shape, size, stride=None):
    """grad_y / window size added to every input of the window, one window
    offset at a time."""
    ndim = len(x_shape) - 2
    size = _per_axis(size, ndim)
    stride = size if stride is None else _per_axis(stride, ndim)
    grad_x = np.zeros(x_shape)
    share = np.asarray(grad_y, np.float64) / np.prod(size)
    for offset in np.ndindex(size):
        grad_x[_window_view(offset, stride, grad_y.shape[2:])] += share
    return grad_x


# ===================================================== SciPy references

def _dilate(a, stride):
    """``stride - 1`` zeros between the entries of a (per axis)."""
    dilated = np.zeros(tuple((n - 1) * s + 1 for n, s in zip(a.shape, stride)))
    dilated[tuple(slice(None, None, s) for s in stride)] = a
    return dilated


def correlate_scipy(x, w, bias=None, stride=1, padding=0, dilation=1):
    """scipy.signal.correlate in 'valid' mode per (sample, filter, channel),
    summed over channels, on the zero-padded input, subsampled by the
    stride; a dilated kernel is the kernel with dilation - 1 zeros between
    its taps."""
    ndim = x.ndim - 2
    stride, padding, dilation = _geometry(ndim, stride, padding, dilation)
    x_padded = _pad(x, padding)
    w = np.asarray(w, np.float64)
    subsample = tuple(slice(None, None, s) for s in stride)
    out = output_spatial(x.shape[2:], w.shape[2:], stride, padding, dilation)
    y = np.zeros((x.shape[0], w.shape[0]) + out)
    for n, f in itertools.product(range(x.shape[0]), range(w.shape[0])):
        for c in range(x.shape[1]):
            y[n, f] += scipy.signal.correlate(
                x_padded[n, c], _dilate(w[f, c], dilation), mode="valid",
                method="direct")[subsample]
        if bias is not None:
            y[n, f] += bias[f]
    return y


def correlate_backward_input_scipy(grad_y, w, x_shape, stride=1, padding=0):
    """The textbook identity: grad_x is the full *convolution* (= correlation
    with the 180-degree rotated kernel) of the stride-dilated grad_y with w,
    summed over filters, then cropped by the padding. With stride 1 and no
    padding it is exactly sum_f convolve(grad_y[n, f], w[f, c], 'full')."""
    ndim = len(x_shape) - 2
    stride, padding = _per_axis(stride, ndim), _per_axis(padding, ndim)
    w = np.asarray(w, np.float64)
    padded_shape = tuple(s + 2 * p for s, p in zip(x_shape[2:], padding))
    crop = tuple(slice(p, p + s) for p, s in zip(padding, x_shape[2:]))
    grad_x = np.zeros(x_shape)
    for n, c in itertools.product(range(x_shape[0]), range(x_shape[1])):
        padded = np.zeros(padded_shape)
        for f in range(w.shape[0]):
            full = scipy.signal.convolve(_dilate(grad_y[n, f], stride), w[f, c],
                                         mode="full", method="direct")
            # the full convolution covers the padded input from its start up
            # to the end of the last window (inputs past it get no gradient)
            padded[tuple(slice(0, m) for m in full.shape)] += full
        grad_x[n, c] = padded[crop]
    return grad_x


def correlate_backward_kernel_scipy(x, grad_y, w_shape, stride=1, padding=0):
    """grad_w[f, c] = sum_n correlate(padded x[n, c], dilated grad_y[n, f],
    'valid'), cut to the kernel size; grad_b = sum of grad_y."""
    ndim = x.ndim - 2
    stride, padding = _per_axis(stride, ndim), _per_axis(padding, ndim)
    x_padded = _pad(x, padding)
    kernel = tuple(slice(0, k) for k in w_shape[2:])
    grad_w = np.zeros(w_shape)
    for f, c in itertools.product(range(w_shape[0]), range(w_shape[1])):
        for n in range(x.shape[0]):
            grad_w[f, c] += scipy.signal.correlate(
                x_padded[n, c], _dilate(grad_y[n, f], stride), mode="valid",
                method="direct")[kernel]
    grad_b = np.asarray(grad_y, np.float64).sum(axis=(0,) + tuple(range(2, 2 + ndim)))
    return grad_w, grad_b


# ========================================== L2 and global pooling references

def l2_pool_ref(x, size, stride=None):
    """sqrt of the sum of squares of every window, in float64."""
    ndim = x.ndim - 2
    size = _per_axis(size, ndim)
    stride = size if stride is None else _per_axis(stride, ndim)
    windows = _pool_windows(np.asarray(x, np.float64), size, stride)
    return np.sqrt((windows ** 2).sum(axis=-1))


def l2_pool_backward_ref(grad_y, x, size, stride=None):
    """grad_y * x / y added to every input of a window, one window offset
    at a time; windows whose norm y is 0 add nothing."""
    ndim = x.ndim - 2
    size = _per_axis(size, ndim)
    stride = size if stride is None else _per_axis(stride, ndim)
    x = np.asarray(x, np.float64)
    y = l2_pool_ref(x, size, stride)
    share = np.divide(np.asarray(grad_y, np.float64), y, out=np.zeros_like(y),
                      where=y != 0)
    grad_x = np.zeros(x.shape)
    for offset in np.ndindex(size):
        view = _window_view(offset, stride, y.shape[2:])
        grad_x[view] += share * x[view]
    return grad_x


def global_avg_pool_ref(x):
    x = np.asarray(x, np.float64)
    return x.reshape(x.shape[0], x.shape[1], -1).mean(axis=-1)


def global_max_pool_ref(x):
    """(y, argmax): each plane's first maximum, or first NaN if it has one,
    and its row-major index in the plane."""
    planes = np.asarray(x).reshape(x.shape[0], x.shape[1], -1)
    is_nan = np.isnan(planes)
    argmax = np.where(is_nan.any(axis=-1), np.argmax(is_nan, axis=-1),
                      np.argmax(np.where(is_nan, -np.inf, planes), axis=-1))
    return np.take_along_axis(planes, argmax[..., None], axis=-1)[..., 0], argmax


def global_avg_pool_backward_ref(grad_y, x_shape):
    size = int(np.prod(x_shape[2:]))
    share = np.asarray(grad_y, np.float64) / size
    return np.broadcast_to(share.reshape(share.shape + (1,) * (len(x_shape) - 2)),
                           x_shape).copy()


def global_max_pool_backward_ref(grad_y, argmax, x_shape):
    planes = np.zeros((x_shape[0], x_shape[1], int(np.prod(x_shape[2:]))))
    np.put_along_axis(planes, np.asarray(argmax)[..., None],
                      np.asarray(grad_y, np.float64)[..., None], axis=-1)
    return planes.reshape(x_shape)
