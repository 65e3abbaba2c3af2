"""The argument checks and conversions the functions of fastcnn.functional
share: arrays as the kernels read them, output arrays, integer and real
parameters, shapes. Each raises the TypeError or ValueError that names what
is wrong, before any compiled code runs."""
import functools
import math
import numbers
import operator

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# the kernels take indices of either type as they are
INDEX_DTYPES = (np.dtype(np.int32), np.dtype(np.intp))
# Signals run through the image kernels as images of height 1.
SPATIAL = {1: "(N, C, L)", 2: "(N, C, H, W)"}
KERNEL_LAYOUT = {1: "(F, C, K)", 2: "(F, C, KH, KW)"}


def readable(a):
    """``a`` as the kernels read it, C-contiguous and aligned: itself when it
    is, else a copy (np.ascontiguousarray would keep a misaligned view, and
    turn a 0-d array into shape (1,))."""
    flags = a.flags
    if flags.c_contiguous and flags.aligned:
        return a
    return np.array(a, order="C")


def float_array(a, name, ndim, layout):
    """``a`` as a C-contiguous, aligned float32/float64 array of ``ndim``
    dimensions."""
    if (type(a) is np.ndarray and a.ndim == ndim and a.dtype in FLOAT_DTYPES
            and a.size):
        return readable(a)   # what a network passes on every call
    a = np.asarray(a)
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be a float32 or float64 array, got dtype {a.dtype}")
    if a.ndim != ndim:
        raise ValueError(
            f"{name} must have {ndim} dimensions {layout}, got shape {a.shape}")
    if 0 in a.shape:
        raise ValueError(f"{name} must not be empty, got shape {a.shape}")
    return readable(a)


def same_dtype(first, a, name, b):
    """a's dtype; a TypeError naming both dtypes when b's differs."""
    if b.dtype != a.dtype:
        raise TypeError(
            f"{first} has dtype {a.dtype} but {name} has dtype {b.dtype}; "
            "cast both to the same float dtype (float32 or float64)")
    return a.dtype


# Largest stride, padding or window size: beyond it no input fits in memory
# (C longs on some platforms are 32 bits), and a bound keeps every size the
# kernels derive from them within 64 bits.
MAX_GEOMETRY = 2**31 - 1


def integer(value, name, minimum, maximum=MAX_GEOMETRY):
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


def per_axis(value, name, ndim, minimum):
    """An int or a tuple of ``ndim`` ints, validated, as a tuple of ``ndim``."""
    if type(value) is int:   # the common case, without np.ndim's conversion
        return (integer(value, name, minimum),) * ndim
    if isinstance(value, (tuple, list)) or np.ndim(value) > 0:
        values = tuple(value)
        if len(values) != ndim:
            raise ValueError(
                f"{name} must be an int or a tuple of {ndim} ints, got {value!r}")
    else:
        values = (value,) * ndim
    return tuple(integer(v, name, minimum) for v in values)


def padding_pairs(value, ndim):
    """Padding as ``ndim`` (before, after) pairs: an int pads every side
    alike; a tuple of ``ndim`` entries gives each axis an int (both sides)
    or a (before, after) pair."""
    if type(value) is int:   # the common case
        p = integer(value, "padding", 0)
        return ((p, p),) * ndim
    if isinstance(value, (tuple, list)) or np.ndim(value) > 0:
        values = tuple(value)
        if len(values) != ndim:
            raise ValueError(
                f"padding must be an int or a tuple of {ndim} entries (each an "
                f"int or a (before, after) pair), got {value!r}")
    else:
        values = (value,) * ndim
    return tuple(_padding_pair(v) for v in values)


def _padding_pair(value):
    if isinstance(value, (tuple, list)) or np.ndim(value) > 0:
        pair = tuple(value)
        if len(pair) != 2:
            raise ValueError(
                f"padding of an axis must be an int or a (before, after) pair, "
                f"got {value!r}")
        return tuple(integer(v, "padding", 0) for v in pair)
    p = integer(value, "padding", 0)
    return (p, p)


def empty_aligned(shape, dtype):
    """np.empty whose data starts on a 64-byte boundary (a cache line and an
    AVX-512 vector): NumPy's large arrays start 16 bytes past one, and the
    kernels write lines whole (non-temporal stores) only where they are
    aligned."""
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    n_bytes = math.prod(shape) * dtype.itemsize
    raw = np.empty(n_bytes + 64, dtype=np.uint8)
    start = -raw.ctypes.data % 64
    return raw[start:start + n_bytes].view(dtype).reshape(shape)


def output_array(out, shape, dtype, name="out"):
    """A fresh array of ``shape``, or ``out`` checked to be one: the kernels
    write through it without bounds checks."""
    if out is None:
        return empty_aligned(shape, dtype)
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


def output_pair(out, names):
    """The two arrays of an ``out`` that takes a pair (None: none given)."""
    if out is None:
        return None, None
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise TypeError(f"out must be a tuple of two arrays {names}, got {out!r:.80}")
    return out


def check_apart(outputs, inputs):
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


def same_memory(a, b):
    """Whether a and b are views of exactly the same values (an operation
    that reads each element before writing it may then run in place)."""
    return (a.shape == b.shape and a.strides == b.strides
            and a.__array_interface__["data"][0] == b.__array_interface__["data"][0])


