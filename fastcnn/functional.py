"""Convolution and pooling on arrays: the documented API over the kernels.

Arrays are channels-first. Images are ``(N, C, H, W)`` with kernels
``(F, C, KH, KW)``; signals (time series) are ``(N, C, L)`` with kernels
``(F, C, K)``. Each function validates its input (shapes, dtypes, parameters),
allocates its output and runs a compiled OpenMP kernel. float32 in gives
float32 out, float64 gives float64; other dtypes, or two float dtypes mixed,
raise TypeError. Non-contiguous input is copied to C order once; read-only
input is accepted as it is.

"Convolution" here means correlation, as in every deep-learning library::

    y[n, f, i, j] = b[f] + sum_{c, a, b} w[f, c, a, b] x[n, c, i*sh + a - ph, j*sw + b - pw]

with zero padding ``(ph, pw)`` and stride ``(sh, sw)``, so that the output
has ``(H - KH + 2*ph) // sh + 1`` rows (likewise columns).

A computation repeated on the same arrays (a network's buffers, batch after
batch) can be validated once with :func:`prepare` and then run directly.

Every function takes ``n_threads``: None uses the physical cores within the
limits set by ``OMP_NUM_THREADS`` or threadpoolctl, a positive int that many
threads, a negative int counts back from all cores (-1: all). Results are
bitwise identical for any number of threads.
"""
import functools
import inspect
import math
import numbers
import operator

import numpy as np

from ._kernels import activations as _activations
from ._kernels import batch as _batch
from ._kernels import correlation as _correlation
from ._kernels import dense as _dense
from ._kernels import loss as _loss
from ._kernels import optim as _optim
from ._kernels import pooling as _pooling
from ._threads import effective_n_threads

__all__ = [
    "correlate2d", "correlate2d_backward", "correlate2d_backward_input",
    "correlate2d_backward_kernel", "correlate2d_backward_input_mirrored",
    "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
    "correlate1d", "correlate1d_backward", "correlate1d_backward_input",
    "correlate1d_backward_kernel", "max_pool1d", "max_pool1d_backward",
    "avg_pool1d", "avg_pool1d_backward", "output_size",
    "linear", "linear_backward", "linear_backward_input",
    "linear_backward_weight", "relu", "relu_backward", "log_softmax",
    "softmax", "softmax_cross_entropy", "sgd_update", "adam_update",
    "take_samples", "prepare",
]

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# the kernels take indices of either type as they are
_INDEX_DTYPES = (np.dtype(np.int32), np.dtype(np.intp))
# Signals run through the image kernels as images of height 1.
_SPATIAL = {1: "(N, C, L)", 2: "(N, C, H, W)"}
_KERNEL_LAYOUT = {1: "(F, C, K)", 2: "(F, C, KH, KW)"}


# ------------------------------------------------------------- validation

def _readable(a):
    """``a`` as the kernels read it, C-contiguous and aligned: itself when it
    is, else a copy (np.ascontiguousarray would keep a misaligned view, and
    turn a 0-d array into shape (1,))."""
    flags = a.flags
    if flags.c_contiguous and flags.aligned:
        return a
    return np.array(a, order="C")


def _float_array(a, name, ndim, layout):
    """``a`` as a C-contiguous, aligned float32/float64 array of ``ndim``
    dimensions."""
    if (type(a) is np.ndarray and a.ndim == ndim and a.dtype in _FLOAT_DTYPES
            and a.size):
        return _readable(a)   # what a network passes on every call
    a = np.asarray(a)
    if a.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be a float32 or float64 array, got dtype {a.dtype}")
    if a.ndim != ndim:
        raise ValueError(
            f"{name} must have {ndim} dimensions {layout}, got shape {a.shape}")
    if 0 in a.shape:
        raise ValueError(f"{name} must not be empty, got shape {a.shape}")
    return _readable(a)


def _same_dtype(first, a, name, b):
    """a's dtype; a TypeError naming both dtypes when b's differs."""
    if b.dtype != a.dtype:
        raise TypeError(
            f"{first} has dtype {a.dtype} but {name} has dtype {b.dtype}; "
            "cast both to the same float dtype (float32 or float64)")
    return a.dtype


# Largest stride, padding or window size: beyond it no input fits in memory
# (C longs on some platforms are 32 bits), and a bound keeps every size the
# kernels derive from them within 64 bits.
_MAX_GEOMETRY = 2**31 - 1


def _integer(value, name, minimum, maximum=_MAX_GEOMETRY):
    try:
        if isinstance(value, (bool, np.bool_)):
            raise TypeError
        value = operator.index(value)  # ints, NumPy ints, 0-d integer arrays
    except TypeError:
        raise TypeError(f"{name} must be an int, got {value!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def _per_axis(value, name, ndim, minimum):
    """An int or a tuple of ``ndim`` ints, validated, as a tuple of ``ndim``."""
    if type(value) is int:   # the common case, without np.ndim's conversion
        return (_integer(value, name, minimum),) * ndim
    if isinstance(value, (tuple, list)) or np.ndim(value) > 0:
        values = tuple(value)
        if len(values) != ndim:
            raise ValueError(
                f"{name} must be an int or a tuple of {ndim} ints, got {value!r}")
    else:
        values = (value,) * ndim
    return tuple(_integer(v, name, minimum) for v in values)


def _output(out, shape, dtype, name="out"):
    """A fresh array of ``shape``, or ``out`` checked to be one: the kernels
    write through it without bounds checks."""
    if out is None:
        return np.empty(shape, dtype=dtype)
    if type(out) is np.ndarray and out.shape == shape and out.dtype == dtype:
        flags = out.flags   # a new object on every access
        if flags.c_contiguous and flags.writeable and flags.aligned:
            return out      # what a network passes on every call
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(out).__name__}")
    if out.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {out.shape}")
    if out.dtype != dtype:
        raise TypeError(f"{name} must have dtype {np.dtype(dtype)}, got {out.dtype}")
    flags = out.flags
    if not (flags.c_contiguous and flags.writeable and flags.aligned):
        raise ValueError(f"{name} must be a writeable, aligned, C-contiguous array")
    return out


def _pair(out, names):
    """The two arrays of an ``out`` that takes a pair (None: none given)."""
    if out is None:
        return None, None
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise TypeError(f"out must be a tuple of two arrays {names}, got {out!r:.80}")
    return out


def _apart(outputs, inputs):
    """A ValueError when an output given by the caller overlaps an input or
    another output: the kernels read their inputs while they write, and
    two outputs written at once would overwrite each other. ``outputs``
    and ``inputs`` are (name, array) pairs; every array here is contiguous
    (converted or refused before), so overlapping bounds are shared
    memory."""
    for i, (name, out) in enumerate(outputs):
        for other, a in outputs[i + 1:] + inputs:
            if a is not None and np.may_share_memory(out, a):
                raise ValueError(
                    f"{name} shares memory with {other}: pass an array of its "
                    "own (or None)")


def _same_memory(a, b):
    """Whether a and b are views of exactly the same values (an operation
    that reads each element before writing it may then run in place)."""
    return (a.shape == b.shape and a.strides == b.strides
            and a.__array_interface__["data"][0] == b.__array_interface__["data"][0])


def _check_bias(bias, size, x, layout):
    """bias as a contiguous array of ``size`` values of x's dtype; None is
    zero."""
    if bias is None:
        return np.zeros(size, dtype=x.dtype)
    bias = _float_array(bias, "bias", 1, layout)
    _same_dtype("x", x, "bias", bias)
    if bias.shape != (size,):
        raise ValueError(
            f"bias must have shape ({size},) to match w, got {bias.shape}")
    return bias


