"""Batch normalization and local response normalization, and their
gradients: the functions over src/normalization.pyx.

Both take a batch of flat features ``(N, C)``, signals ``(N, C, L)`` or
images ``(N, C, H, W)`` (local response normalization needs the spatial
axes, as PyTorch's does); the kernels see it as ``(N, C, S)``, S the
spatial positions of a sample.
"""
import math

import numpy as np

from .._kernels import normalization as _kernels
from ._calls import KernelCall, preparable, run_unless_preparing
from ._checks import (FLOAT_DTYPES, check_apart, integer, output_array,
                      readable, real, same_dtype)

_LAYOUTS = {2: "(N, C)", 3: "(N, C, L)", 4: "(N, C, H, W)"}


def _batch(x, name, ndims):
    """``x`` as a C-contiguous float array of one of ``ndims`` dimensions."""
    a = np.asarray(x)
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a float32 or float64 array, got dtype {a.dtype}")
    if a.ndim not in ndims:
        layouts = " or ".join(_LAYOUTS[d] for d in ndims)
        raise ValueError(f"{name} must have the layout {layouts}, got shape {a.shape}")
    if 0 in a.shape:
        raise ValueError(f"{name} must not be empty, got shape {a.shape}")
    return readable(a)


def _as_3d(a):
    """(N, C, S): a view, the spatial axes flattened (1 for flat features)."""
    return a.reshape(a.shape[0], a.shape[1], -1)


def _channel_vector(a, name, x, default=None):
    """A (C,) array of x's dtype, read as it is; None is ``default``."""
    channels = x.shape[1]
    if a is None:
        if default is None:
            raise ValueError(f"{name} must be given, an array of shape ({channels},)")
        return np.full(channels, default, dtype=x.dtype)
    if not isinstance(a, np.ndarray):
        a = np.asarray(a)
    same_dtype("x", x, name, a)
    if a.shape != (channels,):
        raise ValueError(
            f"{name} must have shape ({channels},), one value per channel of x, "
            f"got {a.shape}")
    return readable(a)


def _running(a, name, x, training):
    """A running statistic: in training updated in place, never a copy; in
    inference only read, as any input."""
    if a is None:
        return None
    if not training:
        return _channel_vector(a, name, x)
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array (it is updated in place), "
                        f"got {type(a).__name__}")
    same_dtype("x", x, name, a)
    return output_array(a, (x.shape[1],), x.dtype, name)


def _check_eps(eps):
    if isinstance(eps, bool):
        raise TypeError(f"eps must be a real number, got {eps!r}")
    eps = real(eps, "eps", 0.0, math.inf, high_included=False)    # NaN too
    if eps == 0:
        raise ValueError("eps must be positive and finite, got 0.0")
    return eps


def _outputs(out, count, names):
    if out is None:
        return (None,) * count
    if not isinstance(out, (tuple, list)) or len(out) != count:
        raise TypeError(f"out must be a tuple of {count} arrays {names}, got {out!r:.80}")
    return tuple(out)


def _batch_norm_training(x, weight, bias, running_mean, running_var, momentum,
                         eps, relu, out):
    y, mean, invstd = _outputs(out, 3, "(y, mean, invstd)")
    channels = (x.shape[1],)
    y = output_array(y, x.shape, x.dtype, "out[0] (y)")
    mean = output_array(mean, channels, np.float64, "out[1] (mean)")
    invstd = output_array(invstd, channels, np.float64, "out[2] (invstd)")
    named = [("out[0] (y)", y), ("out[1] (mean)", mean), ("out[2] (invstd)", invstd)]
    if out is not None:
        check_apart(named, [("x", x), ("weight", weight), ("bias", bias),
                            ("running_mean", running_mean),
                            ("running_var", running_var)])
    update = running_mean is not None
    if update:     # written while x, weight and bias are read
        check_apart([("running_mean", running_mean), ("running_var", running_var)],
                    [("x", x), ("weight", weight), ("bias", bias)])
    else:          # the kernel writes them unread
        running_mean = running_var = np.empty(channels, dtype=x.dtype)
    scratch = np.empty((2,) + channels)
    return KernelCall(_kernels.batch_norm_forward_training,
                      (_as_3d(x), weight, bias, running_mean, running_var,
                       update, momentum, eps, relu, _as_3d(y), mean, invstd,
                       scratch[0], scratch[1]), (y, mean, invstd))


