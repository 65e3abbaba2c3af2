"""Kernel calls, run at once or prepared to run again.

A function of fastcnn.functional validates its arguments into a
:class:`KernelCall` and ends with ``return run_unless_preparing(call,
n_threads)``. A plain call runs it. :func:`prepare` calls the same function
with ``n_threads=PREPARING`` and keeps the call it gets back, so that a
prepared call is validated by exactly the code, parameters and defaults of
the function itself. The functions prepare takes are marked
``@preparable``.
"""
import inspect

import numpy as np

from .._threads import effective_n_threads
from ._checks import FLOAT_DTYPES


class KernelCall:
    """One kernel call, validated: the kernel, its arguments but the number
    of threads (always its last), what the public function returns, and
    optionally a step run before the kernel (``before``, called with the
    number of threads) and a check of what it returns (``check``). ``run``
    makes the call; see prepare(), which also sets ``shapes``: the arrays
    whose shapes the validation saw, with those shapes."""
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
            self.before(n_threads)
        value = self.kernel(*self.args, n_threads)
        if self.check is not None:
            self.check(value)
        return self.result


#: The n_threads with which prepare() calls a function: it then returns its
#: validated KernelCall instead of running it.
PREPARING = object()


def run_unless_preparing(call, n_threads):
    """What a function of the API returns: the result of ``call`` run on
    ``n_threads``, or, when prepare() is calling, the call itself."""
    if n_threads is PREPARING:
        return call
    return call.run(effective_n_threads(n_threads))


#: The functions prepare() takes, each with its parameter names in order.
PREPARABLE = {}


def preparable(function):
    """Let prepare() take ``function``, which must pass its n_threads to
    run_unless_preparing and nothing else."""
    PREPARABLE[function] = tuple(inspect.signature(function).parameters)
    return function


_AS_THE_KERNELS_READ = FLOAT_DTYPES + (np.dtype(np.int32),)
# the parameters of those functions that take arrays (out: one or a pair)
_ARRAY_PARAMETERS = ("x", "w", "bias", "grad_y", "y", "argmax", "relu_output", "out",
                     "uniforms")
# the normalization functions' (running statistics are updated in place)
_ARRAY_PARAMETERS += ("weight", "running_mean", "running_var", "mean", "invstd", "scale")


def _refuse_copied(name, a):
    """A ValueError unless ``a`` is an array the kernel reads as it is: any
    other would be copied during validation, and later runs would compute
    on the stale copy."""
    if not (type(a) is np.ndarray and a.dtype in _AS_THE_KERNELS_READ
            and a.flags.c_contiguous and a.flags.aligned):
        raise ValueError(
            f"prepare needs {name} as the kernel reads it (a C-contiguous, "
            "aligned NumPy array, float32 or float64, int32 indices), "
            "not a copy of it; got "
            f"{type(a).__name__} {getattr(a, 'dtype', '')} "
            f"{getattr(a, 'shape', '')}")


def _prepared_arrays(parameter_names, args, kwargs):
    """The arrays of a call to prepare, each checked by _refuse_copied."""
    # by name as the function would bind them (the function refuses the rest)
    named = list(zip(parameter_names, args)) + list(kwargs.items())
    if any(name == "n_threads" for name, _ in named):
        raise TypeError("prepare takes n_threads when the call runs, not here")
    arrays = []
    for name, value in named:
        if name not in _ARRAY_PARAMETERS or value is None:
            continue
        pair = name == "out" and isinstance(value, tuple)
        for i, a in enumerate(value if pair else (value,)):
            if a is not None:
                _refuse_copied(f"{name}[{i}]" if pair else name, a)
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
        relu_backward, dropout, dropout_backward; l2_pool2d/1d,
        global_avg_pool2d/1d, global_max_pool2d/1d, tanh, sigmoid,
        leaky_relu, elu, gelu, batch_norm, local_response_norm and their
        _backward
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
    parameter_names = PREPARABLE.get(function)
    if parameter_names is None:
        raise ValueError(f"prepare does not take {function!r}")
    arrays = _prepared_arrays(parameter_names, args, kwargs)
    call = function(*args, **kwargs, n_threads=PREPARING)
    # the caller's arrays and the results it gets back, each once: their
    # shapes can change in place, their memory cannot
    results = call.result if isinstance(call.result, tuple) else (call.result,)
    watched = {id(a): a for a in arrays + list(results) if a is not None}
    call.shapes = tuple((a, a.shape) for a in watched.values())
    return call