def _spatial2d(values, ndim, fill):
    return values if ndim == 2 else (fill,) + values


def _shape(shape, name, ndim):
    if type(shape) is tuple and len(shape) == ndim + 2 and _exact_ints(shape) \
            and min(shape) >= 1:
        return shape   # a network's own shapes, checked cheaply
    try:
        shape = tuple(operator.index(s) for s in shape)
    except TypeError:
        raise TypeError(f"{name} must be a tuple of ints, got {shape!r}") from None
    if len(shape) != ndim + 2 or min(shape) < 1:
        raise ValueError(
            f"{name} must be {ndim + 2} positive ints {_SPATIAL[ndim]}, "
            f"got {shape!r}")
    return shape


def output_size(input_size, kernel_size, stride=1, padding=0):
    """Length of a correlation or pooling output along one axis.

    ``(input_size - kernel_size + 2 * padding) // stride + 1``.

    Raises
    ------
    TypeError
        An argument that is not an int.
    ValueError
        input_size or kernel_size < 1, stride < 1, padding < 0, or a
        kernel larger than the padded input.
    """
    input_size = _integer(input_size, "input_size", 1, maximum=math.inf)
    kernel_size = _integer(kernel_size, "kernel_size", 1, maximum=math.inf)
    stride = _integer(stride, "stride", 1)
    padding = _integer(padding, "padding", 0)
    if kernel_size > input_size + 2 * padding:
        raise ValueError(
            f"kernel_size {kernel_size} is larger than the padded input "
            f"{input_size} + 2 * {padding}")
    return _output_size(input_size, kernel_size, stride, padding)


def _output_size(input_size, kernel_size, stride, padding=0):
    return (input_size - kernel_size + 2 * padding) // stride + 1


def _kernel_stride(stride, out_spatial):
    """The stride the kernels get: 1 along an axis with a single output,
    where it moves no window but would still widen the kernels' frames
    (about stride columns a row) and their scratch with them."""
    return tuple(1 if o == 1 else st for st, o in zip(stride, out_spatial))


def _exact_ints(value):
    """An int, or a tuple of ints, of type int exactly (not bool, not a
    float equal to an int: those must still be rejected)."""
    kind = type(value)
    if kind is int:
        return True
    if kind is tuple:
        for v in value:
            if type(v) is not int:
                return False
        return True
    return False


def _cached(function):
    """``function`` memoised for the calls a network makes on every batch:
    shapes plus int or tuple-of-int parameters, so validating the same
    geometry again costs a dictionary lookup. Anything else (floats, bools,
    lists, arrays) is validated afresh, and errors are never cached."""
    cached = functools.lru_cache(maxsize=512)(function)

    def lookup(shape, *args):
        for a in args:
            if not _exact_ints(a):
                return function(shape, *args)
        return cached(shape, *args)
    lookup.__doc__ = function.__doc__
    return lookup


class _KernelCall:
    """One kernel call, validated: the kernel, its arguments but the number
    of threads (always its last), what the public function returns, and
    optionally a step run before the kernel (``before``) and a check of
    what it returns (``check``). ``run`` makes the call; see prepare(),
    which also sets ``shapes``: the arrays whose shapes the validation saw,
    with those shapes."""
    __slots__ = ("kernel", "args", "result", "before", "check", "shapes")

    def __init__(self, kernel, args, result, before=None, check=None):
        self.kernel, self.args, self.result = kernel, args, result
        self.before, self.check = before, check
        self.shapes = ()

    def run(self, n_threads):
        """Call the kernel on ``n_threads`` (a positive int, as resolved by
        effective_n_threads) and return the function's result."""
        for a, shape in self.shapes:
            if a.shape != shape:
                # NumPy reshapes in place (a.shape = ...): the kernel would
                # size its loops by the new shape and the outputs by the old
                raise ValueError(
                    f"an array of this prepared call has shape {a.shape} but "
                    f"was prepared with shape {shape}: prepare the call again")
        if self.before is not None:
            self.before()
        value = self.kernel(*self.args, n_threads)
        if self.check is not None:
            self.check(value)
        return self.result


# 2**50 values is 8 PiB of float64
_MAX_SCRATCH_ITEMS = 2**50


@_cached
def _conv_geometry(x_shape, w_shape, stride, padding, ndim):
    """Validated (stride, padding, output spatial shape), all per axis."""
    stride = _per_axis(stride, "stride", ndim, 1)
    padding = _per_axis(padding, "padding", ndim, 0)
    spatial, kernel = x_shape[2:], w_shape[2:]
    if x_shape[1] != w_shape[1]:
        raise ValueError(
            f"x has {x_shape[1]} channels but w expects {w_shape[1]}: "
            f"x is {_SPATIAL[ndim]} = {tuple(x_shape)}, "
            f"w is {_KERNEL_LAYOUT[ndim]} = {tuple(w_shape)}")
    for size, k, p in zip(spatial, kernel, padding):
        if k > size + 2 * p:
            raise ValueError(
                f"kernel {tuple(kernel)} is larger than the padded input: "
                f"input {tuple(spatial)} with padding {padding}")

    out = tuple(_output_size(s, k, st, p)
                for s, k, st, p in zip(spatial, kernel, stride, padding))
    # The kernels' frames hold a padded sample (and the patch matrix of one
    # is about K*P values): refuse sizes no memory holds before a product
    # of them leaves 64 bits (x_shape is only a tuple in the backward
    # passes).
    padded = w_shape[1] * math.prod(s + 2 * p for s, p in zip(spatial, padding))
    patches = math.prod(w_shape[1:]) * math.prod(out)
    if max(padded, patches) > _MAX_SCRATCH_ITEMS:
        raise ValueError(
            f"padding {padding} and kernel {tuple(kernel)} on an input of "
            f"{tuple(spatial)} need a padded sample of {padded} values and "
            f"{patches} patch values, more than any memory holds")
    return stride, padding, out


def _as_4d(a, ndim):
    """A view of a signal array as an image of height 1."""
    return a if ndim == 2 else a[:, :, np.newaxis, :]


# ------------------------------------------------------------ correlation

def _correlate(x, w, bias, stride, padding, n_threads, ndim, out=None):
    return _correlate_call(x, w, bias, stride, padding, ndim, out).run(
        effective_n_threads(n_threads))


def _correlate_call(x, w, bias, stride, padding, ndim, out=None):
    x = _float_array(x, "x", ndim + 2, _SPATIAL[ndim])
    w = _float_array(w, "w", ndim + 2, _KERNEL_LAYOUT[ndim])
    dtype = _same_dtype("x", x, "w", w)
    stride, padding, out_spatial = _conv_geometry(x.shape, w.shape, stride,
                                                  padding, ndim)
    n_filters = w.shape[0]
    bias = _check_bias(bias, n_filters, x, "(F,)")
    y = _output(out, (x.shape[0], n_filters) + out_spatial, dtype)
    if out is not None:
        _apart([("out", y)], [("x", x), ("w", w), ("bias", bias)])
    trim = _Trim.of(x.shape[2:], w.shape[2:], stride, padding, out_spatial)
    if trim is not None:
        return trim.forward_call(x, w, bias, y, stride)
    (sh, sw) = _spatial2d(_kernel_stride(stride, out_spatial), ndim, 1)
    (ph, pw) = _spatial2d(padding, ndim, 0)
    return _KernelCall(_correlation.correlate2d_forward,
                       (_as_4d(x, ndim), _as_4d(w, ndim), bias, _as_4d(y, ndim),
                        sh, sw, ph, pw), y)