def _batch_norm_inference(x, weight, bias, running_mean, running_var, eps, relu,
                          out):
    if running_mean is None:
        raise ValueError("batch_norm needs running_mean and running_var in "
                         "inference (training=False)")
    y = output_array(out, x.shape, x.dtype)
    if out is not None:
        check_apart([("out", y)], [("x", x), ("weight", weight), ("bias", bias),
                                   ("running_mean", running_mean),
                                   ("running_var", running_var)])
    scratch = np.empty((3, x.shape[1]))
    return KernelCall(_kernels.batch_norm_forward_inference,
                      (_as_3d(x), weight, bias, running_mean, running_var, eps,
                       relu, _as_3d(y), scratch[0], scratch[1], scratch[2]), y)


@preparable
def batch_norm(x, weight=None, bias=None, running_mean=None, running_var=None,
               training=False, momentum=0.1, eps=1e-5, n_threads=None, out=None,
               relu=False):
    """Batch normalization per channel, as PyTorch's batch_norm.

    Parameters
    ----------
    x : array (N, C), (N, C, L) or (N, C, H, W), float32 or float64
    weight, bias : arrays of shape (C,) and x's dtype, or None (1 and 0)
        The learned scale and shift.
    running_mean, running_var : arrays of shape (C,) and x's dtype, or None
        Needed in inference, which normalises with them. In training they
        are updated in place (when given, both; arrays of their own, sharing
        no memory with x, weight, bias or each other):
        ``running = (1 - momentum) * running + momentum * batch_stat``, with
        the batch's unbiased variance. A channel with a single value in the
        batch (N = 1 on flat features) keeps its running_var: one value has
        no unbiased variance (PyTorch raises there instead).
    training : bool, default False
        Normalise with the batch's statistics (True) or the running ones.
    momentum : float in [0, 1], default 0.1
    eps : float > 0, default 1e-5
        Added to the variance.
    n_threads : int or None
    out : array y (inference), or tuple (y, mean, invstd) (training), optional
    relu : bool, default False
        Return ``relu(y)``, the same bits as :func:`relu` of y, in the same
        pass; its gradient is :func:`batch_norm_backward`'s
        ``relu_output``.

    Returns
    -------
    Inference: y, of x's shape.
    Training: (y, mean, invstd): ``y = (x - mean) * invstd * weight + bias``
    with the batch mean and ``invstd = 1 / sqrt(biased variance + eps)`` of
    each channel over the samples and positions, both float64 arrays (C,)
    (:func:`batch_norm_backward` takes them). A channel with a single value
    normalises to 0 (y = bias). The statistics are summed in float64 in a
    fixed order: the same bits for any number of threads.
    """
    x = _batch(x, "x", (2, 3, 4))
    weight = _channel_vector(weight, "weight", x, 1.0)
    bias = _channel_vector(bias, "bias", x, 0.0)
    running_mean = _running(running_mean, "running_mean", x, training)
    running_var = _running(running_var, "running_var", x, training)
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must be given together")
    momentum = real(momentum, "momentum", 0.0, 1.0)
    eps = _check_eps(eps)
    if training:
        call = _batch_norm_training(x, weight, bias, running_mean, running_var,
                                    momentum, eps, bool(relu), out)
    else:
        call = _batch_norm_inference(x, weight, bias, running_mean, running_var,
                                     eps, bool(relu), out)
    return run_unless_preparing(call, n_threads)


