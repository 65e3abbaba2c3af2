"""A training batch copied out of the training set, and the finiteness of
a batch of input: the functions over src/batch.pyx."""
import math

import numpy as np

from .._kernels import batch as _kernels
from .._threads import effective_n_threads
from ._checks import (FLOAT_DTYPES, INDEX_DTYPES, check_apart, output_array,
                      readable)


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
    if not (type(x) is np.ndarray and x.dtype in FLOAT_DTYPES and x.ndim):
        x = np.asarray(x)
        if x.dtype not in FLOAT_DTYPES:
            raise TypeError(
                f"x must be a float32 or float64 array, got dtype {x.dtype}")
        if x.ndim == 0:
            raise ValueError("x must have a first axis of samples, got a scalar")
    x = readable(x)
    if not (type(index) is np.ndarray and index.dtype in INDEX_DTYPES):
        index = np.asarray(index)
        if index.dtype.kind not in "iu" and index.size:   # [] is float64
            raise TypeError(f"index must be an integer array, got dtype {index.dtype}")
        # values past the intp range wrap to negative ones, which are rejected
        index = index.astype(np.intp)
    if index.ndim != 1:
        raise ValueError(f"index must be 1-D, got shape {index.shape}")
    index = readable(index)
    batch = output_array(out, (len(index),) + x.shape[1:], x.dtype)
    if out is not None:
        check_apart([("out", batch)], [("x", x), ("index", index)])
    row = math.prod(x.shape[1:])
    _kernels.take_rows(x.reshape(len(x), row), index,
                       batch.reshape(len(index), row), effective_n_threads(n_threads))
    return batch


def all_finite(x):
    """Whether no value of ``x`` (a float32 or float64 array of any shape)
    is NaN or infinite, in one pass without floating-point arithmetic
    (nothing to overflow, no warnings)."""
    x = readable(np.asarray(x))
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"x must be a float32 or float64 array, got dtype {x.dtype}")
    return _kernels.all_finite(x.reshape(-1))