class _Trim:
    """A correlation whose padding reaches past the kernel has windows that
    read padding only. The kernels' frames hold the padded input, so they
    would grow with the padding, not with what the windows read; such a
    call runs instead on the region that the windows reading the input
    cover, padded explicitly once (``region``, zero outside the input), and
    the other windows' outputs are the bias alone (their gradients zero).
    Per spatial axis: ``outputs``, the slice of those windows' outputs;
    ``shape``, the region's size; ``into`` and ``taken``, where the input
    sits in the region and which part of it does. ``empty`` when no
    window reads an input value."""

    @classmethod
    def of(cls, spatial, kernel, stride, padding, out_spatial):
        """The trim of a call, or None when every window reads some input
        (padding below the kernel size on every axis)."""
        for k, p in zip(kernel, padding):
            if p >= k:
                return cls(spatial, kernel, stride, padding, out_spatial)
        return None

    def __init__(self, spatial, kernel, stride, padding, out_spatial):
        self.outputs, self.shape, self.into, self.taken = [], [], [], []
        self.empty = False
        for size, k, s, p, o in zip(spatial, kernel, stride, padding, out_spatial):
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

    def forward_call(self, x, w, bias, y, stride):
        per_filter = bias.reshape((-1,) + (1,) * (y.ndim - 2))
        if self.empty:
            return _KernelCall(lambda n_threads: np.copyto(y, per_filter), (), y)
        region, fill = self._region(x)
        inner = _correlate_call(region, w, bias, stride, 0, y.ndim - 2)

        def run(n_threads):
            fill()
            inner.run(n_threads)
            np.copyto(y, per_filter)
            y[self.outputs] = inner.result
        return _KernelCall(run, (), y)

    def backward_input_call(self, grad_y, w, grad_x, stride):
        if self.empty:
            return _KernelCall(lambda n_threads: grad_x.fill(0), (), grad_x)
        part = np.empty_like(grad_y[self.outputs])
        inner = _correlate_backward_input_call(
            part, w, grad_x.shape[:2] + self.shape, stride, 0, grad_x.ndim - 2)

        def run(n_threads):
            np.copyto(part, grad_y[self.outputs])
            inner.run(n_threads)
            grad_x.fill(0)
            grad_x[self.taken] = inner.result[self.into]
        return _KernelCall(run, (), grad_x)

    def backward_kernel_call(self, x, grad_y, grad_w, grad_b, stride):
        # every window's gradient reaches the bias, read or not
        positions = (0,) + tuple(range(2, grad_y.ndim))
        if self.empty:
            def run(n_threads):
                grad_w.fill(0)
                np.sum(grad_y, axis=positions, out=grad_b)
            return _KernelCall(run, (), (grad_w, grad_b))
        region, fill = self._region(x)
        part = np.empty_like(grad_y[self.outputs])
        inner = _correlate_backward_kernel_call(
            region, part, grad_w.shape, stride, 0, x.ndim - 2,
            (grad_w, np.empty_like(grad_b)))

        def run(n_threads):
            fill()
            np.copyto(part, grad_y[self.outputs])
            inner.run(n_threads)
            np.sum(grad_y, axis=positions, out=grad_b)
        return _KernelCall(run, (), (grad_w, grad_b))


def _check_grad_y(grad_y, expected_shape, dtype, ndim):
    grad_y = _float_array(grad_y, "grad_y", ndim + 2, _SPATIAL[ndim])
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
# the micro-kernel works on panels of 8 rows. On 64 x C x 14 x 14 with 16
# filters 5x5, one thread: at C = 6 (LeNet-5's second layer) the transposed
# product takes 0.35 ms and the mirrored one 0.46 ms; at C = 8, 0.49 against
# 0.43 ms.
_MIRRORED_MIN_CHANNELS = 8


def _mirrored_is_plain_correlation(stride, padding, kernel):
    """At stride 1 with padding <= K - 1 the mirrored form needs no dilation:
    it is the forward correlation at padding K - 1 - padding."""
    return all(s == 1 for s in stride) and all(
        p <= k - 1 for p, k in zip(padding, kernel))


def _check_backward_input(grad_y, w, x_shape, stride, padding, ndim, out):
    """The validated arguments of a backward-to-the-input call (``out`` is
    checked for overlap only: its shape and dtype by _output)."""
    w = _float_array(w, "w", ndim + 2, _KERNEL_LAYOUT[ndim])
    x_shape = _shape(x_shape, "x_shape", ndim)
    stride, padding, out_spatial = _conv_geometry(x_shape, w.shape, stride,
                                                  padding, ndim)
    grad_y = _check_grad_y(grad_y, (x_shape[0], w.shape[0]) + out_spatial,
                           w.dtype, ndim)
    if isinstance(out, np.ndarray):
        _apart([("out", out)], [("grad_y", grad_y), ("w", w)])
    return grad_y, w, x_shape, stride, padding


def _correlate_backward_input(grad_y, w, x_shape, stride, padding, n_threads,
                              ndim, out=None):
    return _correlate_backward_input_call(
        grad_y, w, x_shape, stride, padding, ndim, out).run(
            effective_n_threads(n_threads))


def _correlate_backward_input_call(grad_y, w, x_shape, stride, padding, ndim,
                                   out=None):
    grad_y, w, x_shape, stride, padding = _check_backward_input(
        grad_y, w, x_shape, stride, padding, ndim, out)
    trim = _Trim.of(x_shape[2:], w.shape[2:], stride, padding, grad_y.shape[2:])
    if trim is not None:
        return trim.backward_input_call(grad_y, w, _output(out, x_shape, w.dtype),
                                        stride)
    if (x_shape[1] >= _MIRRORED_MIN_CHANNELS
            and _mirrored_is_plain_correlation(stride, padding, w.shape[2:])):
        return _backward_input_mirrored_call(grad_y, w, x_shape, stride, padding,
                                             ndim, out)
    grad_x = _output(out, x_shape, w.dtype)
    (sh, sw) = _spatial2d(_kernel_stride(stride, grad_y.shape[2:]), ndim, 1)
    (ph, pw) = _spatial2d(padding, ndim, 0)
    return _KernelCall(_correlation.correlate2d_backward_input,
                       (_as_4d(grad_y, ndim), _as_4d(w, ndim), _as_4d(grad_x, ndim),
                        sh, sw, ph, pw), grad_x)


def _correlate_backward_kernel(x, grad_y, w_shape, stride, padding, n_threads,
                               ndim, out=None):
    return _correlate_backward_kernel_call(
        x, grad_y, w_shape, stride, padding, ndim, out).run(
            effective_n_threads(n_threads))


def _correlate_backward_kernel_call(x, grad_y, w_shape, stride, padding, ndim,
                                    out=None):
    x = _float_array(x, "x", ndim + 2, _SPATIAL[ndim])
    w_shape = _shape(w_shape, "w_shape", ndim)
    stride, padding, out_spatial = _conv_geometry(x.shape, w_shape, stride,
                                                  padding, ndim)
    grad_y = _check_grad_y(grad_y, (x.shape[0], w_shape[0]) + out_spatial,
                           x.dtype, ndim)
    grad_w, grad_b = _pair(out, "(grad_w, grad_b)")
    grad_w = _output(grad_w, w_shape, x.dtype, "out[0] (grad_w)")
    grad_b = _output(grad_b, (w_shape[0],), x.dtype, "out[1] (grad_b)")
    if out is not None:
        _apart([("out[0] (grad_w)", grad_w), ("out[1] (grad_b)", grad_b)],
               [("x", x), ("grad_y", grad_y)])
    trim = _Trim.of(x.shape[2:], w_shape[2:], stride, padding, out_spatial)
    if trim is not None:
        return trim.backward_kernel_call(x, grad_y, grad_w, grad_b, stride)
    (sh, sw) = _spatial2d(_kernel_stride(stride, out_spatial), ndim, 1)
    (ph, pw) = _spatial2d(padding, ndim, 0)
    return _KernelCall(_correlation.correlate2d_backward_kernel,
                       (_as_4d(x, ndim), _as_4d(grad_y, ndim), _as_4d(grad_w, ndim),
                        grad_b, sh, sw, ph, pw), (grad_w, grad_b))