def check_bias(bias, size, x, layout):
    """bias as a contiguous array of ``size`` values of x's dtype; None is
    zero."""
    if bias is None:
        return np.zeros(size, dtype=x.dtype)
    bias = float_array(bias, "bias", 1, layout)
    same_dtype("x", x, "bias", bias)
    if bias.shape != (size,):
        raise ValueError(
            f"bias must have shape ({size},) to match w, got {bias.shape}")
    return bias


def spatial2d(values, ndim, fill):
    """Per-axis values of a signal (ndim 1) as those of an image of height
    1, whose height axis gets ``fill``; an image's as they are."""
    return values if ndim == 2 else (fill,) + values


def check_shape(shape, name, ndim):
    """``shape`` as a tuple of ndim + 2 positive ints (an input or kernel
    shape the caller gives instead of an array)."""
    if type(shape) is tuple and len(shape) == ndim + 2 and exact_ints(shape) \
            and min(shape) >= 1:
        return shape   # a network's own shapes, checked cheaply
    try:
        shape = tuple(operator.index(s) for s in shape)
    except TypeError:
        raise TypeError(f"{name} must be a tuple of ints, got {shape!r}") from None
    if len(shape) != ndim + 2 or min(shape) < 1:
        raise ValueError(
            f"{name} must be {ndim + 2} positive ints {SPATIAL[ndim]}, "
            f"got {shape!r}")
    return shape


def output_size(input_size, kernel_size, stride=1, padding=0, dilation=1):
    """Length of a correlation or pooling output along one axis.

    ``(input_size + before + after - dilation * (kernel_size - 1) - 1) // stride + 1``,
    where padding is an int (``before = after = padding``) or a
    ``(before, after)`` pair.

    Raises
    ------
    TypeError
        An argument that is not an int (or, for padding, a pair of ints).
    ValueError
        input_size or kernel_size < 1, stride < 1, padding < 0,
        dilation < 1, or a (dilated) kernel larger than the padded input.
    """
    input_size = integer(input_size, "input_size", 1, maximum=math.inf)
    kernel_size = integer(kernel_size, "kernel_size", 1, maximum=math.inf)
    stride = integer(stride, "stride", 1)
    before, after = _padding_pair(padding)
    dilation = integer(dilation, "dilation", 1)
    if kernel_size > input_size + before + after:
        raise ValueError(
            f"kernel_size {kernel_size} is larger than the padded input "
            f"{input_size} + {before} + {after}")
    span = dilation * (kernel_size - 1) + 1
    if span > input_size + before + after:
        raise ValueError(
            f"dilation {dilation} leaves no output: kernel_size {kernel_size} "
            f"then spans {span}, more than the padded input "
            f"{input_size} + {before} + {after}")
    return output_size_unchecked(input_size, kernel_size, stride, (before, after),
                                 dilation)


def output_size_unchecked(input_size, kernel_size, stride, padding=(0, 0),
                          dilation=1):
    """output_size on arguments already checked, padding a (before, after)
    pair."""
    return (input_size + padding[0] + padding[1]
            - dilation * (kernel_size - 1) - 1) // stride + 1


def exact_ints(value):
    """An int, or a tuple of ints or of pairs of ints (padding before and
    after), of type int exactly (not bool, not a float equal to an int:
    those must still be rejected)."""
    kind = type(value)
    if kind is int:
        return True
    if kind is tuple:
        for v in value:
            if type(v) is not int and not (
                    type(v) is tuple and all(type(e) is int for e in v)):
                return False
        return True
    return False


def cached_for_ints(function):
    """``function`` memoised for the calls a network makes on every batch:
    shapes plus int or tuple-of-int parameters, so validating the same
    geometry again costs a dictionary lookup. Anything else (floats, bools,
    lists, arrays) is validated afresh, and errors are never cached."""
    memoised = functools.lru_cache(maxsize=512)(function)

    def lookup(shape, *args):
        for a in args:
            if not exact_ints(a):
                return function(shape, *args)
        return memoised(shape, *args)
    lookup.__doc__ = function.__doc__
    return lookup


def as_4d(a, ndim):
    """A view of a signal array as an image of height 1."""
    return a if ndim == 2 else a[:, :, np.newaxis, :]


def any_shape_float_array(a, name):
    """``a`` as a C-contiguous, aligned float32/float64 array of any shape."""
    a = np.asarray(a)
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be a float32 or float64 array, got dtype {a.dtype}")
    return readable(a)


def real(value, name, low, high=math.inf, high_included=True):
    """``value`` as a float in [low, high] (or [low, high)), else a
    ValueError naming it; NaN is never in range."""
    if not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    closing = "]" if high_included else ")"
    try:
        value = float(value)
    except OverflowError:      # an int (or fraction) beyond every float
        raise ValueError(f"{name} must lie in [{low}, {high}{closing}, got "
                         f"{value!r:.30}..., beyond the float range") from None
    if not (low <= value <= high) or (value == high and not high_included):
        raise ValueError(f"{name} must lie in [{low}, {high}{closing}, got {value}")
    return value