def _saved_statistic(a, name, channels):
    a = np.asarray(a)
    if a.dtype != np.float64 or a.shape != (channels,):
        raise ValueError(
            f"{name} must be a float64 array of shape ({channels},) as "
            f"batch_norm returns it, got {a.dtype} {a.shape}")
    return readable(a)


@preparable
def batch_norm_backward(grad_y, x, weight, mean, invstd, n_threads=None,
                        out=None, grad_input=True, relu_output=None):
    """Gradients of :func:`batch_norm` in training (batch statistics).

    Parameters
    ----------
    grad_y, x : arrays of the same shape (N, C), (N, C, L) or (N, C, H, W)
    weight : array (C,) of x's dtype, or None (1)
    mean, invstd : float64 arrays (C,)
        As batch_norm returned them for this x.
    n_threads : int or None
    out : tuple (grad_x, grad_weight, grad_bias), optional
        grad_x may be None when grad_input is False.
    grad_input : bool, default True
        Whether to compute grad_x (not for a network's first layer).
    relu_output : array of x's shape, optional
        The y of ``batch_norm(..., relu=True)``: grad_y counts only where it
        is positive, the gradient of the fused ReLU as well (the same bits
        as :func:`relu_backward` followed by this function).

    Returns
    -------
    (grad_x, grad_weight, grad_bias)
        ``grad_bias = sum(grad_y)``, ``grad_weight = sum(grad_y * x_hat)``
        over samples and positions, ``x_hat = (x - mean) * invstd``, and
        ``grad_x = weight * invstd * (grad_y - mean(grad_y) - x_hat *
        mean(grad_y * x_hat))`` (None without grad_input).
    """
    grad_y = _batch(grad_y, "grad_y", (2, 3, 4))
    x = _batch(x, "x", (2, 3, 4))
    same_dtype("grad_y", grad_y, "x", x)
    if grad_y.shape != x.shape:
        raise ValueError(f"grad_y {grad_y.shape} and x {x.shape} must have the same shape")
    weight = _channel_vector(weight, "weight", x, 1.0)
    if relu_output is not None:
        relu_output = _batch(relu_output, "relu_output", (2, 3, 4))
        same_dtype("x", x, "relu_output", relu_output)
        if relu_output.shape != x.shape:
            raise ValueError(f"relu_output must have x's shape {x.shape}, got "
                             f"{relu_output.shape}")
    mean = _saved_statistic(mean, "mean", x.shape[1])
    invstd = _saved_statistic(invstd, "invstd", x.shape[1])
    grad_x, grad_weight, grad_bias = _outputs(out, 3, "(grad_x, grad_weight, grad_bias)")
    grad_x = output_array(grad_x, x.shape, x.dtype, "out[0] (grad_x)") if grad_input else None
    grad_weight = output_array(grad_weight, (x.shape[1],), x.dtype, "out[1] (grad_weight)")
    grad_bias = output_array(grad_bias, (x.shape[1],), x.dtype, "out[2] (grad_bias)")
    if out is not None:
        check_apart([(n, a) for n, a in (("out[0] (grad_x)", grad_x),
                                         ("out[1] (grad_weight)", grad_weight),
                                         ("out[2] (grad_bias)", grad_bias)) if a is not None],
                    [("grad_y", grad_y), ("x", x), ("weight", weight),
                     ("mean", mean), ("invstd", invstd), ("relu_output", relu_output)])
    scratch = np.empty((3, x.shape[1]))
    return run_unless_preparing(KernelCall(
        _kernels.batch_norm_backward,
        (_as_3d(grad_y), _as_3d(x), weight, mean, invstd,
         None if grad_x is None else _as_3d(grad_x), grad_weight, grad_bias,
         None if relu_output is None else _as_3d(relu_output),
         scratch[0], scratch[1], scratch[2]),
        (grad_x, grad_weight, grad_bias)), n_threads)


def _lrn_parameters(size, alpha, beta):
    size = integer(size, "size", 1)
    alpha = real(alpha, "alpha", 0.0)
    beta = real(beta, "beta", -math.inf)
    if not (math.isfinite(alpha) and math.isfinite(beta)):
        raise ValueError(f"alpha and beta must be finite, got {alpha} and {beta}")
    return size, alpha, beta