def _correlate_backward(x, w, grad_y, stride, padding, n_threads, ndim):
    x = _float_array(x, "x", ndim + 2, _SPATIAL[ndim])
    w = _float_array(w, "w", ndim + 2, _KERNEL_LAYOUT[ndim])
    _same_dtype("x", x, "w", w)
    grad_x = _correlate_backward_input(grad_y, w, x.shape, stride, padding,
                                       n_threads, ndim)
    grad_w, grad_b = _correlate_backward_kernel(x, grad_y, w.shape, stride,
                                                padding, n_threads, ndim)
    return grad_x, grad_w, grad_b


def correlate2d(x, w, bias=None, stride=1, padding=0, n_threads=None, out=None):
    """Multi-channel 2-D correlation of a batch of images with a bank of kernels.

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
    padding : int or (int, int), default 0
        Zeros added on each side of the image, per axis; at least 0.
    n_threads : int or None, default None
        See the module documentation.

    Returns
    -------
    y : array of shape (N, F, Ho, Wo), dtype of x
        ``Ho = (H - KH + 2*ph) // sh + 1`` and likewise ``Wo``.

    Raises
    ------
    TypeError
        A dtype that is not float32/float64, or x, w and bias differing.
    ValueError
        Wrong number of dimensions, an empty array, channel mismatch, a
        kernel larger than the padded input, stride < 1 or padding < 0.
    """
    return _correlate(x, w, bias, stride, padding, n_threads, ndim=2, out=out)


def correlate2d_backward(x, w, grad_y, stride=1, padding=0, n_threads=None):
    """Gradients of a loss through :func:`correlate2d`.

    Parameters
    ----------
    x : array of shape (N, C, H, W)
        The forward input.
    w : array of shape (F, C, KH, KW)
        The forward kernels.
    grad_y : array of shape (N, F, Ho, Wo)
        Gradient of the loss with respect to the forward output.
    stride, padding, n_threads
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
    return _correlate_backward(x, w, grad_y, stride, padding, n_threads, ndim=2)


def correlate2d_backward_input(grad_y, w, x_shape, stride=1, padding=0,
                               n_threads=None, out=None):
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
    stride, padding, n_threads
        As given to :func:`correlate2d`.

    Returns
    -------
    grad_x : array of shape x_shape
    """
    return _correlate_backward_input(grad_y, w, x_shape, stride, padding,
                                     n_threads, ndim=2, out=out)


def correlate2d_backward_kernel(x, grad_y, w_shape, stride=1, padding=0,
                                n_threads=None, out=None):
    """Gradients with respect to the kernels and bias of :func:`correlate2d`.

    ``grad_w[f, c, a, b] = sum_{n,i,j} grad_y[n, f, i, j] x[n, c, i*sh + a - ph, j*sw + b - pw]``,
    the correlation of the input with the output gradient, summed over the
    batch in a fixed order (the same bits for any thread count).

    Parameters
    ----------
    x : array of shape (N, C, H, W)
    grad_y : array of shape (N, F, Ho, Wo)
    w_shape : tuple (F, C, KH, KW)
    stride, padding, n_threads
        As given to :func:`correlate2d`.

    Returns
    -------
    grad_w : array of shape w_shape
    grad_b : array of shape (F,)
    """
    return _correlate_backward_kernel(x, grad_y, w_shape, stride, padding,
                                      n_threads, ndim=2, out=out)


def correlate2d_backward_input_mirrored(grad_y, w, x_shape, stride=1,
                                        padding=0, n_threads=None, out=None):
    """:func:`correlate2d_backward_input` as the textbook identity.

    The output gradient is dilated by the stride (``stride - 1`` zeros
    between its entries), padded by ``K - 1 - padding`` on each side, and
    correlated with the mirrored kernel: rotated 180 degrees, with input and
    output channels swapped. Same result as the transposed product (up to
    rounding). At stride 1 it is the forward correlation at padding
    ``K - 1 - padding``; with stride s it multiplies by zeros s*s times
    more often. Parameters and return value as for
    :func:`correlate2d_backward_input`.
    """
    checked = _check_backward_input(grad_y, w, x_shape, stride, padding, 2, out)
    return _backward_input_mirrored_call(*checked, ndim=2, out=out).run(
        effective_n_threads(n_threads))


def _backward_input_mirrored_call(grad_y, w, x_shape, stride, padding, ndim,
                                  out=None):
    """The mirrored form on arguments already through _check_backward_input:
    a forward correlation of (the dilated) grad_y with the mirrored kernel,
    both refreshed from grad_y and w before each run of the call."""
    out_spatial = grad_y.shape[2:]
    kernel = w.shape[2:]
    flip = (slice(None), slice(None)) + (slice(None, None, -1),) * ndim
    mirrored = np.empty((w.shape[1], w.shape[0]) + kernel, dtype=w.dtype)

    def mirror():
        np.copyto(mirrored, w[flip].swapaxes(0, 1))

    if _mirrored_is_plain_correlation(stride, padding, kernel):
        # no dilation needed: the frame is the forward's own zero padding
        frame_padding = tuple(k - 1 - p for k, p in zip(kernel, padding))
        call = _correlate_call(grad_y, mirrored, None, 1, frame_padding, ndim, out)
        call.before = mirror
        return call
    # Place the dilated gradient in a zero frame of size input + kernel - 1:
    # output position i sits at i*stride + (K - 1 - padding), clipped where
    # padding exceeds K - 1 (those positions read only padding).
    frame_shape = tuple(s + k - 1 for s, k in zip(x_shape[2:], kernel))
    frame = np.zeros(grad_y.shape[:2] + frame_shape, dtype=w.dtype)
    index_frame, index_grad = [slice(None)] * 2, [slice(None)] * 2
    for o, s, k, p, size in zip(out_spatial, stride, kernel, padding, frame_shape):
        positions = np.arange(o) * s + (k - 1 - p)
        keep = (positions >= 0) & (positions < size)
        index_frame.append(positions[keep])
        index_grad.append(np.flatnonzero(keep))
    into = np.ix_(*[np.arange(n) for n in frame.shape[:2]], *index_frame[2:])
    taken = np.ix_(*[np.arange(n) for n in grad_y.shape[:2]], *index_grad[2:])

    def mirror_and_dilate():
        mirror()
        frame[into] = grad_y[taken]

    call = _correlate_call(frame, mirrored, None, 1, 0, ndim, out)
    call.before = mirror_and_dilate
    return call


# ----------------------------------------------------------------- pooling

@_cached
def _pool_geometry(spatial, size, stride, ndim):
    size = _per_axis(size, "size", ndim, 1)
    stride = size if stride is None else _per_axis(stride, "stride", ndim, 1)
    for s, k in zip(spatial, size):
        if k > s:
            raise ValueError(
                f"pool size {size} is larger than the input {tuple(spatial)}")
    out = tuple(_output_size(s, k, st) for s, k, st in zip(spatial, size, stride))
    return size, stride, out


