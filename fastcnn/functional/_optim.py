"""One optimizer step, SGD or Adam, in place: the functions over
src/optim.pyx."""
import math

import numpy as np

from .._kernels import optim as _kernels
from .._threads import effective_n_threads
from ._checks import FLOAT_DTYPES, check_apart, integer, readable, real


def _check_update(params, grads, **state):
    """params and the optimizer state updated in place with it (``state``,
    by name) checked: writeable, 1-D, C-contiguous, aligned, of one float
    dtype, apart from each other and from grads. grads, only read, is
    returned as the kernel reads it (a copy if need be)."""
    if not isinstance(params, np.ndarray) or params.ndim != 1 or not (
            params.flags.c_contiguous and params.flags.writeable
            and params.flags.aligned):
        raise ValueError("params must be a writeable, aligned, 1-D contiguous array")
    if params.dtype not in FLOAT_DTYPES:
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
    grads = readable(grads)
    check_apart([("params", params)] + list(state.items()), [("grads", grads)])
    return grads


def _check_n_penalized(n_penalized, size):
    if n_penalized is None:
        return size
    n_penalized = integer(n_penalized, "n_penalized", 0, maximum=math.inf)
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
    learning_rate = real(learning_rate, "learning_rate", 0)
    momentum = real(momentum, "momentum", 0)
    l2 = real(l2, "l2", 0)
    n_threads = effective_n_threads(n_threads)
    if params.size == 0:
        return   # nothing to update (the kernels index element 0)
    _kernels.sgd_step(params, grads, velocity, learning_rate, momentum,
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
    step = integer(step, "step", 1, maximum=math.inf)
    n_penalized = _check_n_penalized(n_penalized, params.size)
    learning_rate = real(learning_rate, "learning_rate", 0)
    beta_1 = real(beta_1, "beta_1", 0, 1, high_included=False)
    beta_2 = real(beta_2, "beta_2", 0, 1, high_included=False)
    epsilon = real(epsilon, "epsilon", 0)
    l2 = real(l2, "l2", 0)
    step_size = (learning_rate * math.sqrt(1 - beta_2 ** step)
                 / (1 - beta_1 ** step))
    n_threads = effective_n_threads(n_threads)
    if params.size == 0:
        return   # nothing to update (the kernels index element 0)
    _kernels.adam_step(params, grads, first_moment, second_moment, step_size,
                     beta_1, beta_2, epsilon, l2, n_penalized,
                     n_threads)


