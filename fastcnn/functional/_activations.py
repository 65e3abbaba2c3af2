"""Activations and their gradients: the functions over src/activations.pyx.

ReLU, tanh, sigmoid, leaky ReLU and ELU compute their gradients from their
output y (so a network may run their forward pass over its input); GELU,
whose derivative is not a function of its output, from its input x.
"""
import math

from .._kernels import activations as _kernels
from ._calls import KernelCall, preparable, run_unless_preparing
from ._checks import (any_shape_float_array, check_apart, output_array, real,
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


# ------------------------------------- tanh, sigmoid, leaky ReLU, ELU, GELU

def _elementwise(kernel, x, out, params=()):
    """The KernelCall of a forward kernel: ``out`` (fresh when None) from
    ``x``, both any shape; ``out`` may be ``x`` itself."""
    x = any_shape_float_array(x, "x")
    y = output_array(out, x.shape, x.dtype)
    if out is not None and not same_memory(y, x):
        check_apart([("out", y)], [("x", x)])
    return KernelCall(kernel, (x.reshape(-1), y.reshape(-1)) + params, y)


def _elementwise_backward(kernel, grad_y, activation, name, out, params=()):
    """The KernelCall of a backward kernel: grad_x (``out``, fresh when
    None) from grad_y and the activation it reads, named ``name`` (the
    output y or the input x), all of one shape; ``out`` may be grad_y or
    the activation itself, element by element read before written."""
    grad_y = any_shape_float_array(grad_y, "grad_y")
    activation = any_shape_float_array(activation, name)
    same_dtype("grad_y", grad_y, name, activation)
    if grad_y.shape != activation.shape:
        raise ValueError(f"grad_y {grad_y.shape} and {name} {activation.shape} "
                         "must have the same shape")
    grad_x = output_array(out, activation.shape, activation.dtype)
    if out is not None:
        check_apart([("out", grad_x)],
                    [(n, a) for n, a in (("grad_y", grad_y), (name, activation))
                     if not same_memory(grad_x, a)])
    return KernelCall(kernel, (grad_y.reshape(-1), activation.reshape(-1),
                               grad_x.reshape(-1)) + params, grad_x)


def _negative_slope(value):
    """Finite and >= 0: the gradient is then told from the output's sign,
    which is the input's."""
    return real(value, "negative_slope", 0.0, math.inf, high_included=False)


def _alpha(value):
    """Finite and > 0: ELU's output is then negative exactly where its input
    is, and its derivative there is y + alpha (alpha = 0 would be a ReLU)."""
    alpha = real(value, "alpha", 0.0, math.inf, high_included=False)
    if alpha == 0.0:
        raise ValueError("alpha must be > 0, got 0.0 (ELU with alpha 0 is a ReLU)")
    return alpha


@preparable
def tanh(x, n_threads=None, out=None):
    """``tanh(x)`` elementwise, any shape (libm's tanh); NaN stays NaN.

    ``out`` may be ``x`` itself (in place); an ``out`` that overlaps ``x``
    otherwise raises ValueError.
    """
    return run_unless_preparing(_elementwise(_kernels.tanh_forward, x, out), n_threads)


@preparable
def tanh_backward(grad_y, y, n_threads=None, out=None):
    """Gradient through :func:`tanh` from its output y: ``grad_y * (1 - y**2)``.
    ``out`` may be ``grad_y`` (or ``y``) itself; an ``out`` that overlaps
    them otherwise raises ValueError."""
    return run_unless_preparing(_elementwise_backward(
        _kernels.tanh_backward, grad_y, y, "y", out), n_threads)


@preparable
def sigmoid(x, n_threads=None, out=None):
    """The logistic function ``1 / (1 + exp(-x))`` elementwise, any shape,
    computed without overflow for any x (through ``exp(-|x|)``): 0 and 1
    at -inf and +inf; NaN stays NaN. ``out`` as for :func:`tanh`."""
    return run_unless_preparing(_elementwise(_kernels.sigmoid_forward, x, out),
                                n_threads)


@preparable
def sigmoid_backward(grad_y, y, n_threads=None, out=None):
    """Gradient through :func:`sigmoid` from its output y:
    ``grad_y * y * (1 - y)``. ``out`` as for :func:`tanh_backward`."""
    return run_unless_preparing(_elementwise_backward(
        _kernels.sigmoid_backward, grad_y, y, "y", out), n_threads)


@preparable
def leaky_relu(x, negative_slope=0.01, n_threads=None, out=None):
    """``x`` where ``x > 0``, ``negative_slope * x`` elsewhere, any shape;
    NaN stays NaN. ``negative_slope``: a finite number >= 0 (the backward
    pass tells the sign of x from y's). ``out`` as for :func:`tanh`."""
    slope = _negative_slope(negative_slope)
    return run_unless_preparing(_elementwise(
        _kernels.leaky_relu_forward, x, out, (slope,)), n_threads)


@preparable
def leaky_relu_backward(grad_y, y, negative_slope=0.01, n_threads=None, out=None):
    """Gradient through :func:`leaky_relu` from its output y: ``grad_y``
    where ``y > 0``, ``negative_slope * grad_y`` elsewhere. ``out`` as for
    :func:`tanh_backward`."""
    slope = _negative_slope(negative_slope)
    return run_unless_preparing(_elementwise_backward(
        _kernels.leaky_relu_backward, grad_y, y, "y", out, (slope,)), n_threads)


@preparable
def elu(x, alpha=1.0, n_threads=None, out=None):
    """``x`` where ``x > 0``, ``alpha * (exp(x) - 1)`` elsewhere (by expm1,
    exact near 0), any shape; NaN stays NaN. ``alpha``: a finite number
    > 0. ``out`` as for :func:`tanh`."""
    alpha = _alpha(alpha)
    return run_unless_preparing(_elementwise(
        _kernels.elu_forward, x, out, (alpha,)), n_threads)


@preparable
def elu_backward(grad_y, y, alpha=1.0, n_threads=None, out=None):
    """Gradient through :func:`elu` from its output y: ``grad_y`` where
    ``y > 0``, ``grad_y * (y + alpha)`` elsewhere. ``out`` as for
    :func:`tanh_backward`."""
    alpha = _alpha(alpha)
    return run_unless_preparing(_elementwise_backward(
        _kernels.elu_backward, grad_y, y, "y", out, (alpha,)), n_threads)


def _tanh_approximation(approximate):
    """PyTorch's names: 'none' (the erf form) or 'tanh'."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    return approximate == "tanh"


@preparable
def gelu(x, approximate="none", n_threads=None, out=None):
    """GELU, elementwise, any shape; NaN stays NaN, -inf gives 0.

    ``approximate='none'`` (PyTorch's default): the exact form
    ``x * Phi(x)``, Phi the standard normal distribution function
    ``(1 + erf(x / sqrt(2))) / 2``, computed as ``erfc(-x / sqrt(2)) / 2``
    for precision in the left tail. ``approximate='tanh'``: PyTorch's
    ``0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x**3)))``,
    computed as ``x * sigmoid(2 * sqrt(2 / pi) * (x + 0.044715 * x**3))``
    (the same function, without the cancellation of ``1 + tanh`` in the
    left tail); it differs from the exact form by up to about 5e-4.
    ``out`` as for :func:`tanh`."""
    tanh_form = _tanh_approximation(approximate)
    return run_unless_preparing(_elementwise(
        _kernels.gelu_forward, x, out, (tanh_form,)), n_threads)


@preparable
def gelu_backward(grad_y, x, approximate="none", n_threads=None, out=None):
    """Gradient through :func:`gelu` from its INPUT x: for
    ``approximate='none'`` ``grad_y * (Phi(x) + x * phi(x))``, phi the
    standard normal density; for 'tanh' the derivative of that form.
    ``out`` may be ``grad_y`` (or ``x``) itself; an ``out`` that overlaps
    them otherwise raises ValueError."""
    tanh_form = _tanh_approximation(approximate)
    return run_unless_preparing(_elementwise_backward(
        _kernels.gelu_backward, grad_y, x, "x", out, (tanh_form,)), n_threads)