def _max_pool(x, size, stride, n_threads, ndim, out=None, relu=False):
    return _max_pool_call(x, size, stride, ndim, out, relu).run(
        effective_n_threads(n_threads))


def _check_plane(spatial, name):
    """argmax indexes a plane with int32 (half the memory of int64, and the
    fused kernels' layout): refuse planes it cannot index."""
    plane = math.prod(spatial)
    if plane > _MAX_PLANE:
        raise ValueError(
            f"max pooling indexes each plane of {name} with int32, and a "
            f"plane of {tuple(spatial)} has {plane} elements, more than "
            f"{_MAX_PLANE}: split it (pool it in pieces)")


# The 2x2 kernel's last block in a plane also computes (and drops) up to 16
# windows past its end, whose indices must stay within int32 as well.
_MAX_PLANE = np.iinfo(np.int32).max - 32


def _max_pool_call(x, size, stride, ndim, out=None, relu=False):
    _check_plane(np.shape(x)[2:], "x")   # before a copy of such a plane
    x = _float_array(x, "x", ndim + 2, _SPATIAL[ndim])
    size, stride, out_spatial = _pool_geometry(x.shape[2:], size, stride, ndim)
    shape = x.shape[:2] + out_spatial
    y, argmax = _pair(out, "(y, argmax)")
    y = _output(y, shape, x.dtype, "out[0] (y)")
    argmax = _output(argmax, shape, np.int32, "out[1] (argmax)")
    if out is not None:
        _apart([("out[0] (y)", y), ("out[1] (argmax)", argmax)], [("x", x)])
    (kh, kw), (sh, sw) = _spatial2d(size, ndim, 1), _spatial2d(stride, ndim, 1)
    return _KernelCall(_pooling.max_pool2d_forward,
                       (_as_4d(x, ndim), _as_4d(y, ndim), _as_4d(argmax, ndim),
                        kh, kw, sh, sw, bool(relu)), (y, argmax))


def _max_pool_backward(grad_y, argmax, x_shape, n_threads, ndim, out=None,
                       relu_output=None):
    return _max_pool_backward_call(grad_y, argmax, x_shape, ndim, out,
                                   relu_output).run(effective_n_threads(n_threads))


def _max_pool_backward_call(grad_y, argmax, x_shape, ndim, out=None,
                            relu_output=None):
    grad_y = _float_array(grad_y, "grad_y", ndim + 2, _SPATIAL[ndim])
    if relu_output is not None:
        relu_output = _float_array(relu_output, "relu_output", ndim + 2,
                                   _SPATIAL[ndim])
        _same_dtype("grad_y", grad_y, "relu_output", relu_output)
        if relu_output.shape != grad_y.shape:
            raise ValueError(
                f"relu_output must have grad_y's shape {grad_y.shape}, got "
                f"{relu_output.shape}")
        relu_output = _as_4d(relu_output, ndim)
    x_shape = _shape(x_shape, "x_shape", ndim)
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
    argmax = _readable(argmax.astype(np.int32, copy=False))
    grad_x = _output(out, x_shape, grad_y.dtype)
    if out is not None:
        _apart([("out", grad_x)], [("grad_y", grad_y), ("argmax", argmax),
                                   ("relu_output", relu_output)])

    def check(n_bad):
        # the kernel skips and counts indices outside the plane
        if n_bad:
            raise ValueError(
                f"argmax values must index the input plane [0, {plane}), got "
                f"{n_bad} outside it (values in [{argmax.min()}, {argmax.max()}])")
    return _KernelCall(_pooling.max_pool2d_backward,
                       (_as_4d(grad_y, ndim), _as_4d(argmax, ndim),
                        _as_4d(grad_x, ndim), relu_output), grad_x, check=check)


def _avg_pool(x, size, stride, n_threads, ndim, out=None):
    return _avg_pool_call(x, size, stride, ndim, out).run(
        effective_n_threads(n_threads))


def _avg_pool_call(x, size, stride, ndim, out=None):
    x = _float_array(x, "x", ndim + 2, _SPATIAL[ndim])
    size, stride, out_spatial = _pool_geometry(x.shape[2:], size, stride, ndim)
    y = _output(out, x.shape[:2] + out_spatial, x.dtype)
    if out is not None:
        _apart([("out", y)], [("x", x)])
    (kh, kw), (sh, sw) = _spatial2d(size, ndim, 1), _spatial2d(stride, ndim, 1)
    return _KernelCall(_pooling.avg_pool2d_forward,
                       (_as_4d(x, ndim), _as_4d(y, ndim), kh, kw, sh, sw), y)


def _avg_pool_backward(grad_y, x_shape, size, stride, n_threads, ndim, out=None):
    return _avg_pool_backward_call(grad_y, x_shape, size, stride, ndim, out).run(
        effective_n_threads(n_threads))


def _avg_pool_backward_call(grad_y, x_shape, size, stride, ndim, out=None):
    grad_y = _float_array(grad_y, "grad_y", ndim + 2, _SPATIAL[ndim])
    x_shape = _shape(x_shape, "x_shape", ndim)
    size, stride, out_spatial = _pool_geometry(x_shape[2:], size, stride, ndim)
    if grad_y.shape != x_shape[:2] + out_spatial:
        raise ValueError(
            f"grad_y must have the pooled shape {x_shape[:2] + out_spatial}, "
            f"got {grad_y.shape}")
    grad_x = _output(out, x_shape, grad_y.dtype)
    if out is not None:
        _apart([("out", grad_x)], [("grad_y", grad_y)])
    (kh, kw), (sh, sw) = _spatial2d(size, ndim, 1), _spatial2d(stride, ndim, 1)
    return _KernelCall(_pooling.avg_pool2d_backward,
                       (_as_4d(grad_y, ndim), _as_4d(grad_x, ndim), kh, kw, sh, sw),
                       grad_x)