@preparable
def local_response_norm(x, size, alpha=1e-4, beta=0.75, k=1.0, n_threads=None,
                        out=None, keep_scale=True):
    """Local response normalization across channels, as PyTorch's
    local_response_norm.

    ``scale[n, c] = k + alpha / size * sum(x[n, c']^2)`` over the channels
    ``c'`` from ``c - size // 2`` to ``c + (size - 1) // 2`` (those outside
    the input count as zeros), and ``y = x * scale^-beta``, at every
    position.

    Parameters
    ----------
    x : array (N, C, L) or (N, C, H, W), float32 or float64
    size : int >= 1
        Channels in each window.
    alpha : float >= 0, default 1e-4
    beta : float, default 0.75
    k : float > 0, default 1.0
        With alpha >= 0 it keeps scale positive.
    n_threads : int or None
    out : tuple (y, scale), optional
        scale may be None when keep_scale is False.
    keep_scale : bool, default True
        Whether to return scale, which only the backward pass needs (y is
        the same bits either way).

    Returns
    -------
    (y, scale) : arrays of x's shape (scale None without keep_scale);
        :func:`local_response_norm_backward` takes both.
    """
    x = _batch(x, "x", (3, 4))
    size, alpha, beta = _lrn_parameters(size, alpha, beta)
    k = real(k, "k", 0.0, math.inf, high_included=False)
    if k == 0:
        raise ValueError("k must be positive, got 0.0")
    y, scale = _outputs(out, 2, "(y, scale)")
    y = output_array(y, x.shape, x.dtype, "out[0] (y)")
    scale = output_array(scale, x.shape, x.dtype, "out[1] (scale)") if keep_scale else None
    if out is not None:
        check_apart([(name, a) for name, a in (("out[0] (y)", y), ("out[1] (scale)", scale))
                     if a is not None], [("x", x)])
    return run_unless_preparing(KernelCall(
        _kernels.local_response_norm_forward,
        (_as_3d(x), _as_3d(y), None if scale is None else _as_3d(scale),
         size, alpha, beta, k),
        (y, scale)), n_threads)


@preparable
def local_response_norm_backward(grad_y, x, y, scale, size, alpha=1e-4,
                                 beta=0.75, n_threads=None, out=None):
    """Gradient of :func:`local_response_norm` with respect to x.

    Parameters
    ----------
    grad_y, x : arrays of the same shape (N, C, L) or (N, C, H, W)
    y, scale : arrays of x's shape, as local_response_norm returned them
    size, alpha, beta
        As given to local_response_norm (k is in scale).
    n_threads : int or None
    out : array of x's shape, optional

    Returns
    -------
    grad_x : ``grad_y * scale^-beta - 2 alpha beta / size * x * S``, where
        S at channel j sums ``grad_y * y / scale`` over the channels whose
        windows hold j.
    """
    grad_y = _batch(grad_y, "grad_y", (3, 4))
    arrays = {"x": x, "y": y, "scale": scale}
    for name, a in arrays.items():
        arrays[name] = a = _batch(a, name, (3, 4))
        same_dtype("grad_y", grad_y, name, a)
        if a.shape != grad_y.shape:
            raise ValueError(f"{name} must have grad_y's shape {grad_y.shape}, got {a.shape}")
    size, alpha, beta = _lrn_parameters(size, alpha, beta)
    grad_x = output_array(out, grad_y.shape, grad_y.dtype)
    if out is not None:
        check_apart([("out", grad_x)], [("grad_y", grad_y)] + list(arrays.items()))
    return run_unless_preparing(KernelCall(
        _kernels.local_response_norm_backward,
        (_as_3d(grad_y), _as_3d(arrays["x"]), _as_3d(arrays["y"]),
         _as_3d(arrays["scale"]), size, alpha, beta, _as_3d(grad_x)),
        grad_x), n_threads)
