"""Dropout and channel-wise dropout: the functions over src/dropout.pyx.

Both functions are deterministic: the caller draws the uniforms (a layer
draws them in Python from its own generator, so that training is
reproducible and the same for any number of threads) and passes them in.
A value is kept where its uniform is at least ``rate``, which for
uniforms on [0, 1) happens with probability ``1 - rate``.
"""
from .._kernels import dropout as _kernels
from ._calls import KernelCall, preparable, run_unless_preparing
from ._checks import (any_shape_float_array, check_apart, output_array, real,
                      same_dtype, same_memory)


def _dropout_call(values, name, uniforms, rate, out):
    """The kernel call of dropout and of its backward pass, which compute
    the same product, each on its own values."""
    values = any_shape_float_array(values, name)
    uniforms = any_shape_float_array(uniforms, "uniforms")
    same_dtype(name, values, "uniforms", uniforms)
    rate = real(rate, "rate", 0.0, 1.0, high_included=False)
    if uniforms.shape == values.shape:
        kernel = _kernels.dropout_values
    elif values.ndim >= 2 and uniforms.shape == values.shape[:2]:
        kernel = _kernels.dropout_rows
    else:
        raise ValueError(
            f"uniforms must have the shape of {name} {values.shape} (one per "
            f"value) or its first two axes {values.shape[:2]} (one per sample "
            f"and channel), got {uniforms.shape}")
    result = output_array(out, values.shape, values.dtype)
    if out is not None:
        # element by element, each read before it is written: the values'
        # own array may be the output, a shifted view or the uniforms not
        check_apart([("out", result)],
                    ([] if same_memory(result, values) else [(name, values)])
                    + [("uniforms", uniforms)])
    scale = 1.0 / (1.0 - rate)
    return KernelCall(kernel, (values.reshape(-1), uniforms.reshape(-1),
                               result.reshape(-1), rate, scale), result)


@preparable
def dropout(x, uniforms, rate, n_threads=None, out=None):
    """Inverted dropout with the mask given by ``uniforms``:
    ``y = x * mask * scale``, where ``mask`` is ``uniforms >= rate`` and
    ``scale = 1 / (1 - rate)`` (rounded to x's dtype, as ``rate`` is).

    Parameters
    ----------
    x : float32 or float64 array, any shape
    uniforms : array of x's dtype
        Of x's shape (one per value: dropout), or of its first two axes
        ``(N, C)`` (one per sample and channel, shared by all the values of
        that channel: channel-wise dropout, as SpatialDropout1D/2D). Draw
        them uniform on [0, 1) for a mask that keeps each value (channel)
        with probability ``1 - rate``.
    rate : float in [0, 1)
    out : array, optional
        May be ``x`` itself (in place); an ``out`` that overlaps ``x``
        otherwise, or ``uniforms``, raises ValueError.

    A dropped value is multiplied by 0, so a dropped NaN or infinity gives
    NaN (as PyTorch's ``x * mask`` does). ``rate=0`` keeps every value as
    it is.
    """
    return run_unless_preparing(_dropout_call(x, "x", uniforms, rate, out),
                                n_threads)


@preparable
def dropout_backward(grad_y, uniforms, rate, n_threads=None, out=None):
    """Gradient through :func:`dropout` with the same ``uniforms`` and
    ``rate``: ``grad_x = grad_y * mask * scale``. ``out`` may be
    ``grad_y`` itself; see :func:`dropout` for the rest."""
    return run_unless_preparing(
        _dropout_call(grad_y, "grad_y", uniforms, rate, out), n_threads)