def max_pool2d(x, size, stride=None, n_threads=None, out=None, relu=False):
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
    relu : bool, default False
        Return ``relu(y)`` (negative maxima become 0, NaN stays NaN), the
        same bits as ``max_pool2d(relu(x))`` with one pass over the data
        instead of two: ReLU keeps order, so it commutes with a maximum.
        The ReLU's gradient is then :func:`max_pool2d_backward`'s
        ``relu_output``.

    Returns
    -------
    y : array of shape (N, C, Ho, Wo)
        ``Ho = (H - KH) // sh + 1``, likewise ``Wo``.
    argmax : int32 array of shape (N, C, Ho, Wo)
        Index ``h * W + w`` of each maximum within its (H, W) plane. Ties
        go to the first maximum in row-major order; a NaN is a window's
        maximum (the first NaN).
    """
    return _max_pool(x, size, stride, n_threads, ndim=2, out=out, relu=relu)


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
    return _max_pool_backward(grad_y, argmax, x_shape, n_threads, ndim=2, out=out,
                              relu_output=relu_output)


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
    return _avg_pool(x, size, stride, n_threads, ndim=2, out=out)


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
    return _avg_pool_backward(grad_y, x_shape, size, stride, n_threads, ndim=2, out=out)


# -------------------------------------------------------------- 1-D signals

def correlate1d(x, w, bias=None, stride=1, padding=0, n_threads=None, out=None):
    """Multi-channel 1-D correlation of a batch of signals.

    ``y[n, f, i] = bias[f] + sum_{c, a} w[f, c, a] x[n, c, i*stride + a - padding]``.

    Parameters
    ----------
    x : array of shape (N, C, L), float32 or float64
    w : array of shape (F, C, K)
    bias : array of shape (F,), default None
    stride : int or (int,), default 1
    padding : int or (int,), default 0
    n_threads : int or None

    Returns
    -------
    y : array of shape (N, F, Lo), ``Lo = (L - K + 2*padding) // stride + 1``
    """
    return _correlate(x, w, bias, stride, padding, n_threads, ndim=1, out=out)


def correlate1d_backward(x, w, grad_y, stride=1, padding=0, n_threads=None):
    """Gradients through :func:`correlate1d`.

    Returns
    -------
    grad_x : array of shape (N, C, L)
    grad_w : array of shape (F, C, K)
    grad_b : array of shape (F,)
    """
    return _correlate_backward(x, w, grad_y, stride, padding, n_threads, ndim=1)


def correlate1d_backward_input(grad_y, w, x_shape, stride=1, padding=0,
                               n_threads=None, out=None):
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
    return _correlate_backward_input(grad_y, w, x_shape, stride, padding,
                                     n_threads, ndim=1, out=out)


def correlate1d_backward_kernel(x, grad_y, w_shape, stride=1, padding=0,
                                n_threads=None, out=None):
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
    return _correlate_backward_kernel(x, grad_y, w_shape, stride, padding,
                                      n_threads, ndim=1, out=out)


def max_pool1d(x, size, stride=None, n_threads=None, out=None, relu=False):
    """Maximum over each window of a signal, and where it was.

    Parameters
    ----------
    x : array of shape (N, C, L)
    size : int
    stride : int, default None (= size)
    n_threads : int or None
    out : tuple of arrays (y, argmax), optional
    relu : bool, default False
        Return ``relu(y)``, as :func:`max_pool2d` does.

    Returns
    -------
    y : array of shape (N, C, Lo), ``Lo = (L - size) // stride + 1``
    argmax : int32 array of shape (N, C, Lo)
        Position of each maximum within its signal; ties to the first.
    """
    return _max_pool(x, size, stride, n_threads, ndim=1, out=out, relu=relu)


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
    return _max_pool_backward(grad_y, argmax, x_shape, n_threads, ndim=1, out=out,
                              relu_output=relu_output)


def avg_pool1d(x, size, stride=None, n_threads=None, out=None):
    """Mean over each window of a signal.

    Returns
    -------
    y : array of shape (N, C, Lo)
    """
    return _avg_pool(x, size, stride, n_threads, ndim=1, out=out)


def avg_pool1d_backward(grad_y, x_shape, size, stride=None, n_threads=None, out=None):
    """Spread each output gradient evenly over its window.

    Returns
    -------
    grad_x : array of shape x_shape
    """
    return _avg_pool_backward(grad_y, x_shape, size, stride, n_threads, ndim=1, out=out)


# ------------------------------------------------------- dense (linear) maps

@functools.lru_cache(maxsize=64)
def _row_offsets(n_rows, row_length):
    """Where each row of an (n_rows, row_length) array starts, for the dense
    kernels, which read the rows of their left operand in place."""
    offsets = np.arange(n_rows, dtype=np.intp) * row_length
    offsets.flags.writeable = False
    return offsets


def _check_linear(x, w, x_name="x"):
    x = _float_array(x, x_name, 2, "(N, D)")
    w = _float_array(w, "w", 2, "(U, D)")
    _same_dtype(x_name, x, "w", w)
    return x, w


def linear(x, w, bias=None, n_threads=None, out=None):
    """Dense layer: ``y = x w^T + bias``.

    Parameters
    ----------
    x : array of shape (N, D), float32 or float64
    w : array of shape (U, D), same dtype
    bias : array of shape (U,), default None (zero)
    n_threads : int or None
    out : array of shape (N, U), optional
        Where to write y (C-contiguous, dtype of x).

    Returns
    -------
    y : array of shape (N, U)
    """
    return _linear_call(x, w, bias, out).run(effective_n_threads(n_threads))


def _linear_call(x, w, bias=None, out=None):
    x, w = _check_linear(x, w)
    if x.shape[1] != w.shape[1]:
        raise ValueError(
            f"x has {x.shape[1]} features but w (U, D) = {w.shape} expects "
            f"{w.shape[1]}")
    units = w.shape[0]
    bias = _check_bias(bias, units, x, "(U,)")
    y = _output(out, (x.shape[0], units), x.dtype)
    if out is not None:
        _apart([("out", y)], [("x", x), ("w", w), ("bias", bias)])
    return _KernelCall(_dense.dense_forward,
                       (x, w, bias, y, _row_offsets(*x.shape)), y)


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
    return _linear_backward_input_call(grad_y, w, out).run(
        effective_n_threads(n_threads))


def _linear_backward_input_call(grad_y, w, out=None):
    grad_y, w = _check_linear(grad_y, w, "grad_y")
    if grad_y.shape[1] != w.shape[0]:
        raise ValueError(
            f"grad_y has {grad_y.shape[1]} columns but w (U, D) = {w.shape} "
            f"has {w.shape[0]} units")
    grad_x = _output(out, (grad_y.shape[0], w.shape[1]), w.dtype)
    if out is not None:
        _apart([("out", grad_x)], [("grad_y", grad_y), ("w", w)])
    return _KernelCall(_dense.dense_backward_input,
                       (grad_y, w, grad_x, _row_offsets(*grad_y.shape)), grad_x)


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
    return _linear_backward_weight_call(x, grad_y, out).run(
        effective_n_threads(n_threads))


def _linear_backward_weight_call(x, grad_y, out=None):
    x = _float_array(x, "x", 2, "(N, D)")
    grad_y = _float_array(grad_y, "grad_y", 2, "(N, U)")
    _same_dtype("x", x, "grad_y", grad_y)
    if grad_y.shape[0] != x.shape[0]:
        raise ValueError(
            f"x has {x.shape[0]} samples but grad_y has {grad_y.shape[0]}")
    units = grad_y.shape[1]
    grad_w, grad_b = _pair(out, "(grad_w, grad_b)")
    grad_w = _output(grad_w, (units, x.shape[1]), x.dtype, "out[0] (grad_w)")
    grad_b = _output(grad_b, (units,), x.dtype, "out[1] (grad_b)")
    if out is not None:
        _apart([("out[0] (grad_w)", grad_w), ("out[1] (grad_b)", grad_b)],
               [("x", x), ("grad_y", grad_y)])
    return _KernelCall(_dense.dense_backward_weight, (x, grad_y, grad_w, grad_b),
                       (grad_w, grad_b))


def linear_backward(x, w, grad_y, n_threads=None):
    """Gradients through :func:`linear`: ``(grad_x, grad_w, grad_b)``."""
    x, w = _check_linear(x, w)
    if x.shape[1] != w.shape[1]:
        raise ValueError(
            f"x has {x.shape[1]} features but w (U, D) = {w.shape} expects "
            f"{w.shape[1]}")
    grad_x = linear_backward_input(grad_y, w, n_threads)
    grad_w, grad_b = linear_backward_weight(x, grad_y, n_threads)
    return grad_x, grad_w, grad_b


# ------------------------------------------------------------- activations

def _flat_float(a, name):
    a = np.asarray(a)
    if a.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be a float32 or float64 array, got dtype {a.dtype}")
    return _readable(a)


def relu(x, n_threads=None, out=None):
    """``max(x, 0)`` elementwise, any shape; NaN stays NaN.

    ``out`` may be ``x`` itself (in place); an ``out`` that overlaps ``x``
    otherwise raises ValueError.
    """
    return _relu_call(x, out).run(effective_n_threads(n_threads))


def _relu_call(x, out=None):
    x = _flat_float(x, "x")
    y = _output(out, x.shape, x.dtype)
    if out is not None and not _same_memory(y, x):
        _apart([("out", y)], [("x", x)])
    return _KernelCall(_activations.relu_forward, (x.reshape(-1), y.reshape(-1)), y)


def relu_backward(grad_y, y, n_threads=None, out=None):
    """Gradient through :func:`relu`: grad_y where the output y is positive,
    zero elsewhere. ``out`` may be ``grad_y`` (or ``y``) itself; an ``out``
    that overlaps them otherwise raises ValueError."""
    return _relu_backward_call(grad_y, y, out).run(effective_n_threads(n_threads))


def _relu_backward_call(grad_y, y, out=None):
    grad_y = _flat_float(grad_y, "grad_y")
    y = _flat_float(y, "y")
    _same_dtype("grad_y", grad_y, "y", y)
    if grad_y.shape != y.shape:
        raise ValueError(
            f"grad_y {grad_y.shape} and y {y.shape} must have the same shape")
    grad_x = _output(out, y.shape, y.dtype)
    if out is not None:
        # element by element, each read before it is written: the very
        # arrays of an input may be the output, a shifted view may not
        _apart([("out", grad_x)],
               [(name, a) for name, a in (("grad_y", grad_y), ("y", y))
                if not _same_memory(grad_x, a)])
    return _KernelCall(_activations.relu_backward,
                       (grad_y.reshape(-1), y.reshape(-1), grad_x.reshape(-1)), grad_x)


# ----------------------------------------------------------------- batches

def take_samples(x, index, n_threads=None, out=None):
    """The samples of ``x`` that ``index`` selects along the first axis,
    copied by several threads: ``x[index]``, into ``out`` when given.

    Parameters
    ----------
    x : array of shape (N, ...), float32 or float64
        Non-contiguous x is copied to C order first, whole: pass a
        C-contiguous array when calling this once per batch.
    index : integer array of shape (B,)
        Values in [0, N). A negative value is an error (it does not count
        from the end).
    n_threads : int, default=None
    out : array of shape (B, ...), dtype of x, optional

    Returns
    -------
    batch : array of shape (B, ...), dtype of x

    Raises
    ------
    IndexError
        When a value of ``index`` lies outside [0, N); nothing is written.
    """
    if not (type(x) is np.ndarray and x.dtype in _FLOAT_DTYPES and x.ndim):
        x = np.asarray(x)
        if x.dtype not in _FLOAT_DTYPES:
            raise TypeError(
                f"x must be a float32 or float64 array, got dtype {x.dtype}")
        if x.ndim == 0:
            raise ValueError("x must have a first axis of samples, got a scalar")
    x = _readable(x)
    if not (type(index) is np.ndarray and index.dtype in _INDEX_DTYPES):
        index = np.asarray(index)
        if index.dtype.kind not in "iu" and index.size:   # [] is float64
            raise TypeError(f"index must be an integer array, got dtype {index.dtype}")
        # values past the intp range wrap to negative ones, which are rejected
        index = index.astype(np.intp)
    if index.ndim != 1:
        raise ValueError(f"index must be 1-D, got shape {index.shape}")
    index = _readable(index)
    batch = _output(out, (len(index),) + x.shape[1:], x.dtype)
    if out is not None:
        _apart([("out", batch)], [("x", x), ("index", index)])
    row = math.prod(x.shape[1:])
    _batch.take_rows(x.reshape(len(x), row), index,
                     batch.reshape(len(index), row), effective_n_threads(n_threads))
    return batch


# -------------------------------------------------------------------- loss

def log_softmax(logits):
    """``log(softmax(logits))`` along the last axis, computed stably (the
    row maximum is subtracted before exponentiating)."""
    logits = _flat_float(logits, "logits")
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
    logits = _flat_float(logits, "logits")
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
    if target.dtype not in _INDEX_DTYPES:
        target = target.astype(np.intp)   # wider values wrap to negative
    target = _readable(target)
    grad = _output(out, logits.shape, logits.dtype)   # the kernel checks target's range
    if out is not None:
        _apart([("out", grad)], [("logits", logits), ("target", target)])
    loss = _loss.softmax_cross_entropy(logits, target, grad)
    return loss, grad


# ----------------------------------------------------------------- updates

def _check_update(params, grads, **state):
    """params and the optimizer state updated in place with it (``state``,
    by name) checked: writeable, 1-D, C-contiguous, aligned, of one float
    dtype, apart from each other and from grads. grads, only read, is
    returned as the kernel reads it (a copy if need be)."""
    if not isinstance(params, np.ndarray) or params.ndim != 1 or not (
            params.flags.c_contiguous and params.flags.writeable
            and params.flags.aligned):
        raise ValueError("params must be a writeable, aligned, 1-D contiguous array")
    if params.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"params must be float32 or float64, got {params.dtype}")
    grads = np.asarray(grads)
    for name, a in [("grads", grads)] + list(state.items()):
        if isinstance(a, np.ndarray) and a.dtype != params.dtype:
            raise TypeError(
                f"params has dtype {params.dtype} but {name} has dtype "
                f"{a.dtype}; all must share one float dtype")
        if not isinstance(a, np.ndarray) or a.shape != params.shape:
            raise ValueError(f"{name} must be an array of params' shape {params.shape}")
        if name != "grads" and not (a.flags.c_contiguous and a.flags.aligned
                                    and a.flags.writeable):
            raise ValueError(f"{name} must be a writeable, aligned, contiguous array")
    grads = _readable(grads)
    _apart([("params", params)] + list(state.items()), [("grads", grads)])
    return grads


def _real(value, name, low, high=math.inf, high_included=True):
    """``value`` as a float in [low, high] (or [low, high)), else a
    ValueError naming it; NaN is never in range."""
    if not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not (low <= value <= high) or (value == high and not high_included):
        closing = "]" if high_included else ")"
        raise ValueError(f"{name} must lie in [{low}, {high}{closing}, got {value}")
    return value


def _check_n_penalized(n_penalized, size):
    if n_penalized is None:
        return size
    n_penalized = _integer(n_penalized, "n_penalized", 0, maximum=math.inf)
    if n_penalized > size:
        raise ValueError(
            f"n_penalized must be at most the number of parameters {size}, "
            f"got {n_penalized}")
    return n_penalized


def sgd_update(params, grads, velocity, learning_rate, momentum=0.9,
               nesterov=True, l2=0.0, n_penalized=None, n_threads=None):
    """One SGD step with momentum, in place on ``params`` and ``velocity``.

    ``g = grads + l2 * params`` on the first ``n_penalized`` entries (all by
    default), ``velocity = momentum * velocity - learning_rate * g``, then
    ``params += velocity``, or with Nesterov momentum
    ``params += momentum * velocity - learning_rate * g``.

    Parameters
    ----------
    params, grads, velocity : 1-D arrays of one shape and float dtype
    learning_rate, momentum, l2 : float
    nesterov : bool
    n_penalized : int or None
    """
    grads = _check_update(params, grads, velocity=velocity)
    n_penalized = _check_n_penalized(n_penalized, params.size)
    learning_rate = _real(learning_rate, "learning_rate", 0)
    momentum = _real(momentum, "momentum", 0)
    l2 = _real(l2, "l2", 0)
    n_threads = effective_n_threads(n_threads)
    if params.size == 0:
        return   # nothing to update (the kernels index element 0)
    _optim.sgd_step(params, grads, velocity, learning_rate, momentum,
                    bool(nesterov), l2, n_penalized, n_threads)


def adam_update(params, grads, first_moment, second_moment, step,
                learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-8, l2=0.0,
                n_penalized=None, n_threads=None):
    """One Adam step, in place on ``params`` and the two moment estimates.

    With ``g`` as in :func:`sgd_update`: ``m = beta_1 m + (1 - beta_1) g``,
    ``v = beta_2 v + (1 - beta_2) g^2`` and
    ``params -= lr_t m / (sqrt(v) + epsilon)`` where
    ``lr_t = learning_rate sqrt(1 - beta_2^step) / (1 - beta_1^step)`` and
    ``step`` counts from 1.
    """
    grads = _check_update(params, grads, first_moment=first_moment,
                          second_moment=second_moment)
    step = _integer(step, "step", 1, maximum=math.inf)
    n_penalized = _check_n_penalized(n_penalized, params.size)
    learning_rate = _real(learning_rate, "learning_rate", 0)
    beta_1 = _real(beta_1, "beta_1", 0, 1, high_included=False)
    beta_2 = _real(beta_2, "beta_2", 0, 1, high_included=False)
    epsilon = _real(epsilon, "epsilon", 0)
    l2 = _real(l2, "l2", 0)
    step_size = (learning_rate * math.sqrt(1 - beta_2 ** step)
                 / (1 - beta_1 ** step))
    n_threads = effective_n_threads(n_threads)
    if params.size == 0:
        return   # nothing to update (the kernels index element 0)
    _optim.adam_step(params, grads, first_moment, second_moment, step_size,
                     beta_1, beta_2, epsilon, l2, n_penalized,
                     n_threads)


# ------------------------------------------------------- prepared calls

def _builders():
    """For each function prepare() takes: its arguments, but n_threads, into
    a validated _KernelCall (the same validation as a call)."""
    def correlate(ndim):
        return lambda x, w, bias=None, stride=1, padding=0, out=None: \
            _correlate_call(x, w, bias, stride, padding, ndim, out)

    def backward_input(ndim):
        return lambda grad_y, w, x_shape, stride=1, padding=0, out=None: \
            _correlate_backward_input_call(grad_y, w, x_shape, stride, padding,
                                           ndim, out)

    def backward_kernel(ndim):
        return lambda x, grad_y, w_shape, stride=1, padding=0, out=None: \
            _correlate_backward_kernel_call(x, grad_y, w_shape, stride, padding,
                                            ndim, out)

    def max_pool(ndim):
        return lambda x, size, stride=None, out=None, relu=False: \
            _max_pool_call(x, size, stride, ndim, out, relu)

    def max_pool_backward(ndim):
        return lambda grad_y, argmax, x_shape, out=None, relu_output=None: \
            _max_pool_backward_call(grad_y, argmax, x_shape, ndim, out, relu_output)

    def avg_pool(ndim):
        return lambda x, size, stride=None, out=None: \
            _avg_pool_call(x, size, stride, ndim, out)

    def avg_pool_backward(ndim):
        return lambda grad_y, x_shape, size, stride=None, out=None: \
            _avg_pool_backward_call(grad_y, x_shape, size, stride, ndim, out)

    return {
        correlate2d: correlate(2), correlate1d: correlate(1),
        correlate2d_backward_input: backward_input(2),
        correlate1d_backward_input: backward_input(1),
        correlate2d_backward_kernel: backward_kernel(2),
        correlate1d_backward_kernel: backward_kernel(1),
        max_pool2d: max_pool(2), max_pool1d: max_pool(1),
        max_pool2d_backward: max_pool_backward(2),
        max_pool1d_backward: max_pool_backward(1),
        avg_pool2d: avg_pool(2), avg_pool1d: avg_pool(1),
        avg_pool2d_backward: avg_pool_backward(2),
        avg_pool1d_backward: avg_pool_backward(1),
        linear: _linear_call, linear_backward_input: _linear_backward_input_call,
        linear_backward_weight: _linear_backward_weight_call,
        relu: _relu_call, relu_backward: _relu_backward_call,
    }


_BUILDERS = _builders()
_AS_THE_KERNELS_READ = _FLOAT_DTYPES + (np.dtype(np.int32),)
_PARAMETER_NAMES = {function: tuple(inspect.signature(function).parameters)
                    for function in _BUILDERS}
# the parameters of those functions that take arrays (out: one or a pair)
_ARRAY_PARAMETERS = ("x", "w", "bias", "grad_y", "y", "argmax", "relu_output", "out")


def _prepared_arrays(function, args, kwargs):
    """The arrays of a call to prepare, by parameter name, each checked to
    be one the kernel reads as it is: any other would be copied during
    validation, and later runs would compute on the stale copy."""
    # by name as the function would bind them (the builder refuses the rest)
    named = list(zip(_PARAMETER_NAMES[function], args)) + list(kwargs.items())
    if any(name == "n_threads" for name, _ in named):
        raise TypeError("prepare takes n_threads when the call runs, not here")
    arrays = []
    for name, value in named:
        if name not in _ARRAY_PARAMETERS or value is None:
            continue
        pair = name == "out" and isinstance(value, tuple)
        for i, a in enumerate(value if pair else (value,)):
            if a is None:
                continue
            if not (type(a) is np.ndarray and a.dtype in _AS_THE_KERNELS_READ
                    and a.flags.c_contiguous and a.flags.aligned):
                label = f"{name}[{i}]" if pair else name
                raise ValueError(
                    f"prepare needs {label} as the kernel reads it (a C-contiguous, "
                    "aligned NumPy array, float32 or float64, int32 indices), "
                    "not a copy of it; got "
                    f"{type(a).__name__} {getattr(a, 'dtype', '')} "
                    f"{getattr(a, 'shape', '')}")
            arrays.append(a)
    return arrays


def prepare(function, *args, **kwargs):
    """Validate a call of ``function`` once, to run it again and again.

    ``prepare(f, *args, **kwargs).run(n_threads)`` computes what
    ``f(*args, **kwargs, n_threads=n_threads)`` computes, but checks the
    arguments only here: each run calls the kernel directly, on the same
    arrays. The arrays' values may change between runs, their shapes must
    not (a run raises ValueError if one was reshaped in place), and the
    results are written into the same arrays on every run
    (``out``, or arrays allocated here). For a caller that repeats one
    computation on arrays of its own, such as a network's buffers batch
    after batch, where the checks cost more than a small kernel.

    Parameters
    ----------
    function : one of correlate2d, correlate1d, their _backward_input and
        _backward_kernel, max_pool2d/1d, avg_pool2d/1d and their _backward,
        linear, linear_backward_input, linear_backward_weight, relu,
        relu_backward
    *args, **kwargs
        Its arguments, but ``n_threads``. Every array must be one the kernel
        reads as it is (C-contiguous, float32 or float64, int32 indices),
        so that no run computes on a copy made here.

    Returns
    -------
    call
        ``call.run(n_threads)`` runs the kernel on ``n_threads`` threads, a
        positive int (resolve others with fastcnn._threads'
        effective_n_threads), and returns what ``function`` returns.
    """
    build = _BUILDERS.get(function)
    if build is None:
        raise ValueError(f"prepare does not take {function!r}")
    arrays = _prepared_arrays(function, args, kwargs)
    call = build(*args, **kwargs)
    # the caller's arrays and the results it gets back, each once: their
    # shapes can change in place, their memory cannot
    results = call.result if isinstance(call.result, tuple) else (call.result,)
    watched = {id(a): a for a in arrays + list(results)}
    call.shapes = tuple((a, a.shape) for a in watched.values())
    return call
