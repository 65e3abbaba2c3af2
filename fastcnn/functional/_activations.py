"""ReLU and its gradient: the functions over src/activations.pyx."""
from .._kernels import activations as _kernels
from ._calls import KernelCall, preparable, run_unless_preparing
from ._checks import (any_shape_float_array, check_apart, output_array,
                      same_dtype, same_memory)


@preparable
def relu(x, n_threads=None, out=None):
    """``max(x, 0)`` elementwise, any shape; NaN stays NaN.

    ``out`` may be ``x`` itself (in place); an ``out`` that overlaps ``x``
    otherwise raises ValueError.
    """
    x = any_shape_float_array(x, "x")
    y = output_array(out, x.shape, x.dtype)
    if out is not None and not same_memory(y, x):
        check_apart([("out", y)], [("x", x)])
    return run_unless_preparing(
        KernelCall(_kernels.relu_forward, (x.reshape(-1), y.reshape(-1)), y),
        n_threads)


@preparable
def relu_backward(grad_y, y, n_threads=None, out=None):
    """Gradient through :func:`relu`: grad_y where the output y is positive,
    zero elsewhere. ``out`` may be ``grad_y`` (or ``y``) itself; an ``out``
    that overlaps them otherwise raises ValueError."""
    grad_y = any_shape_float_array(grad_y, "grad_y")
    y = any_shape_float_array(y, "y")
    same_dtype("grad_y", grad_y, "y", y)
    if grad_y.shape != y.shape:
        raise ValueError(
            f"grad_y {grad_y.shape} and y {y.shape} must have the same shape")
    grad_x = output_array(out, y.shape, y.dtype)
    if out is not None:
        # element by element, each read before it is written: the very
        # arrays of an input may be the output, a shifted view may not
        check_apart([("out", grad_x)],
                    [(name, a) for name, a in (("grad_y", grad_y), ("y", y))
                     if not same_memory(grad_x, a)])
    return run_unless_preparing(
        KernelCall(_kernels.relu_backward,
                   (grad_y.reshape(-1), y.reshape(-1), grad_x.reshape(-1)), grad_x),
        n_threads)
